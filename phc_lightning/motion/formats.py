"""Motion files on disk: the native ``.npz`` format and the dispatcher that also reads PHC ``.pkl`` files.

Native format (one zip archive, loaded with ``np.load(path, allow_pickle=False)``; M motions, motions
concatenated along the frame axis):

==============  ==================  =============================================================
key             dtype / shape       meaning
==============  ==================  =============================================================
``format``      str scalar          magic ``"phc-lightning-motions"``
``version``     int64 scalar        format version, ``1``
``keys``        unicode ``(M,)``    motion names (``<U…``, never object)
``fps``         float32 ``(M,)``    frames per second
``num_frames``  int64 ``(M,)``      frames per motion, ``>= 2``
``root_pos``    float32 ``(ΣT, 3)``  pelvis world position, metres, z up
``global_rot``  float32 ``(ΣT, 24, 4)``  global body rotations, **xyzw**, relative to the T-pose,
                                    body order of :data:`phc_lightning.skeleton.BODY_NAMES`
==============  ==================  =============================================================

Every problem with a file raises :class:`MotionFileError` with a one-line ``"<path>: <problem>"`` message.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from phc_lightning import skeleton

FORMAT_MAGIC = "phc-lightning-motions"
FORMAT_VERSION = 1
NPZ_KEYS = ("format", "version", "keys", "fps", "num_frames", "root_pos", "global_rot")
# Quaternions whose norm is off by more than this are treated as corrupt instead of renormalized.
QUAT_NORM_TOLERANCE = 0.1
# Fixed zip member timestamp so that the same motions always give the same bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)

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
            T-pose, body order of :data:`phc_lightning.skeleton.BODY_NAMES`.
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


def save_motions_npz(path: PathLike, motions: Sequence[RawMotion]) -> None:
    """Write motions to a native ``.npz`` file; the same motions always give byte-identical files.

    Args:
        path: destination, must end in ``.npz``; written atomically (temporary file + rename).
        motions: at least one motion; keys must be unique. Arrays are validated and stored as float32.

    Raises:
        MotionFileError: bad path suffix, no motions, duplicate keys or an invalid motion.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise MotionFileError(f"{path}: native motion files must end in .npz")
    if len(motions) == 0:
        raise MotionFileError(f"{path}: no motions to save")
    checked = [validate_motion(path, m.key, m.fps, m.root_pos, m.global_rot) for m in motions]
    check_unique_keys(path, [m.key for m in checked])
    arrays: Dict[str, np.ndarray] = {
        "format": np.array(FORMAT_MAGIC),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "keys": np.array([m.key for m in checked], dtype=np.str_),
        "fps": np.array([m.fps for m in checked], dtype=np.float32),
        "num_frames": np.array([m.num_frames for m in checked], dtype=np.int64),
        "root_pos": np.concatenate([m.root_pos for m in checked]).astype(np.float32),
        "global_rot": np.concatenate([m.global_rot for m in checked]).astype(np.float32),
    }
    tmp = path.with_name(path.name + ".tmp")
    # np.savez stamps zip members with the current time; write the archive ourselves with a fixed stamp.
    with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in NPZ_KEYS:
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, mode="w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, arrays[name], allow_pickle=False)
    os.replace(tmp, path)


def load_motion_file(path: PathLike) -> List[RawMotion]:
    """Load every motion of a native ``.npz`` or a PHC ``.pkl`` file (dispatch by extension).

    Returns:
        The motions in file order, validated (float32 arrays, unit xyzw quaternions, >= 2 frames, fps > 0).

    Raises:
        MotionFileError: the path is missing, has an unknown extension, or the file is invalid.
    """
    path = Path(path)
    if not path.exists():
        raise MotionFileError(f"{path}: no such file")
    if not path.is_file():
        raise MotionFileError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".pkl":
        from phc_lightning.motion.pkl import load_phc_pkl  # lazy: the pickle reader pulls in torch helpers

        return load_phc_pkl(path)
    raise MotionFileError(f"{path}: unknown motion file extension {suffix or '(none)'!r} (expected .npz or .pkl)")


def check_unique_keys(path: PathLike, keys: List[str]) -> None:
    """Raise :class:`MotionFileError` naming the first repeated motion key."""
    seen = set()
    for key in keys:
        if key in seen:
            raise MotionFileError(f"{path}: duplicate motion key {key!r}")
        seen.add(key)


def _load_npz(path: Path) -> List[RawMotion]:
    """Read and validate a native motion archive (see the module table)."""
    if not zipfile.is_zipfile(path):  # numpy would otherwise try to read it as a pickle and say so
        raise MotionFileError(f"{path}: not a valid .npz archive (not a zip file)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise MotionFileError(f"{path}: not a valid .npz archive ({_one_line(e)})") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise MotionFileError(f"{path}: not a valid .npz archive (a single .npy array, not a zip of arrays)")
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing and {"poses", "trans"} <= set(archive.files):
            raise MotionFileError(f"{path}: looks like a raw AMASS .npz (poses/trans), not a phc-lightning motion file")
        if missing:
            raise MotionFileError(f"{path}: missing key(s) {', '.join(missing)} (not a phc-lightning motion file?)")
        data: Dict[str, np.ndarray] = {}
        for key in NPZ_KEYS:
            try:
                data[key] = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise MotionFileError(f"{path}: key {key!r} cannot be read ({_one_line(e)})") from e
    magic = data["format"]
    if magic.shape != () or magic.dtype.kind != "U" or str(magic) != FORMAT_MAGIC:
        raise MotionFileError(f"{path}: key 'format' must be the string {FORMAT_MAGIC!r}")
    version = data["version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise MotionFileError(f"{path}: unsupported format version {version!r} (this reader knows {FORMAT_VERSION})")
    keys, fps, num_frames = data["keys"], data["fps"], data["num_frames"]
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise MotionFileError(f"{path}: key 'keys' must be a 1-D unicode array, got {keys.dtype} {list(keys.shape)}")
    num_motions = keys.shape[0]
    if num_motions == 0:
        raise MotionFileError(f"{path}: contains no motions")
    for name, arr, kinds in (("fps", fps, "fiu"), ("num_frames", num_frames, "iu")):
        if arr.shape != (num_motions,) or arr.dtype.kind not in kinds:
            raise MotionFileError(
                f"{path}: key {name!r} must be a numeric [{num_motions}] array, got {arr.dtype} {list(arr.shape)}"
            )
    root_pos, global_rot = data["root_pos"], data["global_rot"]
    total = int(num_frames.sum())
    for name, arr in (("root_pos", root_pos), ("global_rot", global_rot)):
        if arr.ndim < 1 or arr.shape[0] != total:
            raise MotionFileError(
                f"{path}: key {name!r} has {arr.shape[0] if arr.ndim else 0} rows but num_frames sums to {total}"
            )
    check_unique_keys(path, [str(k) for k in keys])
    motions = []
    start = 0
    for i in range(num_motions):
        n = int(num_frames[i])
        if n < 2:
            raise MotionFileError(f"{path}: motion {str(keys[i])!r}: needs at least 2 frames, got {n}")
        end = start + n
        # The arrays were just read from the archive and belong to no one else: validate them in place.
        motions.append(validate_motion(
            path, str(keys[i]), fps[i], root_pos[start:end], global_rot[start:end], in_place=True
        ))
        start = end
    return motions


def _one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
