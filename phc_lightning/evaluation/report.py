"""The evaluation report picture ``<tag>_report.png``, written beside ``<tag>_motions.csv`` / ``_summary.json``.

Three panels from the per-motion rows of an evaluation:

1. the worst motions by global MPJPE as horizontal bars, red where the motion failed (all motions when few);
2. a histogram of per-motion MPJPE over all motions, successful and failed stacked;
3. how far each failed motion got (frames played / frames), or, when per-frame errors are given, the error over
   time of the worst motions.

matplotlib draws through its Agg canvas directly (no pyplot, no global backend switch), so it is safe in
training processes and headless machines.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

MAX_BARS = 30
"""Motions shown in the bar chart (the worst by mpjpe_g)."""
MAX_CURVES = 5
"""Worst motions whose error over time is drawn when per-frame errors are available."""


def write_eval_report(
    path: str,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, float],
    title: str = "",
    keys: Optional[Sequence[str]] = None,
    frame_errors: Optional[Mapping[int, Sequence[float]]] = None,
) -> str:
    """Draw the report PNG and return its path.

    Args:
        path: output ``.png``.
        rows: per-motion rows with ``motion_id``, ``success`` and ``mpjpe_g`` (mm); ``steps_played`` or
            ``frames_played`` and ``frames`` when known.
        summary: the evaluation summary (``success_rate``, ``mpjpe_g`` ... ; NaNs allowed).
        title: heading, e.g. the tag and epoch.
        keys: motion names by motion id (default: ``motion <id>``).
        frame_errors: optional ``{motion_id: per-frame mpjpe_g in mm}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def name(mid: int) -> str:
        return str(keys[mid]) if keys is not None and 0 <= mid < len(keys) else f"motion {mid}"

    ids = [int(r["motion_id"]) for r in rows]
    errors = np.array([_finite(r.get("mpjpe_g")) for r in rows], dtype=np.float64)
    success = np.array([bool(r.get("success")) for r in rows])
    order = sorted(range(len(rows)), key=lambda i: (-errors[i] if math.isfinite(errors[i]) else -math.inf))
    worst = order[:MAX_BARS]

    fig = Figure(figsize=(13, max(4.0, 0.22 * len(worst) + 1.5)), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    bars = axes[0]
    y = np.arange(len(worst))[::-1]
    bars.barh(y, np.nan_to_num(errors[worst]), color=["tab:green" if success[i] else "tab:red" for i in worst])
    bars.set_yticks(y)
    bars.set_yticklabels([name(ids[i]) for i in worst], fontsize=7)
    bars.set_xlabel("mpjpe_g (mm)")
    bars.set_title(f"worst {len(worst)} of {len(rows)} motions (red: failed)", fontsize=9)

    hist = axes[1]
    finite = np.isfinite(errors)
    if finite.any():
        bins = np.linspace(0.0, float(errors[finite].max()) * 1.05 + 1e-6, 21)
        hist.hist([errors[finite & success], errors[finite & ~success]], bins=bins, stacked=True,
                  color=["tab:green", "tab:red"], label=["succeeded", "failed"])  # fmt: skip
        hist.legend(fontsize=8)
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set_xlabel("mpjpe_g (mm)")
    hist.set_ylabel("motions")
    hist.set_title("per-motion error", fontsize=9)

    third = axes[2]
    if frame_errors:
        for i in [i for i in order if ids[i] in frame_errors][:MAX_CURVES]:
            curve = np.asarray(frame_errors[ids[i]], dtype=np.float64)
            third.plot(np.arange(len(curve)), curve, label=name(ids[i]), linewidth=1)
        third.set_xlabel("frame")
        third.set_ylabel("mpjpe_g (mm)")
        third.set_title("error over time, worst motions", fontsize=9)
        third.legend(fontsize=7)
    else:
        _progress_panel(third, rows, success, name)

    rate = summary.get("success_rate", float("nan"))
    mpjpe = summary.get("mpjpe_g", float("nan"))
    fig.suptitle(f"{title}  success {_pct(rate)}  mpjpe_g {mpjpe:.1f} mm  "
                 f"mpjpe_l {summary.get('mpjpe_l', float('nan')):.1f} mm", fontsize=11)  # fmt: skip
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return str(out)


def _progress_panel(ax: Any, rows: Sequence[Mapping[str, Any]], success: np.ndarray, name: Any) -> None:
    """Fraction of each failed motion played before it failed (needs ``frames``); else success counts."""
    failed = [r for r, ok in zip(rows, success) if not ok and r.get("frames")]
    if failed:
        failed = sorted(failed, key=lambda r: _played(r) / float(r["frames"]))[:MAX_BARS]
        frac = [min(_played(r) / float(r["frames"]), 1.0) for r in failed]
        y = np.arange(len(failed))[::-1]
        ax.barh(y, frac, color="tab:red")
        ax.set_yticks(y)
        ax.set_yticklabels([name(int(r["motion_id"])) for r in failed], fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction played before failing")
        ax.set_title(f"failed motions ({int((~success).sum())})", fontsize=9)
        return
    ax.bar(["succeeded", "failed"], [int(success.sum()), int((~success).sum())], color=["tab:green", "tab:red"])
    ax.set_title("motions", fontsize=9)


def _played(row: Mapping[str, Any]) -> float:
    if "frames_played" in row:
        return float(row["frames_played"])
    return float(row.get("steps_played", 0)) + 1.0  # the reset frame, then one per control step


def _finite(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.1f}%"


def write_run_report(out_dir: str, tag: str, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, float],
                     motions: Any) -> str:  # fmt: skip
    """``<out_dir>/<tag>_report.png`` for an evaluation of ``motions`` (a MotionLibrary: ``keys``, ``num_frames``).

    Returns:
        The PNG's path.
    """
    num_frames = [int(n) for n in motions.num_frames.tolist()]
    full: List[Dict[str, Any]] = [{**r, "frames": num_frames[int(r["motion_id"])]} for r in rows]
    return write_eval_report(os.path.join(out_dir, f"{tag}_report.png"), full, summary, tag, list(motions.keys))
