"""``phc motions info FILE``: what a motion file contains (per motion and in total)."""

from __future__ import annotations

from typing import Dict, List, Optional, Union

from rich.console import Console
from rich.table import Table

from phc_lightning.motion.formats import PathLike, load_motion_file


def motion_info(path: PathLike) -> List[Dict[str, Union[str, int, float]]]:
    """Summary of every motion in a ``.npz`` / ``.pkl`` file.

    Returns:
        One dict per motion in file order: ``key`` (str), ``frames`` (int), ``fps`` (float) and ``duration``
        (float seconds, ``(frames - 1) / fps``, the same length the motion library uses).

    Raises:
        MotionFileError: the file is missing or invalid.
    """
    return [
        {"key": m.key, "frames": m.num_frames, "fps": m.fps, "duration": (m.num_frames - 1) / m.fps}
        for m in load_motion_file(path)
    ]


def print_motion_info(path: PathLike, max_rows: int = 200, console: Optional[Console] = None) -> None:
    """Print a table of the motions in ``path`` (at most ``max_rows`` rows) and a total row.

    Raises:
        MotionFileError: the file is missing or invalid.
    """
    rows = motion_info(path)
    table = Table(title=f"{path}", show_footer=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("motion")
    table.add_column("frames", justify="right")
    table.add_column("fps", justify="right")
    table.add_column("duration (s)", justify="right")
    for i, row in enumerate(rows[:max_rows]):
        table.add_row(str(i), str(row["key"]), str(row["frames"]), f"{row['fps']:g}", f"{row['duration']:.2f}")
    if len(rows) > max_rows:
        table.add_row("…", f"({len(rows) - max_rows} more motions)", "", "", "")
    frames = sum(int(r["frames"]) for r in rows)
    seconds = sum(float(r["duration"]) for r in rows)
    table.add_section()
    table.add_row("", f"total: {len(rows)} motion{'s' if len(rows) != 1 else ''}", str(frames), "",
                  f"{seconds:.2f}", style="bold")  # fmt: skip
    (console or Console()).print(table)
