"""Can the humanoid follow a motion at all? Inverse dynamics of the reference on this skeleton and its masses.

``mujoco.mj_inverse`` gives, per frame, the force and moment the floor would have to apply to the pelvis' free
joint to produce the reference's accelerations (contacts off, so the whole ground wrench is what is solved for).
A frame is *feasible* when the feet can give it: the vertical force pushes (never pulls), the horizontal force is
inside the friction cone, and its centre of pressure (CoP) lies inside the support polygon: the foot-box corners
that bear weight (:class:`ContactRule`: near the local floor and slow) in the frame or its two neighbours, which
its central difference spans. In flight (no corner near the floor) the feet give nothing: what the flight itself
needs is a shortfall, not the take-off and landing pushes the velocity smoothing spreads into it
(:func:`flight_forces`).

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
DEFAULT_COP_TOLERANCE = 0.03  # m beyond the support polygon: finite-difference accelerations are noisy
DEFAULT_FORCE_TOLERANCE = 0.05  # body weights of pull, friction excess or force in flight


@dataclass(frozen=True)
class ContactRule:
    """Which foot-box corners bear weight in a frame (:func:`support_corners`).

    Real mocap on the mean-shape skeleton does not keep its feet on the floor: after the library's height fix (the
    motion's lowest sole at z = 0) the stance feet of the ACCAD walks float 0-8 cm, with the pose, and the two
    feet of one double support differ by up to 6 cm. Height alone cannot tell stance from swing there (the
    swinging toe passes within 1 cm of the stance foot's height); speed can, as in gait-event detection.

    Attributes:
        band: m above the local floor (the lowest foot corner within ``window`` s) within which a corner may bear
            weight; a flight needs every corner beyond it. The walks' stance corners reach 5.6 cm above it (the
            other foot's heel strike 6 cm lower), the feet of the ACCAD hop 13 cm.
        window: s either side of a frame over which the local floor is the lowest foot corner: a gait cycle has a
            stance foot within it, and the floor of the mocap drifts by centimetres along a clip.
        max_height: m above z = 0 beyond which no corner bears weight, however long it stays there, so a motion
            held off the floor is in flight throughout (the sole corners of the walks' stance feet reach 11 cm).
        slide_speed: m/s, the fastest a weight-bearing corner moves. Stance corners move <= 0.2 m/s, heel strikes
            and toe-offs 0.3-0.9 m/s by central differences at 30 fps, a swinging foot near the floor 1-4 m/s.
            When no corner near the floor is this slow (a slide, a fast landing), every near corner bears weight.
    """

    band: float = 0.08
    window: float = 0.5
    max_height: float = 0.12
    slide_speed: float = 1.0


@dataclass(frozen=True)
class GroundNeeds:
    """Per frame of one motion (``[T]``; the first and last frames, without central differences, are NaN / 0).

    Attributes:
        cop_outside: distance (m) of the needed CoP outside the support polygon, negative inside; NaN in flight,
            inf when the needed vertical force pulls.
        vertical: the needed vertical force, in body weights.
        shortfall: force the feet cannot give, in body weights: pull, excess over the friction cone, or (in
            flight, beyond the take-off and landing forces the smoothing spreads into it) the whole needed force.
        flight: no corner bears weight (:func:`support_corners`).
    """

    cop_outside: np.ndarray
    vertical: np.ndarray
    shortfall: np.ndarray
    flight: np.ndarray

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


def support_corners(corners: np.ndarray, fps: float, rule: ContactRule = ContactRule()) -> np.ndarray:
    """``[T, K]`` bool: which of the foot corners ``corners [T, K, 3]`` (world, z up) bear weight in each frame.

    A corner is near the floor within ``rule.band`` of the local floor (the lowest corner within ``rule.window`` s)
    and at most ``rule.max_height`` above z = 0. The near corners that move at most ``rule.slide_speed`` bear
    weight; when none is that slow, every near corner does. A frame without a near corner is a flight.
    """
    num = len(corners)
    z = corners[..., 2]
    lowest = z.min(1)
    w = max(int(round(rule.window * fps)), 0)
    floor = np.array([lowest[max(0, t - w) : t + w + 1].min() for t in range(num)])
    near = z <= np.minimum(floor + rule.band, rule.max_height)[:, None]
    speed = np.linalg.norm(np.gradient(corners, axis=0), axis=-1) * fps if num > 1 else np.zeros(z.shape)
    slow = near & (speed <= rule.slide_speed)
    return np.where(slow.any(1, keepdims=True), slow, near)


def flight_forces(raw: np.ndarray, flight: np.ndarray, sigma: float) -> np.ndarray:
    """``[T, 3]`` the part of the needed forces in flight that the flight itself asks for.

    The played accelerations are the raw ones smoothed by the library's Gaussian (``sigma`` frames), and the
    force is (nearly) linear in them, so the force a smoothed flight frame needs is the Gaussian-weighted sum of
    the raw forces around it. The take-off and landing pushes the smoothing spreads into a flight are the
    supported frames' share of that sum: dropping it keeps ``raw`` (the forces from unsmoothed central
    differences) of the flight frames only. A flight frame next to a supported one has the take-off or landing
    in its own central difference, so it counts as a supported one. A ballistic flight needs no force; a motion
    held off the floor needs its weight throughout.
    """
    inner = flight.copy()
    inner[1:] &= flight[:-1]
    inner[:-1] &= flight[1:]
    own = np.where(inner[:, None], raw, 0.0)
    if sigma <= 0 or len(raw) < 2:
        return own
    first, last = torch.zeros(len(raw), dtype=torch.long), torch.full((len(raw),), len(raw) - 1, dtype=torch.long)
    return smooth_over_time(torch.from_numpy(own), first, last, sigma).numpy()


def ground_needs(
    lib: MotionLibrary, motion_id: int, model: mujoco.MjModel, rule: ContactRule = ContactRule()
) -> GroundNeeds:
    """The ground wrench motion ``motion_id`` of ``lib`` needs on ``model``, frame by frame (see the module doc).

    Velocities and accelerations are central differences of the frames the env plays (the library's, after its
    height fix), by ``mj_differentiatePos``, with the velocities smoothed over time by the library's own Gaussian
    (``velocity_smoothing`` frames): raw second differences of 30 fps mocap are mostly jitter. The feet bear weight
    by ``rule`` (:func:`support_corners`).
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
    v_raw = v.copy()
    if lib.velocity_smoothing > 0 and n > 2:  # the library's own filter, over this motion's n - 1 differences
        edges = torch.zeros(n - 1, dtype=torch.long), torch.full((n - 1,), n - 2, dtype=torch.long)
        v[: n - 1] = smooth_over_time(torch.from_numpy(v[: n - 1]), *edges, lib.velocity_smoothing).numpy()
    corners = np.zeros((n, 8 * len(feet), 3))
    force, torque = np.zeros((n, 3)), np.zeros((n, 3))
    for i in range(n):
        data.qpos[:] = q[i]
        if 0 < i < n - 1:
            data.qvel[:] = 0.5 * (v[i - 1] + v[i])
            data.qacc[:] = (v[i] - v[i - 1]) * fps
            mujoco.mj_inverse(model, data)
            force[i] = data.qfrc_inverse[:3]
            torque[i] = data.xmat[1].reshape(3, 3) @ data.qfrc_inverse[3:6]  # the free joint's moment is local
        else:  # no central difference at the ends, but their corners time the neighbours' speeds
            mujoco.mj_kinematics(model, data)
        corners[i] = np.concatenate([_box_corners(data, model, g) for g in feet])
    support = support_corners(corners, fps, rule)
    flight = ~support.any(1)
    raw = np.zeros((n, 3))  # the flight frames' force from raw central differences
    for i in np.flatnonzero(flight[1:-1]) + 1:
        data.qpos[:], data.qvel[:] = q[i], 0.5 * (v_raw[i - 1] + v_raw[i])
        data.qacc[:] = (v_raw[i] - v_raw[i - 1]) * fps
        mujoco.mj_inverse(model, data)
        raw[i] = data.qfrc_inverse[:3]
    in_flight = np.linalg.norm(flight_forces(raw, flight, lib.velocity_smoothing), axis=1) / weight
    cop, shortfall = np.full(n, np.nan), np.zeros(n)
    for i in range(1, n - 1):
        f = force[i]
        if flight[i]:
            shortfall[i] = in_flight[i]
            continue
        push = max(f[2], 0.0)
        shortfall[i] = (max(-f[2], 0.0) + max(np.hypot(f[0], f[1]) - friction * push, 0.0)) / weight
        if f[2] <= 0:
            cop[i] = np.inf
            continue
        o = q[i, :3]  # the moment is about the pelvis origin: shift it to the floor plane z = 0
        px = o[0] - (torque[i, 1] + o[2] * f[0]) / f[2]
        py = o[1] + (torque[i, 0] - o[2] * f[1]) / f[2]
        # A central difference spans frames i - 1..i + 1, so its wrench may push from the feet of any of them
        # (a toe-off or heel strike between two frames): their support corners together make the polygon.
        span = slice(i - 1, i + 2)
        cop[i] = hull_distance(corners[span][support[span]][:, :2], np.array([px, py]))
    vertical = force[:, 2] / weight
    return GroundNeeds(cop, vertical, shortfall, flight)


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
    rule: ContactRule = ContactRule(),
    cop_tolerance: float = DEFAULT_COP_TOLERANCE,
    force_tolerance: float = DEFAULT_FORCE_TOLERANCE,
    max_listed: int = 3,
) -> List[Tuple[int, str]]:
    """``(motion_id, text)`` for every motion of ``lib`` with frames the feet cannot give the forces for."""
    found = []
    for mid in range(lib.num_motions):
        needs = ground_needs(lib, mid, model, rule)
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
