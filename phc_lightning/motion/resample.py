"""Resample a motion to another frame rate by interpolation: slerp for rotations, linear for positions.

Mocap arrives at 60, 100, 120 or 59.94 fps; the task runs at 30 Hz. Dropping every k-th frame only works for
integer ratios and shifts the timing of all others, so the new frames are placed at exactly ``k / target_fps``
seconds (``k = 0, 1, ...`` up to the motion's duration) and interpolated between the two source frames around
each time. A motion keeps its duration up to less than one target frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from phc_lightning.core.rotations import slerp
from phc_lightning.motion.raw_motion import RawMotion

# Source times within this many frames of a source frame are taken as that frame (float noise of k * ratio).
_FRAME_SNAP = 1e-9


def resample_times(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """Times ``[T']`` (seconds, float64) of the target frames that fit in a motion of ``num_frames`` at ``fps``.

    ``T' = floor((num_frames - 1) / fps * target_fps) + 1``: the target frames cover the motion from its first
    frame up to its last, never beyond it.
    """
    if num_frames < 1 or not (fps > 0 and target_fps > 0):
        raise ValueError(f"resample_times: need num_frames >= 1 and positive rates, got {num_frames}, {fps}, "
                         f"{target_fps}")
    duration = (num_frames - 1) / float(fps)
    count = int(math.floor(duration * target_fps + 1e-6)) + 1
    return np.arange(count, dtype=np.float64) / float(target_fps)


def resample_motion(motion: RawMotion, target_fps: float) -> RawMotion:
    """``motion`` at ``target_fps``: positions interpolated linearly, rotations slerped, on exact frame times.

    Args:
        motion: source motion (``root_pos [T, 3]``, ``global_rot [T, 24, 4]`` xyzw unit quaternions).
        target_fps: the new frame rate (> 0).

    Returns:
        A new :class:`RawMotion` with ``T'`` frames (see :func:`resample_times`) and ``fps = target_fps``; the same
        motion object when the rates already agree. Interpolated quaternions are unit length.
    """
    if not target_fps > 0:
        raise ValueError(f"resample_motion: target_fps must be > 0, got {target_fps}")
    if abs(float(motion.fps) - float(target_fps)) < 1e-9:
        return motion
    num_frames = motion.num_frames
    # Everything in float64: k * fps / target_fps must land on source frames exactly where the rates divide.
    phase = resample_times(num_frames, motion.fps, target_fps) * float(motion.fps)
    i0 = np.minimum(np.floor(phase + _FRAME_SNAP).astype(np.int64), num_frames - 1)
    i1 = np.minimum(i0 + 1, num_frames - 1)
    blend = np.clip(phase - i0, 0.0, 1.0)
    blend[i0 == i1] = 0.0
    pos = motion.root_pos.astype(np.float64)
    root_pos = pos[i0] + (pos[i1] - pos[i0]) * blend[:, None]
    rot = torch.from_numpy(motion.global_rot.astype(np.float64))
    w = torch.from_numpy(blend)[:, None].expand(-1, rot.shape[1])
    global_rot = slerp(rot[torch.from_numpy(i0)], rot[torch.from_numpy(i1)], w).numpy()
    return RawMotion(
        key=motion.key,
        fps=float(target_fps),
        root_pos=root_pos.astype(np.float32),
        global_rot=global_rot.astype(np.float32),
    )
