"""``phc motions preview FILE --out x.gif``: the humanoid posed on the reference motions, rendered offscreen.

The poses are what training tracks: the motion library's state (heights fixed, hinge angles from the global
rotations) sampled at the video's frame rate, written into ``qpos`` (free joint + 69 hinges).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from phc_lightning.deploy.scene import HumanoidFilm, check_video_path, write_video
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.motion.raw_motion import MotionFileError, PathLike
from phc_lightning.sim.base import SimState

DEFAULT_MAX_MOTIONS = 8
"""Motions rendered when none are named (the first ones of the file)."""


def state_to_qpos(state: SimState) -> np.ndarray:
    """``[N, 76]`` float64 MuJoCo ``qpos`` (root position, root quaternion **wxyz**, 69 hinges) of a state."""
    rot = state.body_rot[:, 0].to(torch.float64)
    parts = [state.body_pos[:, 0].to(torch.float64), rot[:, 3:4], rot[:, :3], state.dof_pos.to(torch.float64)]
    return torch.cat(parts, dim=1).cpu().numpy()


def select_motions(lib: MotionLibrary, keys: Optional[Sequence[str]], source: PathLike) -> List[int]:
    """Motion ids of ``keys`` (in that order), or the first :data:`DEFAULT_MAX_MOTIONS` when ``keys`` is empty.

    Raises:
        MotionFileError: a key that is not in the file (the message lists a few that are).
    """
    if not keys:
        return list(range(min(lib.num_motions, DEFAULT_MAX_MOTIONS)))
    index = {key: i for i, key in enumerate(lib.keys)}
    missing = [key for key in keys if key not in index]
    if missing:
        known = ", ".join(lib.keys[:8]) + (", ..." if lib.num_motions > 8 else "")
        raise MotionFileError(f"{source}: no motion named {missing[0]!r} (motions: {known})")
    return [index[key] for key in keys]


def reference_qpos(lib: MotionLibrary, motion_id: int, fps: float) -> np.ndarray:
    """``[F, 76]`` qpos of one motion sampled every ``1 / fps`` seconds from t = 0 to its end."""
    length = float(lib.lengths[motion_id])
    times = torch.arange(0.0, length + 1e-6, 1.0 / fps, dtype=torch.float32)
    ids = torch.full_like(times, motion_id, dtype=torch.long)
    return state_to_qpos(lib.get_state(ids, times))


def preview_motions(
    motion_file: PathLike,
    out: PathLike,
    keys: Optional[Sequence[str]] = None,
    fps: float = 30.0,
    width: int = 480,
    height: int = 360,
) -> int:
    """Render the chosen motions one after another into a GIF or MP4; returns the number of frames written.

    Raises:
        MotionFileError: the motion file is invalid or a key is unknown.
        ConfigError: bad output suffix or size, or no headless OpenGL.
    """
    out_path = check_video_path(str(out))
    if not fps > 0:
        raise MotionFileError(f"{out_path}: --fps must be > 0, got {fps}")
    every_motion = MotionLibrary(str(motion_file), index_only=True)  # an AMASS file: only the chosen motions built
    lib = every_motion.subset(select_motions(every_motion, keys, motion_file))
    ids = range(lib.num_motions)
    film = HumanoidFilm(width, height)
    try:
        frames = [film.frame(q) for i in ids for q in reference_qpos(lib, i, fps)]
    finally:
        film.close()
    return write_video(Path(out_path), frames, fps)
