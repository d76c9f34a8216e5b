"""Motion sets of any size made from the bundled clips, for scale benchmarks and tests (generated, never mocap).

Each motion is a chain of bundled clips, each played at a random speed (a time warp of 0.8-1.25x, resampled at
30 fps: positions interpolated linearly, rotations by normalized lerp) and turned about the vertical so that it
starts where and facing where the previous one ended; the first is turned to a random heading. The pose jumps
where two clips meet (the clips start and end in different poses), which a memory or speed benchmark does not
mind; these are not motions to learn from.

Lengths follow AMASS's shape: :func:`lognormal_lengths` draws a log-normal around a median of 10 s clipped to
1-60 s, scaled up until the set lasts the asked-for hours (AMASS's training split: ~11,000 motions, ~40 h).
Everything is drawn from one seeded generator, so a seed always gives the same motions.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Sequence, Tuple

import numpy as np

from phc_lightning.core import skeleton
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.formats import load_motion_file, write_motion_arrays
from phc_lightning.motion.raw_motion import PathLike, RawMotion

FPS = 30.0
SPEEDS = (0.8, 1.25)
"""Range of the time warp of each clip (playback speed)."""


def lognormal_lengths(num_motions: int, hours: float = 40.0, median_seconds: float = 10.0, sigma: float = 0.8,
                      bounds: Tuple[float, float] = (1.0, 60.0), seed: int = 0) -> np.ndarray:
    """``[num_motions]`` motion lengths in seconds: log-normal around ``median_seconds`` (``sigma`` in log space),
    clipped to ``bounds``, with the median raised (1 % at a time) until they sum to at least ``hours``."""
    z = np.random.default_rng(seed).standard_normal(num_motions)
    median = median_seconds
    while True:
        lengths = np.clip(median * np.exp(sigma * z), *bounds)
        if lengths.sum() >= hours * 3600.0 or median > bounds[1]:
            return lengths
        median *= 1.01


def varied_motions(lengths_seconds: Sequence[float], seed: int = 0) -> Iterator[RawMotion]:
    """One motion of each length (``round(length * 30) + 1`` frames at 30 fps), keys ``var_00000``, ... in order."""
    clips = load_motion_file(BUNDLED_MOTIONS)
    rng = np.random.default_rng(seed)
    for index, seconds in enumerate(lengths_seconds):
        pos, rot = _chain(clips, int(round(float(seconds) * FPS)) + 1, rng)
        yield RawMotion(f"var_{index:05d}", FPS, pos, rot)


def write_varied_motions(path: PathLike, lengths_seconds: Sequence[float], seed: int = 0) -> int:
    """Write the motions of :func:`varied_motions` to a native ``.npz`` without holding them twice (they are
    written into the file's arrays as they are made); returns the number of frames."""
    num_frames = np.array([int(round(float(s) * FPS)) + 1 for s in lengths_seconds], dtype=np.int64)
    total = int(num_frames.sum())
    root_pos = np.empty((total, 3), dtype=np.float32)
    global_rot = np.empty((total, skeleton.NUM_BODIES, 4), dtype=np.float32)
    keys: List[str] = []
    start = 0
    for motion in varied_motions(lengths_seconds, seed):
        end = start + motion.num_frames
        root_pos[start:end], global_rot[start:end] = motion.root_pos, motion.global_rot
        keys.append(motion.key)
        start = end
    write_motion_arrays(path, keys, np.full(len(keys), FPS), num_frames, root_pos, global_rot)
    return total


def _chain(clips: List[RawMotion], frames: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``frames`` frames of time-warped clips, each continuing the previous one's end position and heading."""
    pos = np.empty((frames, 3), dtype=np.float32)
    rot = np.empty((frames, skeleton.NUM_BODIES, 4), dtype=np.float32)
    heading = rng.uniform(-math.pi, math.pi)
    xy = np.zeros(2)
    filled = 0
    while filled < frames:
        clip = clips[int(rng.integers(len(clips)))]
        seg_pos, seg_rot = _warp(clip, rng.uniform(*SPEEDS))
        turn = heading - _heading(seg_rot[0, 0])
        seg_pos, seg_rot = _turn(seg_pos, seg_rot, turn, xy)
        count = min(frames - filled, seg_pos.shape[0])
        pos[filled : filled + count], rot[filled : filled + count] = seg_pos[:count], seg_rot[:count]
        filled += count
        heading, xy = _heading(seg_rot[count - 1, 0]), seg_pos[count - 1, :2]
    return pos, rot


def _warp(clip: RawMotion, speed: float) -> Tuple[np.ndarray, np.ndarray]:
    """``clip`` played at ``speed``, sampled at 30 fps (float64)."""
    duration = (clip.num_frames - 1) / clip.fps
    count = int(math.floor(duration * FPS / speed)) + 1
    src = np.minimum(np.arange(count) * speed / FPS * clip.fps, clip.num_frames - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, clip.num_frames - 1)
    w = (src - i0)[:, None]
    pos = (1 - w) * clip.root_pos[i0] + w * clip.root_pos[i1]
    q0, q1 = clip.global_rot[i0].astype(np.float64), clip.global_rot[i1].astype(np.float64)
    q1 = np.where((q0 * q1).sum(-1, keepdims=True) < 0, -q1, q1)  # the short way round
    rot = (1 - w[..., None]) * q0 + w[..., None] * q1
    return pos, rot / np.linalg.norm(rot, axis=-1, keepdims=True)


def _heading(q: np.ndarray) -> float:
    """Yaw of the x axis turned by the xyzw quaternion ``q``."""
    x, y, z, w = q
    return math.atan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z))


def _turn(pos: np.ndarray, rot: np.ndarray, angle: float, start_xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Turn a segment by ``angle`` about +z around its first root position, then move that to ``start_xy``."""
    c, s = math.cos(angle), math.sin(angle)
    rel = pos[:, :2] - pos[0, :2]
    out_pos = pos.copy()
    out_pos[:, 0] = c * rel[:, 0] - s * rel[:, 1] + start_xy[0]
    out_pos[:, 1] = s * rel[:, 0] + c * rel[:, 1] + start_xy[1]
    hz, hw = math.sin(angle / 2), math.cos(angle / 2)  # yaw quaternion (0, 0, hz, hw) times each rotation
    x, y, z, w = np.moveaxis(rot, -1, 0)
    out_rot = np.stack([hw * x - hz * y, hw * y + hz * x, hw * z + hz * w, hw * w - hz * z], axis=-1)
    return out_pos, out_rot
