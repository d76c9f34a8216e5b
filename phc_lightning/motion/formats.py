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
                                    body order of :data:`phc_lightning.core.skeleton.BODY_NAMES`
==============  ==================  =============================================================

Every problem with a file raises :class:`~phc_lightning.motion.raw_motion.MotionFileError` with a one-line
``"<path>: <problem>"`` message.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from phc_lightning.motion.raw_motion import MotionFileError, PathLike, RawMotion, check_unique_keys, validate_motion

FORMAT_MAGIC = "phc-lightning-motions"
FORMAT_VERSION = 1
NPZ_KEYS = ("format", "version", "keys", "fps", "num_frames", "root_pos", "global_rot")
# Fixed zip member timestamp so that the same motions always give the same bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)

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
    write_motion_arrays(
        path, [m.key for m in checked], np.array([m.fps for m in checked]),
        np.array([m.num_frames for m in checked]), np.concatenate([m.root_pos for m in checked]),
        np.concatenate([m.global_rot for m in checked]),
    )


def write_motion_arrays(path: PathLike, keys: Sequence[str], fps: np.ndarray, num_frames: np.ndarray,
                        root_pos: np.ndarray, global_rot: np.ndarray) -> None:
    """Write motions already concatenated along the frame axis (the module table's arrays) as a native ``.npz``,
    atomically and byte-reproducibly, without checking them (:func:`save_motions_npz` checks; the reader always
    does). For generators of sets too large to hold twice."""
    path = Path(path)
    arrays: Dict[str, np.ndarray] = {
        "format": np.array(FORMAT_MAGIC),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "keys": np.array(list(keys), dtype=np.str_),
        "fps": np.asarray(fps, dtype=np.float32),
        "num_frames": np.asarray(num_frames, dtype=np.int64),
        "root_pos": np.asarray(root_pos, dtype=np.float32),
        "global_rot": np.asarray(global_rot, dtype=np.float32),
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
