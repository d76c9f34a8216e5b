"""``phc motions validate FILE``: per-motion checks that catch motions a policy cannot (or should not) track.

Errors (the command exits with 1 when any is found):

- a field with NaN/inf, zero quaternions or a bad fps (the motion cannot be loaded at all);
- fewer than ``min_frames`` frames;
- ground penetration: some body's lowest point (its origin minus its geom's radius, the sole for feet) more than
  ``floor_tolerance`` below z = 0, as the file stores it;
- velocity spikes: a body moving faster than ``max_speed`` m/s or turning faster than ``max_angular_speed`` rad/s
  between two frames (mocap swaps and pops look like this).

Warnings (reported, exit 0): frames where a joint's middle hinge is near 90 degrees, where hinge speeds are
ill-conditioned (the motion library clamps them; see :func:`~phc_lightning.motion.fk.near_singular_hinges`);
with ``dynamics=True`` (``--dynamics``), stretches where the reference, played on this humanoid, needs ground
forces its feet cannot give (:mod:`phc_lightning.motion.dynamics`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from phc_lightning.core import skeleton
from phc_lightning.motion import fk
from phc_lightning.motion.formats import load_motion_file
from phc_lightning.motion.info import NEAR_SINGULAR_DEG
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.motion.raw_motion import MotionFileError, PathLike, RawMotion, validate_motion

DEFAULT_MIN_FRAMES = 10
DEFAULT_FLOOR_TOLERANCE = 0.05  # m: shape differences between the mocap subject and the neutral skeleton
DEFAULT_MAX_SPEED = 12.0  # m/s, any body origin between two frames
DEFAULT_MAX_ANGULAR_SPEED = 40.0  # rad/s, any body between two frames


@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` is ``"error"`` or ``"warning"``; ``message`` names the file and the motion."""

    key: str
    severity: str
    message: str


def body_radii(xml_path: Optional[str] = None) -> np.ndarray:
    """``[24]`` distance from each body's origin down to the lowest point of its geometry in the rest pose.

    Feet use the sole depth of :data:`phc_lightning.core.skeleton.SOLE_DEPTH`; other bodies the radius of their sphere
    or capsule (largest half-size of a box) in the humanoid MJCF.
    """
    import mujoco

    from phc_lightning.sim.mujoco_cpu import load_model

    model = load_model(xml_path)
    radii = np.zeros(skeleton.NUM_BODIES)
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g]) - 1
        if body >= 0:
            size = model.geom_size[g]
            radius = size.max() if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX else size[0]
            radii[body] = max(radii[body], float(radius))
    for name, depth in skeleton.SOLE_DEPTH.items():
        radii[skeleton.BODY_INDEX[name]] = depth
    return radii


def load_for_checks(path: PathLike) -> Tuple[List[RawMotion], List[Problem]]:
    """Every loadable motion of ``path`` and one error per motion that cannot be loaded (e.g. a NaN frame).

    A file whose structure is broken (not an archive, missing keys, duplicate keys ...) raises instead.

    Raises:
        MotionFileError: the file as a whole is unreadable.
    """
    try:
        return load_motion_file(path), []
    except MotionFileError as err:
        entries = _raw_entries(Path(path))
        if entries is None:
            raise
        first = err
    motions, problems = [], []
    for key, fps, root_pos, global_rot in entries:
        try:
            motions.append(validate_motion(path, key, fps, root_pos, global_rot))
        except MotionFileError as e:
            problems.append(Problem(key, "error", str(e)))
    if not problems:  # the file-level problem was not about one motion
        raise first
    return motions, problems


def check_motions(
    path: PathLike,
    motions: Sequence[RawMotion],
    min_frames: int = DEFAULT_MIN_FRAMES,
    floor_tolerance: float = DEFAULT_FLOOR_TOLERANCE,
    max_speed: float = DEFAULT_MAX_SPEED,
    max_angular_speed: float = DEFAULT_MAX_ANGULAR_SPEED,
    singular_deg: float = NEAR_SINGULAR_DEG,
    dynamics: bool = False,
) -> List[Problem]:
    """Frame count, floor, speed and hinge-singularity checks of loaded motions (see the module docstring), and
    with ``dynamics`` the inverse-dynamics feasibility of each motion as the env plays it (after the height fix)."""
    problems: List[Problem] = []
    if not motions:
        return problems
    # The library's FK, raw forward differences, no height fix and no clamp: the file as it is.
    lib = MotionLibrary(list(motions), fix_height=False, velocity_smoothing=0.0, max_dof_vel=None)
    radii = torch.tensor(body_radii(), dtype=lib.body_pos.dtype)
    lowest = lib.body_pos[..., 2] - radii  # [F, 24]
    speed = lib.body_vel.norm(dim=-1)
    angular = lib.body_angvel.norm(dim=-1)
    singular = fk.near_singular_hinges(lib.dof_pos, singular_deg)  # [F, 23]
    for i, m in enumerate(motions):
        rows = slice(int(lib.frame_start[i]), int(lib.frame_start[i]) + m.num_frames)
        messages = _motion_findings(
            m.num_frames, lowest[rows], speed[rows], angular[rows], singular[rows], min_frames, floor_tolerance,
            max_speed, max_angular_speed, singular_deg,
        )
        problems.extend(Problem(m.key, severity, f"{path}: motion {m.key!r}: {text}") for severity, text in messages)
    if dynamics:
        from phc_lightning.motion.dynamics import dynamics_findings
        from phc_lightning.sim.mujoco_cpu import load_model

        played = MotionLibrary(list(motions))  # the env's defaults: height fix, smoothed velocities
        for mid, text in dynamics_findings(played, load_model()):
            key = played.keys[mid]
            problems.append(Problem(key, "warning", f"{path}: motion {key!r}: {text}"))
    return problems


def _motion_findings(
    num_frames: int,
    lowest: torch.Tensor,
    speed: torch.Tensor,
    angular: torch.Tensor,
    singular: torch.Tensor,
    min_frames: int,
    floor_tolerance: float,
    max_speed: float,
    max_angular_speed: float,
    singular_deg: float,
) -> List[Tuple[str, str]]:
    """``(severity, text)`` findings of one motion from its per-frame ``[T, 24]`` / ``[T, 23]`` quantities."""
    found: List[Tuple[str, str]] = []
    if num_frames < min_frames:
        found.append(("error", f"only {num_frames} frames (need at least {min_frames})"))
    frame, body = divmod(int(torch.argmin(lowest)), skeleton.NUM_BODIES)
    depth = -float(lowest[frame, body])
    if depth > floor_tolerance:
        found.append(("error", f"{skeleton.BODY_NAMES[body]} is {depth:.3f} m below the floor at frame {frame} "
                               f"(tolerance {floor_tolerance:g} m)"))  # fmt: skip
    # A motion's last row repeats the previous pair's difference: only rows 0..T-2 are independent.
    for values, limit, unit, verb in ((speed, max_speed, "m/s", "moves"),
                                      (angular, max_angular_speed, "rad/s", "turns")):  # fmt: skip
        v = values[: num_frames - 1]
        frame, body = divmod(int(torch.argmax(v)), skeleton.NUM_BODIES)
        if float(v[frame, body]) > limit:
            count = int((v > limit).any(dim=-1).sum())
            found.append(("error", f"velocity spike: {skeleton.BODY_NAMES[body]} {verb} at {float(v[frame, body]):.1f} "
                                   f"{unit} between frames {frame} and {frame + 1} (limit {limit:g} {unit}; {count} "
                                   "frame(s) over)"))  # fmt: skip
    frames = int(singular.any(dim=-1).sum())
    if frames:
        joints = [skeleton.BODY_NAMES[j + 1] for j in torch.nonzero(singular.any(dim=0)).flatten().tolist()]
        found.append(("warning", f"{frames} frame(s) with a middle hinge beyond {singular_deg:g} degrees "
                                 f"({', '.join(joints)}): hinge speeds are ill-conditioned there"))  # fmt: skip
    return found


def validate_file(path: PathLike, **limits: Any) -> List[Problem]:
    """All problems of a motion file, in motion order: load errors first, then :func:`check_motions`.

    Raises:
        MotionFileError: the file as a whole is unreadable.
    """
    motions, problems = load_for_checks(path)
    return problems + check_motions(path, motions, **limits)


def print_validation(path: PathLike, **limits: Any) -> int:
    """Print one line per problem and a summary; return the exit code (1 when any error was found, else 0)."""
    motions, load_problems = load_for_checks(path)
    problems = load_problems + check_motions(path, motions, **limits)
    for p in problems:
        print(("warning: " if p.severity == "warning" else "") + p.message)
    errors = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(errors)
    total = len(motions) + len(load_problems)
    bad = len({p.key for p in errors})
    print(f"{path}: {total} motion(s) checked, {len(errors)} error(s) in {bad} motion(s), {warnings} warning(s)")
    return 1 if errors else 0


def _raw_entries(path: Path) -> Optional[List[Tuple[str, Any, Any, Any]]]:
    """``(key, fps, root_pos, global_rot)`` of every motion without per-motion validation; None if unreadable."""
    if path.suffix.lower() == ".pkl":
        from phc_lightning.motion.pkl import load_pickle_restricted

        try:
            data = load_pickle_restricted(path)
        except MotionFileError:
            return None
        if isinstance(data, dict) and "pose_quat_global" in data:
            data = {path.stem: data}
        if not isinstance(data, dict) or not all(
            isinstance(e, dict) and "root_trans_offset" in e and "pose_quat_global" in e for e in data.values()
        ):
            return None
        return [(str(k), e.get("fps", 30.0), e["root_trans_offset"], e["pose_quat_global"]) for k, e in data.items()]
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys, fps, num_frames = archive["keys"], archive["fps"], archive["num_frames"]
            root_pos, global_rot = archive["root_pos"], archive["global_rot"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, AttributeError):
        return None
    if keys.ndim != 1 or fps.shape != keys.shape or num_frames.shape != keys.shape:
        return None
    ends = np.cumsum(num_frames.astype(np.int64))
    if len(ends) == 0 or ends[-1] != root_pos.shape[0] or ends[-1] != global_rot.shape[0]:
        return None
    starts = ends - num_frames
    return [(str(k), f, root_pos[a:b], global_rot[a:b]) for k, f, a, b in zip(keys, fps, starts, ends)]
