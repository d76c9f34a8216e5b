"""One motion clip as a file stores it (:class:`RawMotion`), the checks every reader applies to it, and the error
every reader raises (:class:`MotionFileError`, one line: ``"<path>: <problem>"``).

The native ``.npz`` reader (:mod:`phc_lightning.motion.formats`), the PHC ``.pkl`` reader
(:mod:`phc_lightning.motion.pkl`) and the AMASS converter all build their motions through :func:`validate_motion`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Union

import numpy as np

from phc_lightning.core import skeleton

# Quaternions whose norm is off by more than this are treated as corrupt instead of renormalized.
QUAT_NORM_TOLERANCE = 0.1

PathLike = Union[str, "os.PathLike[str]"]


class MotionFileError(ValueError):
    """A motion file is missing, unreadable or inconsistent; the message is ``"<path>: <problem>"``."""


@dataclass
class RawMotion:
    """One motion clip as stored in a file.

    Attributes:
        key: motion name.
        fps: frames per second (> 0).
        root_pos: pelvis world position, float32 ``[T, 3]``, metres, z up.
        global_rot: global body rotations, float32 ``[T, 24, 4]``, unit quaternions **xyzw** relative to the
            T-pose, body order of :data:`phc_lightning.core.skeleton.BODY_NAMES`.
    """

    key: str
    fps: float
    root_pos: np.ndarray
    global_rot: np.ndarray

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.root_pos.shape[0])


def validate_motion(
    path: PathLike, key: str, fps: object, root_pos: object, global_rot: object, in_place: bool = False
) -> RawMotion:
    """Check one motion's fields and return it as a :class:`RawMotion` with float32 arrays and unit quaternions.

    Args:
        path: file the motion came from (only used in error messages).
        key: motion name.
        fps: frames per second, any real scalar.
        root_pos: array-like ``[T, 3]``.
        global_rot: array-like ``[T, 24, 4]`` xyzw; norms within :data:`QUAT_NORM_TOLERANCE` of 1 are renormalized.
        in_place: float32 inputs are kept (the motion holds views of them) and ``global_rot`` is renormalized in
            place: for a loader that owns its arrays, so that a large file is not held twice.

    Raises:
        MotionFileError: wrong shape or dtype, non-finite values, fewer than 2 frames, fps <= 0, zero or
            far-from-unit quaternions.
    """
    where = f"{path}: motion {key!r}"
    try:
        fps_value = float(np.asarray(fps, dtype=np.float64).reshape(()))
    except (TypeError, ValueError) as e:
        raise MotionFileError(f"{where}: fps must be a real scalar, got {fps!r}") from e
    if not np.isfinite(fps_value) or fps_value <= 0:
        raise MotionFileError(f"{where}: fps must be finite and > 0, got {fps_value}")
    pos = _float_array(where, "root_pos", root_pos, copy=not in_place)
    rot = _float_array(where, "global_rot", global_rot, copy=not in_place)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise MotionFileError(f"{where}: root_pos must have shape [T, 3], got {list(pos.shape)}")
    nb = skeleton.NUM_BODIES
    if rot.ndim != 3 or rot.shape[1:] != (nb, 4):
        raise MotionFileError(f"{where}: global_rot must have shape [T, {nb}, 4], got {list(rot.shape)}")
    if rot.shape[0] != pos.shape[0]:
        raise MotionFileError(f"{where}: root_pos has {pos.shape[0]} frames but global_rot has {rot.shape[0]}")
    if pos.shape[0] < 2:
        raise MotionFileError(f"{where}: needs at least 2 frames, got {pos.shape[0]}")
    for name, arr in (("root_pos", pos), ("global_rot", rot)):
        if not np.isfinite(arr).all():
            frame = int(np.nonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))[0][0])
            raise MotionFileError(f"{where}: {name} contains NaN or inf (first at frame {frame})")
    norm = np.linalg.norm(rot.astype(np.float64), axis=-1)
    if (norm < 1e-6).any():
        frame, body = (int(i[0]) for i in np.nonzero(norm < 1e-6))
        raise MotionFileError(
            f"{where}: global_rot has a zero quaternion (frame {frame}, body {skeleton.BODY_NAMES[body]})"
        )
    worst = float(np.abs(norm - 1.0).max())
    if worst > QUAT_NORM_TOLERANCE:
        raise MotionFileError(f"{where}: global_rot quaternions are not unit length (|norm - 1| up to {worst:.3g})")
    unit = (rot / norm[..., None]).astype(np.float32)
    if in_place:
        rot[...] = unit  # the same arithmetic as a copy, so the same bits
    else:
        rot = unit
    return RawMotion(key=str(key), fps=fps_value, root_pos=np.ascontiguousarray(pos), global_rot=rot)


def _float_array(where: str, name: str, value: object, copy: bool = True) -> np.ndarray:
    """``value`` as a float32 array (a copy unless ``copy`` is False and it already is one), refusing non-numeric
    dtypes (strings, objects, bools)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise MotionFileError(f"{where}: {name} must be a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=copy)


def check_unique_keys(path: PathLike, keys: List[str]) -> None:
    """Raise :class:`MotionFileError` naming the first repeated motion key."""
    seen = set()
    for key in keys:
        if key in seen:
            raise MotionFileError(f"{path}: duplicate motion key {key!r}")
        seen.add(key)
