"""AMASS ``.npz`` (SMPL / SMPL-H / SMPL-X fits) to the native motion format, the way PHC converts it.

An AMASS file holds ``poses [T, 3 J]`` (axis-angle per joint, parent-relative, SMPL joint order; the first 66
values are the pelvis and 21 body joints in every model variant), ``trans [T, 3]`` (metres, z up) and
``mocap_framerate`` (SMPL-H) or ``mocap_frame_rate`` (SMPL-X). Other keys (betas, dmpls, gender, ...) are never
read, so object arrays in them cannot run code (``allow_pickle=False``).

Steps (PHC ``convert_amass_data.py``, upright start):

1. local rotations of the 22 body joints, the two hand joints set to identity, reordered from SMPL's joint order to
   :data:`phc_lightning.core.skeleton.BODY_NAMES`;
2. global rotations by chaining them down the kinematic tree, relative to SMPL's own T-pose (y up, facing +z);
3. ``global_rot = global_smpl * U^-1`` with ``U = (0.5, 0.5, 0.5, 0.5)`` xyzw (120 degrees about (1, 1, 1)): the
   rest pose becomes the skeleton's (z up, facing +x, left = +y), so ``R_smpl @ offset_smpl = R @ offset``;
4. pelvis position = ``trans`` + the neutral SMPL rest pelvis (SMPL adds it unrotated);
5. resampled to the target rate (:mod:`~phc_lightning.motion.resample`) and shifted vertically so the lowest sole
   touches z = 0 (what the motion library's ``fix_height`` would do on every load anyway).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import exp_map_to_quat, quat_conjugate, quat_mul, quat_to_exp_map
from phc_lightning.motion import fk
from phc_lightning.motion.library import sole_heights
from phc_lightning.motion.raw_motion import MotionFileError, PathLike, RawMotion, validate_motion
from phc_lightning.motion.resample import resample_motion

SMPL_JOINT_NAMES: Tuple[str, ...] = (
    "Pelvis", "L_Hip", "R_Hip", "Torso", "L_Knee", "R_Knee", "Spine", "L_Ankle", "R_Ankle", "Chest", "L_Toe",
    "R_Toe", "Neck", "L_Thorax", "R_Thorax", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist",
    "R_Wrist", "L_Hand", "R_Hand",
)  # fmt: skip
"""SMPL's joint order (PHC ``SMPL_BONE_ORDER_NAMES``), the order of AMASS ``poses``."""

SMPL_TO_BODY: Tuple[int, ...] = tuple(SMPL_JOINT_NAMES.index(name) for name in skeleton.BODY_NAMES)
"""For each body of :data:`phc_lightning.core.skeleton.BODY_NAMES`, its SMPL joint index."""

NUM_BODY_JOINTS = 22
"""Joints taken from ``poses`` (pelvis + 21); SMPL's hand joints are replaced by fingers in SMPL-H / SMPL-X."""

UPRIGHT_QUAT = (0.5, 0.5, 0.5, 0.5)
"""xyzw rotation from the skeleton's rest frame (z up, facing +x) to SMPL's (y up, facing +z)."""

SMPL_PELVIS_REST = (-0.0018, -0.2233, 0.0282)
"""Neutral SMPL rest position of the pelvis joint (PHC's ``smpl_humanoid.xml`` root), added to ``trans``."""

FRAMERATE_KEYS = ("mocap_framerate", "mocap_frame_rate")


def read_amass_npz(path: PathLike) -> Tuple[np.ndarray, np.ndarray, float]:
    """``(poses [T, 66] float64, trans [T, 3] float64, fps)`` of an AMASS file.

    Raises:
        MotionFileError: not a zip archive, missing or unreadable keys, wrong shapes, non-finite values or a bad
            frame rate; the message is ``"<path>: <problem>"``.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise MotionFileError(f"{path}: not a valid .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if "poses" not in names or "trans" not in names:
                if "format" in names:
                    raise MotionFileError(f"{path}: is a phc-lightning motion file, not an AMASS file")
                raise MotionFileError(f"{path}: no 'poses'/'trans' arrays (not an AMASS motion; a shape file?)")
            rate_key = next((k for k in FRAMERATE_KEYS if k in names), None)
            if rate_key is None:
                raise MotionFileError(f"{path}: no frame rate ({' or '.join(FRAMERATE_KEYS)})")
            poses, trans, rate = archive["poses"], archive["trans"], archive[rate_key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, MotionFileError):
            raise
        detail = " ".join(str(e).split()) or type(e).__name__
        raise MotionFileError(f"{path}: unreadable AMASS archive ({detail})") from None
    for name, arr in (("poses", poses), ("trans", trans), (rate_key, rate)):
        if arr.dtype.kind not in "fiu":
            raise MotionFileError(f"{path}: {name} must be numeric, got dtype {arr.dtype}")
    if poses.ndim != 2 or poses.shape[1] < 3 * NUM_BODY_JOINTS:
        raise MotionFileError(f"{path}: poses must have shape [T, >= {3 * NUM_BODY_JOINTS}], got {list(poses.shape)}")
    if trans.shape != (poses.shape[0], 3):
        raise MotionFileError(f"{path}: trans must have shape [{poses.shape[0]}, 3], got {list(trans.shape)}")
    if rate.size != 1 or not np.isfinite(rate).all() or float(rate.reshape(-1)[0]) <= 0:
        raise MotionFileError(f"{path}: {rate_key} must be a positive number, got {rate!r}")
    poses = poses[:, : 3 * NUM_BODY_JOINTS].astype(np.float64)
    trans = trans.astype(np.float64)
    for name, arr in (("poses", poses), ("trans", trans)):
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise MotionFileError(f"{path}: {name} contains NaN or inf (first at frame {int(np.argmax(bad))})")
    return poses, trans, float(rate.reshape(-1)[0])


def smpl_to_global(poses: np.ndarray, trans: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pelvis positions ``[T, 3]`` and global rotations ``[T, 24, 4]`` xyzw (rest = the skeleton's T-pose).

    Args:
        poses: ``[T, >= 66]`` SMPL-order axis-angle; joints beyond the 22 body joints are ignored (hands = 0).
        trans: ``[T, 3]`` AMASS root translation, metres, z up.
    """
    num = poses.shape[0]
    aa = np.zeros((num, len(SMPL_JOINT_NAMES), 3))
    aa[:, :NUM_BODY_JOINTS] = poses[:, : 3 * NUM_BODY_JOINTS].reshape(num, NUM_BODY_JOINTS, 3)
    local = exp_map_to_quat(torch.from_numpy(aa))[:, list(SMPL_TO_BODY)]
    upright = torch.tensor(UPRIGHT_QUAT, dtype=local.dtype)
    global_rot = quat_mul(fk.local_to_global(local), quat_conjugate(upright))
    root_pos = trans + np.asarray(SMPL_PELVIS_REST)
    return root_pos, global_rot.numpy()


def global_to_smpl(root_pos: np.ndarray, global_rot: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`smpl_to_global`: ``(poses [T, 72] SMPL-order axis-angle, trans [T, 3])``.

    Hand rotations are returned as they are (an AMASS round trip drops them, see :func:`smpl_to_global`).
    """
    upright = torch.tensor(UPRIGHT_QUAT, dtype=torch.float64)
    smpl_global = quat_mul(torch.from_numpy(np.asarray(global_rot, dtype=np.float64)), upright)
    local_body = quat_to_exp_map(fk.global_to_local(smpl_global))
    poses = torch.zeros_like(local_body)
    poses[:, list(SMPL_TO_BODY)] = local_body
    return poses.reshape(poses.shape[0], -1).numpy(), np.asarray(root_pos, dtype=np.float64) - SMPL_PELVIS_REST


def place_on_floor(motion: RawMotion) -> RawMotion:
    """``motion`` shifted vertically so that its lowest sole over all frames is at z = 0."""
    rot = torch.from_numpy(motion.global_rot.astype(np.float64))
    body_pos = fk.body_positions(torch.from_numpy(motion.root_pos.astype(np.float64)), rot)
    lowest = float(sole_heights(body_pos).min())
    root_pos = motion.root_pos.copy()
    root_pos[:, 2] -= lowest
    return RawMotion(motion.key, motion.fps, root_pos, motion.global_rot)


def amass_to_motion(path: PathLike, key: str, target_fps: float = 30.0, min_frames: int = 10) -> RawMotion:
    """Read one AMASS file and return it as a validated native motion at ``target_fps``, on the floor.

    Raises:
        MotionFileError: the file is not a usable AMASS motion, or has fewer than ``min_frames`` frames at
            ``target_fps``.
    """
    poses, trans, fps = read_amass_npz(path)
    if poses.shape[0] < 2:
        raise MotionFileError(f"{path}: too short ({poses.shape[0]} frame)")
    root_pos, global_rot = smpl_to_global(poses, trans)
    motion = validate_motion(path, key, fps, root_pos, global_rot)
    motion = resample_motion(motion, target_fps)
    if motion.num_frames < min_frames:
        raise MotionFileError(
            f"{path}: too short ({motion.num_frames} frames at {target_fps:g} fps, need at least {min_frames})"
        )
    return place_on_floor(motion)


def motion_to_amass_arrays(motion: RawMotion) -> Dict[str, np.ndarray]:
    """An AMASS-style dict (``poses [T, 156]``, ``trans``, ``mocap_framerate``, ``betas``, ``gender``) of a motion.

    For tests and for tools that read AMASS; SMPL-H's finger slots (66:156) are zero.
    """
    poses72, trans = global_to_smpl(motion.root_pos, motion.global_rot)
    poses = np.zeros((motion.num_frames, 156))
    poses[:, : 3 * NUM_BODY_JOINTS] = poses72[:, : 3 * NUM_BODY_JOINTS]
    return {
        "poses": poses,
        "trans": trans,
        "mocap_framerate": np.array(float(motion.fps)),
        "betas": np.zeros(16),
        "gender": np.array("neutral"),
    }
