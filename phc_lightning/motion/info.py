"""``phc motions info FILE``: what a motion file contains (per motion and in total)."""

from __future__ import annotations

from typing import Dict, List, Optional, Union

from rich.console import Console
from rich.table import Table

from phc_lightning.motion import fk
from phc_lightning.motion.formats import load_motion_file
from phc_lightning.motion.library import DEFAULT_VELOCITY_SMOOTHING, MotionLibrary
from phc_lightning.motion.raw_motion import PathLike
from phc_lightning.motion.summary import summary_lines

# Middle-hinge angle beyond which a joint counts as near the x-y-z Euler singularity (90 degrees).
NEAR_SINGULAR_DEG = 80.0


def motion_info(path: PathLike, hinge_speeds: bool = False) -> List[Dict[str, Union[str, int, float]]]:
    """Summary of every motion in a ``.npz`` / ``.pkl`` file.

    Args:
        path: the motion file.
        hinge_speeds: also run the motion library's FK and velocities for the two hinge columns below.

    Returns:
        One dict per motion in file order: ``key`` (str), ``frames`` (int), ``fps`` (float) and ``duration``
        (float seconds, ``(frames - 1) / fps``, the same length the motion library uses); with ``hinge_speeds``
        also ``max_dof_vel`` (float rad/s, the largest reference hinge speed with the library's default smoothing
        and without its clamp) and ``near_singular_frames`` (int, frames where some joint's middle hinge is beyond
        :data:`NEAR_SINGULAR_DEG` degrees, where hinge speeds are ill-conditioned).

    Raises:
        MotionFileError: the file is missing or invalid.
    """
    motions = load_motion_file(path)
    rows: List[Dict[str, Union[str, int, float]]] = [
        {"key": m.key, "frames": m.num_frames, "fps": m.fps, "duration": (m.num_frames - 1) / m.fps} for m in motions
    ]
    if hinge_speeds:
        lib = MotionLibrary(motions, fix_height=False, velocity_smoothing=DEFAULT_VELOCITY_SMOOTHING, max_dof_vel=None)
        singular = fk.near_singular_hinges(lib.dof_pos, NEAR_SINGULAR_DEG).any(dim=-1)
        for row, start, n in zip(rows, lib.frame_start.tolist(), lib.num_frames.tolist()):
            row["max_dof_vel"] = float(lib.dof_vel[start : start + n].abs().max())
            row["near_singular_frames"] = int(singular[start : start + n].sum())
    return rows


def print_motion_info(path: PathLike, max_rows: int = 200, console: Optional[Console] = None) -> None:
    """Print a table of the motions in ``path`` (at most ``max_rows`` rows) and a total row.

    Raises:
        MotionFileError: the file is missing or invalid.
    """
    rows = motion_info(path, hinge_speeds=True)
    table = Table(
        title=f"{path}",
        show_footer=False,
        caption=f"dof vel: largest reference hinge speed, rad/s (smoothed, not clamped); "
        f">{NEAR_SINGULAR_DEG:g}°: frames with a middle (y) hinge beyond {NEAR_SINGULAR_DEG:g}°, where hinge "
        "speeds blow up",
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("motion", overflow="fold")
    table.add_column("frames", justify="right")
    table.add_column("fps", justify="right")
    table.add_column("duration (s)", justify="right")
    table.add_column("dof vel", justify="right", no_wrap=True)
    table.add_column(f">{NEAR_SINGULAR_DEG:g}°", justify="right", no_wrap=True)
    for i, row in enumerate(rows[:max_rows]):
        table.add_row(str(i), str(row["key"]), str(row["frames"]), f"{row['fps']:g}", f"{row['duration']:.2f}",
                      f"{row['max_dof_vel']:.1f}", str(row["near_singular_frames"]))  # fmt: skip
    if len(rows) > max_rows:
        table.add_row("…", f"({len(rows) - max_rows} more motions)", "", "", "", "", "")
    frames = sum(int(r["frames"]) for r in rows)
    seconds = sum(float(r["duration"]) for r in rows)
    top_speed = max(float(r["max_dof_vel"]) for r in rows)
    singular = sum(int(r["near_singular_frames"]) for r in rows)
    table.add_section()
    table.add_row("", f"total: {len(rows)} motion{'s' if len(rows) != 1 else ''}", str(frames), "",
                  f"{seconds:.2f}", f"{top_speed:.1f}", str(singular), style="bold")  # fmt: skip
    console = console or Console()
    console.print(table)
    for line in summary_lines(rows):
        console.print(line, markup=False, highlight=False)
