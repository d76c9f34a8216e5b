"""Can the humanoid follow a motion at all? Inverse dynamics of the reference on this skeleton and its masses.

``mujoco.mj_inverse`` gives, per frame, the force and moment the floor would have to apply to the pelvis' free
joint to produce the reference's accelerations (contacts off, so the whole ground wrench is what is solved for).
A frame is *feasible* when the feet can give it: the vertical force pushes (never pulls), the horizontal force is
inside the friction cone, and its centre of pressure (CoP) lies inside the support polygon (foot-box corners
within ``contact_height`` of the floor). In flight (no foot down) any needed force is a shortfall.

Real mocap played on the mean-shape skeleton with our masses is not the performer's body: the centre of mass lands
where the performer's feet were not, and a tracker must leave the reference in those stretches and come back.
``phc motions validate --dynamics`` reports them per motion (a warning: the file is fine, this body is not).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Tuple

import mujoco
import numpy as np
import torch

from phc_lightning.motion.library import MotionLibrary, smooth_over_time

FOOT_GEOMS = ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe")
DEFAULT_CONTACT_HEIGHT = 0.05  # m: foot corners this close to the floor bear weight (mocap feet float a few cm)
DEFAULT_COP_TOLERANCE = 0.03  # m beyond the support polygon: finite-difference accelerations are noisy
DEFAULT_FORCE_TOLERANCE = 0.05  # body weights of pull, friction excess or force in flight


@dataclass(frozen=True)
class GroundNeeds:
    """Per frame of one motion (``[T]``; the first and last frames, without central differences, are NaN / 0).

    Attributes:
        cop_outside: distance (m) of the needed CoP outside the support polygon, negative inside; NaN in flight,
            inf when the needed vertical force pulls.
        vertical: the needed vertical force, in body weights.
        shortfall: force the feet cannot give, in body weights: pull, excess over the friction cone, or (in
            flight) the whole needed force.
    """

    cop_outside: np.ndarray
    vertical: np.ndarray
    shortfall: np.ndarray

    def unbalanced_moment(self) -> np.ndarray:
        """``[T]`` the moment the feet cannot give, as metres of CoP offset at one body weight (0 in flight):
        a CoP far off under a nearly unloaded foot (toe-off, landing) matters little, under full weight a lot."""
        off = np.where(np.isfinite(self.cop_outside), np.maximum(self.cop_outside, 0.0), 0.0)
        return off * np.maximum(self.vertical, 0.0)


@dataclass(frozen=True)
class Stretch:
    """Consecutive infeasible frames ``first..last`` (inclusive) and their largest unbalanced moment, as metres
    of CoP offset at one body weight (:meth:`GroundNeeds.unbalanced_moment`)."""

    first: int
    last: int
    worst_moment: float


def _segment_distance(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> float:
    """Distance of ``q`` from the segment ``a``-``b`` (a point where ``a == b``)."""
    ab = b - a
    t = float(np.clip(np.dot(q - a, ab) / max(float(np.dot(ab, ab)), 1e-24), 0.0, 1.0))
    return float(np.linalg.norm(q - (a + t * ab)))


def hull_distance(points: np.ndarray, q: np.ndarray) -> float:
    """Signed distance of the 2-D point ``q`` from the convex hull of ``points [K, 2]``: the Euclidean distance
    outside, minus the distance to the nearest edge inside. One corner is a point and collinear corners a segment
    (a foot on its edge, a heel line): no inside, 0 on them."""
    pts = np.unique(np.round(points, 6), axis=0)  # sorted rows, as the monotone chain needs

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    lower: List[np.ndarray] = []
    upper: List[np.ndarray] = []
    for p in pts:  # Andrew's monotone chain; collinear points are dropped
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1]) if len(pts) > 1 else pts
    if len(hull) < 3:  # one corner or collinear ones: the distance to the point or segment
        return _segment_distance(hull[0], hull[-1], q)
    ends = np.roll(hull, -1, 0)
    edges = ends - hull
    normals = np.stack([edges[:, 1], -edges[:, 0]], 1) / np.linalg.norm(edges, axis=1, keepdims=True)
    inside = float(((q - hull) * normals).sum(1).max())  # the largest signed edge distance: exact inside
    if inside <= 0:
        return inside
    # outside, the edge lines underestimate the distance off a vertex: take the nearest edge segment
    return min(_segment_distance(a, b, q) for a, b in zip(hull, ends))


def _box_corners(data: mujoco.MjData, model: mujoco.MjModel, gid: int) -> np.ndarray:
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return data.geom_xpos[gid] + (signs * model.geom_size[gid]) @ data.geom_xmat[gid].reshape(3, 3).T


def ground_needs(
    lib: MotionLibrary, motion_id: int, model: mujoco.MjModel, contact_height: float = DEFAULT_CONTACT_HEIGHT
) -> GroundNeeds:
    """The ground wrench motion ``motion_id`` of ``lib`` needs on ``model``, frame by frame (see the module doc).

    Velocities and accelerations are central differences of the frames the env plays (the library's, after its
    height fix), by ``mj_differentiatePos``, with the velocities smoothed over time by the library's own Gaussian
    (``velocity_smoothing`` frames): raw second differences of 30 fps mocap are mostly jitter.
    """
    model = _without_contacts(model)
    data = mujoco.MjData(model)
    feet = [model.geom(name).id for name in FOOT_GEOMS]
    weight = float(model.body_subtreemass[1]) * 9.81
    friction = float(model.geom_friction[feet[0], 0])  # sliding friction of the soles, as the MJCF sets it
    f0, n, fps = int(lib.frame_start[motion_id]), int(lib.num_frames[motion_id]), float(lib.fps[motion_id])
    rot = lib.body_rot[f0 : f0 + n, 0].double().numpy()  # xyzw -> MuJoCo's wxyz
    root = lib.body_pos[f0 : f0 + n, 0].double().numpy()
    q = np.concatenate([root, rot[:, 3:4], rot[:, :3], lib.dof_pos[f0 : f0 + n].double().numpy()], axis=1)
    v = np.zeros((n, model.nv))
    for i in range(n - 1):
        mujoco.mj_differentiatePos(model, v[i], 1.0 / fps, q[i], q[i + 1])
    if lib.velocity_smoothing > 0 and n > 2:  # the library's own filter, over this motion's n - 1 differences
        edges = torch.zeros(n - 1, dtype=torch.long), torch.full((n - 1,), n - 2, dtype=torch.long)
        v[: n - 1] = smooth_over_time(torch.from_numpy(v[: n - 1]), *edges, lib.velocity_smoothing).numpy()
    cop, vertical, shortfall = np.full(n, np.nan), np.zeros(n), np.zeros(n)
    for i in range(1, n - 1):
        data.qpos[:], data.qvel[:] = q[i], 0.5 * (v[i - 1] + v[i])
        data.qacc[:] = (v[i] - v[i - 1]) * fps
        mujoco.mj_inverse(model, data)
        force = data.qfrc_inverse[:3].copy()
        vertical[i] = force[2] / weight
        torque = data.xmat[1].reshape(3, 3) @ data.qfrc_inverse[3:6]  # the free joint's moment is pelvis-local
        corners = np.concatenate([_box_corners(data, model, g) for g in feet])
        down = corners[corners[:, 2] < contact_height]
        if len(down) == 0:
            shortfall[i] = float(np.linalg.norm(force)) / weight
            continue
        push = max(force[2], 0.0)
        shortfall[i] = (max(-force[2], 0.0) + max(np.hypot(force[0], force[1]) - friction * push, 0.0)) / weight
        if force[2] <= 0:
            cop[i] = np.inf
            continue
        o = q[i, :3]  # the moment is about the pelvis origin: shift it to the floor plane z = 0
        px = o[0] - (torque[1] + o[2] * force[0]) / force[2]
        py = o[1] + (torque[0] - o[2] * force[1]) / force[2]
        point = np.array([px, py])
        cop[i] = hull_distance(down[:, :2], point)
    return GroundNeeds(cop, vertical, shortfall)


def _without_contacts(model: mujoco.MjModel) -> mujoco.MjModel:
    """A copy of ``model`` with contacts disabled: the ground force is the unknown, not a simulated contact."""
    out = copy.copy(model)
    out.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    return out


def median3(x: np.ndarray) -> np.ndarray:
    """3-frame running median (NaN-aware; NaN where all three are): second differences make single frames noisy."""
    windows = (x[max(0, i - 1) : i + 2] for i in range(len(x)))
    return np.array([np.nan if np.isnan(w).all() else np.nanmedian(w) for w in windows])


def infeasible_frames(
    needs: GroundNeeds,
    cop_tolerance: float = DEFAULT_COP_TOLERANCE,
    force_tolerance: float = DEFAULT_FORCE_TOLERANCE,
) -> np.ndarray:
    """``[T]`` bool: frames whose 3-frame median needs a moment beyond ``cop_tolerance`` metres of CoP offset at
    one body weight (:meth:`GroundNeeds.unbalanced_moment`) or a force shortfall beyond ``force_tolerance``."""
    bad = (median3(needs.unbalanced_moment()) > cop_tolerance) | (median3(needs.shortfall) > force_tolerance)
    bad[[0, -1]] = False  # no central difference there: nothing is known about them
    return bad


def stretches(bad: np.ndarray, moment: np.ndarray) -> List[Stretch]:
    """Runs of consecutive ``bad`` frames, in order, each with the largest ``moment`` among them."""
    out: List[Stretch] = []
    idx = np.flatnonzero(bad)
    if len(idx) == 0:
        return out
    breaks = np.flatnonzero(np.diff(idx) > 1)
    for first, last in zip(np.r_[idx[0], idx[breaks + 1]], np.r_[idx[breaks], idx[-1]]):
        out.append(Stretch(int(first), int(last), float(moment[first : last + 1].max())))
    return out


def dynamics_findings(
    lib: MotionLibrary,
    model: mujoco.MjModel,
    contact_height: float = DEFAULT_CONTACT_HEIGHT,
    cop_tolerance: float = DEFAULT_COP_TOLERANCE,
    force_tolerance: float = DEFAULT_FORCE_TOLERANCE,
    max_listed: int = 3,
) -> List[Tuple[int, str]]:
    """``(motion_id, text)`` for every motion of ``lib`` with frames the feet cannot give the forces for."""
    found = []
    for mid in range(lib.num_motions):
        needs = ground_needs(lib, mid, model, contact_height)
        bad = infeasible_frames(needs, cop_tolerance, force_tolerance)
        runs = stretches(bad, needs.unbalanced_moment())
        if not runs:
            continue
        fps = float(lib.fps[mid])
        worst = sorted(runs, key=lambda s: (s.last - s.first, s.worst_moment), reverse=True)[:max_listed]
        listed = ", ".join(
            f"{s.first / fps:.2f}-{s.last / fps:.2f} s"
            + (f" (CoP up to {s.worst_moment:.2f} m off at body weight)" if s.worst_moment > cop_tolerance else "")
            for s in sorted(worst, key=lambda s: s.first)
        )
        more = f" and {len(runs) - len(worst)} shorter" if len(runs) > len(worst) else ""
        found.append((mid, f"{int(bad.sum())} of {len(bad) - 2} frames need ground forces the feet cannot give on "
                           f"this skeleton, in {len(runs)} stretch(es): {listed}{more}; a tracker has to leave the "
                           "reference there"))  # fmt: skip
    return found
