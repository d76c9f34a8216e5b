"""The totals under ``phc motions info``: motion count, total duration, frame rates and a length histogram."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Mapping, Sequence, Tuple, Union

# Upper edges (seconds) of the length histogram's bins; the last bin is open.
LENGTH_BINS: Tuple[float, ...] = (2.0, 5.0, 10.0, 30.0, 60.0)
_BAR_WIDTH = 30


def length_histogram(durations: Sequence[float], edges: Sequence[float] = LENGTH_BINS) -> List[Tuple[str, int]]:
    """``(label, count)`` per duration bin, e.g. ``("2-5 s", 3)``; bins are ``[lo, hi)`` seconds."""
    labels = [f"< {edges[0]:g} s"] + [f"{lo:g}-{hi:g} s" for lo, hi in zip(edges[:-1], edges[1:])]
    labels.append(f">= {edges[-1]:g} s")
    counts = [0] * len(labels)
    for d in durations:
        counts[sum(1 for e in edges if d >= e)] += 1
    return list(zip(labels, counts))


def summary_lines(rows: Sequence[Mapping[str, Union[str, int, float]]]) -> List[str]:
    """Text lines: count and total duration, frames per second (how many motions at each), length histogram.

    Args:
        rows: :func:`~phc_lightning.motion.info.motion_info` rows (``frames``, ``fps``, ``duration``).
    """
    durations = [float(r["duration"]) for r in rows]
    total = sum(durations)
    lines = [f"{len(rows)} motion{'s' if len(rows) != 1 else ''}, {sum(int(r['frames']) for r in rows)} frames, "
             f"{total:.1f} s ({total / 3600:.2f} h) in total"]  # fmt: skip
    rates: Dict[float, int] = Counter(round(float(r["fps"]), 3) for r in rows)
    lines.append("fps: " + ", ".join(f"{fps:g} ({n} motion{'s' if n != 1 else ''})"
                                     for fps, n in sorted(rates.items())))  # fmt: skip
    hist = length_histogram(durations)
    top = max(n for _, n in hist) or 1
    lines.append("length histogram:")
    for label, n in hist:
        lines.append(f"  {label:>9} {n:6d} {'#' * max(int(round(_BAR_WIDTH * n / top)), 1 if n else 0)}")
    return lines
