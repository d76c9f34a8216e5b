"""Footstep planning, analytic leg IK and the pelvis + legs of the synthetic motions.

Everything works on time series of float64 torch tensors (``T`` frames) and xyzw quaternions relative to the
T-pose, world z up. :func:`plan_foot` plans a foot as its ankle body: flat or rolling over its fixed toe tip while
it bears weight (never sliding), swinging along the path in between. :func:`solve_leg` gives hip / knee / ankle
rotations by exact two-link IK (the knee only flexes, about y); :func:`lower_body` puts it all together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_conjugate, quat_from_axis_angle, quat_mul, quat_rotate
from phc_lightning.motion.synthetic.gait_plan import (
    balance_xy,
    ballistic_height,
    extend_times,
    min_jerk,
    running_height,
    smooth,
)

Tensor = torch.Tensor
DTYPE = torch.float64
# times [K] -> (planar path position [K, 2], heading [K]); must accept times outside the clip (planning looks ahead).
PathFn = Callable[[Tensor], Tuple[Tensor, Tensor]]


# ----------------------------------------------------------------------------------------------- small helpers
def offset(name: str) -> Tensor:
    """Rest offset ``[3]`` of body ``name`` relative to its parent."""
    return torch.tensor(skeleton.OFFSETS[skeleton.BODY_INDEX[name]], dtype=DTYPE)


def axis_quat(axis: int, angle: Tensor) -> Tensor:
    """Rotation ``[..., 4]`` by ``angle [...]`` about the world/parent axis 0 (x), 1 (y) or 2 (z)."""
    unit = torch.zeros(angle.shape + (3,), dtype=angle.dtype)
    unit[..., axis] = 1.0
    return quat_from_axis_angle(unit, angle)


def quat_from_matrix(m: Tensor) -> Tensor:
    """xyzw quaternions from rotation matrices ``[..., 3, 3]`` (Shepperd: use the best-conditioned pivot)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Each candidate equals 4 * q * (its pivot component), so any of them normalizes to q.
    cands = torch.stack(
        [
            torch.stack([m21 - m12, m02 - m20, m10 - m01, 1.0 + m00 + m11 + m22], -1),
            torch.stack([1.0 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], -1),
            torch.stack([m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21, m02 - m20], -1),
            torch.stack([m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22, m10 - m01], -1),
        ],
        -2,
    )
    pivots = torch.stack([m00 + m11 + m22, m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11], -1)
    best = pivots.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    return q / q.norm(dim=-1, keepdim=True)


def _triad(main: Tensor, side: Tensor) -> Tensor:
    """Orthonormal frame (columns) whose first axis is ``main`` and second lies in the (main, side) plane."""
    e1 = main / main.norm(dim=-1, keepdim=True)
    e2 = side - (side * e1).sum(-1, keepdim=True) * e1
    e2 = e2 / e2.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], dim=-1)


def align_rotation(src_main: Tensor, src_side: Tensor, dst_main: Tensor, dst_side: Tensor) -> Tensor:
    """Rotation taking direction ``src_main`` exactly onto ``dst_main`` and ``src_side`` as close as possible
    to ``dst_side`` (all ``[..., 3]``, broadcast); xyzw ``[..., 4]``."""
    a, b = _triad(src_main, src_side), _triad(dst_main, dst_side)
    a, b = torch.broadcast_tensors(a, b)
    # b @ a^T written out as a sum so the result does not depend on BLAS kernels (byte-identical output).
    m = (b[..., :, :, None] * a.transpose(-1, -2)[..., None, :, :]).sum(-2)
    return quat_from_matrix(m)


def yaw_frame(heading: Tensor) -> Tuple[Tensor, Tensor]:
    """Unit forward and left vectors ``[..., 3]`` of a heading angle."""
    c, s, zero = torch.cos(heading), torch.sin(heading), torch.zeros_like(heading)
    return torch.stack([c, s, zero], -1), torch.stack([-s, c, zero], -1)


# ----------------------------------------------------------------------------------------------- footsteps
@dataclass
class Gait:
    """Periodic stepping schedule (both feet, the second half a period after the first).

    Attributes:
        period: stride period, seconds (one step of each foot).
        duty: fraction of the period each foot is on the ground (> 0.5 walks, < 0.5 has flight phases).
        first_swing: time the leading foot lifts for the first time, seconds.
        lead: ``"L"`` or ``"R"``, the foot that steps first.
        lift: apex height of the foot during a full swing, metres.
        heel_off: foot pitch (heel up, radians) reached at toe-off by rolling over the toe tip.
        roll: fraction of each stance spent rolling from flat onto the toe tip.
    """

    period: float
    duty: float
    first_swing: float
    lead: str = "R"
    lift: float = 0.08
    heel_off: float = 0.5
    roll: float = 0.4


@dataclass
class Stance:
    """Where a foot stands relative to the pelvis path, in the heading frame.

    Attributes:
        dx: forward shift of the foot from its rest position under the hip, metres.
        extra_width: lateral shift away from the body's midline, metres.
        toe_out: outward yaw of the foot, radians.
    """

    dx: float = 0.0
    extra_width: float = 0.0
    toe_out: float = 0.08


@dataclass
class FootTrack:
    """Planned ankle body of one foot over ``T`` frames.

    Attributes:
        ankle_pos: world position of the ankle origin ``[T, 3]``.
        rot: global rotation of the ankle body (= the foot) ``[T, 4]`` xyzw.
        yaw: foot yaw ``[T]``, radians.
        contact: 1.0 while the foot bears weight (flat or rolling over its toe tip), 0.0 in swing ``[T]``.
    """

    ankle_pos: Tensor
    rot: Tensor
    yaw: Tensor
    contact: Tensor


def _toe_tip(side: str) -> Tensor:
    """Front-bottom edge of the toe box relative to the ankle origin in the rest pose ``[3]`` (roll-off pivot)."""
    return offset(f"{side}_Toe") + torch.tensor([0.05, 0.0, -skeleton.TOE_SOLE_DEPTH], dtype=DTYPE)


def _even_progress(foothold: Callable[[Tensor], Tuple[Tensor, Tensor]], m0: float, m1: float, frac: Tensor) -> Tensor:
    """Path times between ``m0`` and ``m1`` at which the foot has covered ``frac`` of its own travel.

    The path may speed up or slow down between two footholds (the clip's start); following it evenly in
    travelled distance keeps the swing foot's speed profile the one asked for. Yaw counts 5 cm per radian so a
    pure turn on the spot still progresses.
    """
    grid = torch.linspace(m0, m1, 65, dtype=DTYPE)
    ground, yaw = foothold(grid)
    step = (ground[1:] - ground[:-1]).norm(dim=-1) + 0.05 * (yaw[1:] - yaw[:-1]).abs()
    travel = torch.cat([torch.zeros(1, dtype=DTYPE), step.cumsum(0)])
    return torch.from_numpy(np.interp(frac.numpy(), (travel / travel[-1]).numpy(), grid.numpy()))


def plan_foot(times: Tensor, path: PathFn, side: str, stance: Stance, gait: Optional[Gait] = None) -> FootTrack:
    """Plan one foot: planted flat, rolling over the toe tip before each swing, swinging along the path and
    landing flat.

    Each stance plants the foot where the pelvis path will be halfway through that stance (offset sideways by
    the rest hip width), so steps follow any path - straight, curved or turning in place. A foot is placed by
    a path time ``m``: standing means ``m`` is constant; a swing moves ``m`` from one foothold's time to the
    next with a smooth-step profile, so the foot follows the path's curvature instead of cutting the chord.
    While the foot bears weight it lies flat or turns about its fixed toe tip, so it never slides. Swings whose
    two footholds are within 1 cm and 3 degrees are dropped (the foot stays).

    Args:
        times: frame times ``[T]``, seconds.
        path: the pelvis path, see :data:`PathFn`.
        side: ``"L"`` or ``"R"``.
        stance: foot placement relative to the path.
        gait: stepping schedule; ``None`` keeps the foot planted for the whole clip.
    """
    sign = 1.0 if side == "L" else -1.0
    rest = offset(f"{side}_Hip") + offset(f"{side}_Knee") + offset(f"{side}_Ankle")
    local = torch.tensor([rest[0] + stance.dx, rest[1] + sign * stance.extra_width], dtype=DTYPE)

    def foothold(m: Tensor) -> Tuple[Tensor, Tensor]:
        """Ankle ground point ``[K, 2]`` and foot yaw ``[K]`` for path times ``m``."""
        xy, heading = path(m)
        fwd, left = yaw_frame(heading)
        return xy + local[0] * fwd[:, :2] + local[1] * left[:, :2], heading + sign * stance.toe_out

    m, lift, pitch = (torch.zeros_like(times) for _ in range(3))  # foothold path time, swing lift, foot pitch
    contact = torch.ones_like(times)
    if gait is not None:
        first = gait.first_swing + (0.0 if side == gait.lead else 0.5 * gait.period)
        count = max(0, int(math.ceil((float(times[-1]) - first) / gait.period)))
        starts = first + gait.period * torch.arange(count, dtype=DTYPE)
        swing = (1.0 - gait.duty) * gait.period
        stance_time = gait.duty * gait.period
        # The first foothold is where the foot stands when the clip starts (at the latest).
        first_mid = min(first - 0.5 * stance_time, float(times[0]))
        mids = torch.cat([torch.tensor([first_mid], dtype=DTYPE), starts + swing + 0.5 * stance_time])
        plants, yaws = foothold(mids)
        m[:] = mids[0]
        cur = 0
        for k in range(count):
            s, e = float(starts[k]), float(starts[k]) + swing
            dist = float((plants[k + 1] - plants[cur]).norm())
            turn = abs(float(yaws[k + 1] - yaws[cur]))
            if dist < 0.01 and turn < math.radians(3.0):
                continue  # nothing to step for: keep standing on the current foothold
            # Short steps (starting off, turning on the spot) lift and roll the foot less than full strides.
            scale = min(1.0, (0.03 + 0.3 * dist + 0.05 * turn) / max(gait.lift, 1e-6))
            roll_time = gait.roll * stance_time
            roll_start = max(s - roll_time, min(s, 0.1))  # the clip starts flat-footed: maybe a shorter roll
            off = gait.heel_off * min(1.0, dist / 0.8) * (s - roll_start) / roll_time
            rolling = (times >= roll_start) & (times < s)
            pitch[rolling] = (off * min_jerk((times - roll_start) / max(s - roll_start, 1e-6)))[rolling]
            tau = ((times - s) / swing).clamp(0.0, 1.0)
            after = times >= s
            # A cubic (not minimum-jerk) progress profile gets the foot going sooner after toe-off.
            progress = _even_progress(foothold, float(mids[cur]), float(mids[k + 1]), tau * tau * (3.0 - 2.0 * tau))
            m[after] = progress[after]
            # sin(pi tau): the foot leaves and reaches the floor at once (no skimming while it moves on).
            in_air = after & (times < e)
            lift[in_air] = (scale * gait.lift * torch.sin(math.pi * tau))[in_air]
            # Toe-down after push-off, flat again before landing.
            pitch[in_air] = (off * (1.0 - min_jerk(tau / 0.85)))[in_air]
            pitch[times >= e] = 0.0
            contact[in_air] = 0.0
            cur = k + 1
    ground, yaw = foothold(m)
    rot = quat_mul(axis_quat(2, yaw), axis_quat(1, pitch))
    # The toe tip is the pivot: it sits at the foothold (raised by the swing lift) and the ankle hangs off it.
    tip = _toe_tip(side).expand(times.shape + (3,))
    tip_pos = torch.cat([ground + quat_rotate(axis_quat(2, yaw), tip)[:, :2], lift[:, None]], -1)
    ankle_pos = tip_pos - quat_rotate(rot, tip)
    return FootTrack(ankle_pos=ankle_pos, rot=rot, yaw=yaw, contact=contact)


# ----------------------------------------------------------------------------------------------- leg IK
def _knee_constants(side: str) -> Tuple[float, float, float, float]:
    """(C0, rho, phi, |k|^2 + |a|^2) of ``|k + Ry(theta) a|^2 = K + 2 (C0 + rho cos(theta - phi))``."""
    k, a = offset(f"{side}_Knee"), offset(f"{side}_Ankle")
    c1 = float(k[0] * a[0] + k[2] * a[2])
    c2 = float(k[0] * a[2] - k[2] * a[0])
    return float(k[1] * a[1]), math.hypot(c1, c2), math.atan2(c2, c1), float(k.dot(k) + a.dot(a))


def leg_reach(side: str, knee_min: Union[float, Tensor]) -> Tensor:
    """Hip-to-ankle distance with the knee flexed by ``knee_min`` radians (its longest allowed reach)."""
    c0, rho, phi, kk = _knee_constants(side)
    return torch.sqrt(kk + 2.0 * (c0 + rho * torch.cos(torch.as_tensor(knee_min, dtype=DTYPE) - phi)))


def max_pelvis_height(
    side: str, pelvis_xy: Tensor, pelvis_rot: Tensor, ankle_pos: Tensor, knee_min: Union[float, Tensor]
) -> Tensor:
    """Highest pelvis height ``[T]`` at which the leg still reaches its ankle target with the knee >= knee_min.

    Raises:
        ValueError: the foot is horizontally out of reach in some frame (a planning bug, not bad input).
    """
    hip = quat_rotate(pelvis_rot, offset(f"{side}_Hip").expand(pelvis_rot.shape[:-1] + (3,)))
    reach = leg_reach(side, knee_min).expand(pelvis_xy.shape[:1])
    horiz = (pelvis_xy + hip[:, :2] - ankle_pos[:, :2]).norm(dim=-1)
    if bool((horiz >= reach).any()):
        f = int(torch.nonzero(horiz >= reach)[0])
        raise ValueError(f"{side} foot out of reach at frame {f}: {float(horiz[f]):.3f} m >= {float(reach[f]):.3f} m")
    return ankle_pos[:, 2] - hip[:, 2] + torch.sqrt(reach**2 - horiz**2)


def solve_leg(
    side: str,
    pelvis_pos: Tensor,
    pelvis_rot: Tensor,
    foot: FootTrack,
    knee_dir: Tensor,
    knee_min: Union[float, Tensor] = 0.0,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hip, knee and ankle local rotations ``[T, 4]`` that put the ankle body at ``foot``'s pose.

    The knee flexes about its local y axis only (>= ``knee_min`` beyond the rest pose); the thigh twist is
    chosen so that the knee's hinge axis points along ``knee_dir`` (the foot's left, so the knee tracks
    over the toes); the ankle takes whatever rotation keeps the foot at ``foot.rot``.

    Returns:
        ``(hip_local, knee_local, ankle_local, miss)`` where ``miss [T]`` is the ankle position error, metres
        (0 unless the target was out of reach).
    """
    hip_off, k, a = offset(f"{side}_Hip"), offset(f"{side}_Knee"), offset(f"{side}_Ankle")
    hip = pelvis_pos + quat_rotate(pelvis_rot, hip_off.expand_as(pelvis_pos))
    leg = foot.ankle_pos - hip
    dist = leg.norm(dim=-1)
    c0, rho, phi, kk = _knee_constants(side)
    longest = torch.cos(torch.as_tensor(knee_min, dtype=DTYPE) - phi)
    cos_arg = torch.minimum(((0.5 * (dist**2 - kk) - c0) / rho).clamp(min=-1.0), longest)
    theta = phi + torch.acos(cos_arg)
    knee = axis_quat(1, theta)
    leg_local = k + quat_rotate(knee, a.expand_as(leg))
    y_axis = torch.tensor([0.0, 1.0, 0.0], dtype=DTYPE).expand_as(leg)
    hip_global = align_rotation(leg_local, y_axis, leg, knee_dir)
    miss = (hip + quat_rotate(hip_global, leg_local) - foot.ankle_pos).norm(dim=-1)
    hip_local = quat_mul(quat_conjugate(pelvis_rot), hip_global)
    ankle_local = quat_mul(quat_conjugate(quat_mul(hip_global, knee)), foot.rot)
    return hip_local, knee, ankle_local, miss


# ----------------------------------------------------------------------------------------------- pelvis + legs
def yaw_roll_pitch(yaw: Tensor, roll: Tensor, pitch: Tensor) -> Tensor:
    """Heading yaw, then roll about the body's forward axis, then pitch (forward lean > 0) about its left axis."""
    return quat_mul(quat_mul(axis_quat(2, yaw), axis_quat(0, roll)), axis_quat(1, pitch))


def lower_body(
    times: Tensor,
    path: PathFn,
    gait: Optional[Gait],
    stance: Stance,
    height: Tensor,
    pitch: Tensor,
    knee_min: Union[float, Tensor],
    sway: float = 0.0,
    roll_amp: float = 0.0,
    yaw_amp: float = 0.0,
    lean: Optional[Tensor] = None,
    shift: Optional[Tensor] = None,
    dip: Optional[Tensor] = None,
    first_shift: Optional[float] = None,
    zsmooth: float = 3.0,
    zsmooth_iters: int = 4,
) -> Dict[str, Tensor]:
    """Pelvis trajectory and leg rotations for a path and a gait.

    Args:
        height: pelvis height target ``[T]``; the result is lowered wherever the legs cannot reach.
        pitch: pelvis forward tilt ``[T]``, radians.
        knee_min: least knee flexion beyond the rest pose, radians, scalar or ``[T]`` (sets the longest leg).
        sway: lateral pelvis shift toward the supporting foot, metres.
        roll_amp: pelvis list (swing side drops), radians.
        yaw_amp: pelvis yaw toward the forward leg, radians.
        lean: extra pelvis roll ``[T]`` (into a turn), radians.
        shift: ``[T, 2]`` extra pelvis offset in the heading frame (forward, left), metres.
        dip: ``[T]`` pelvis lowering while a foot is down (ignored on the balance plan with flight), metres.
        first_shift: if given (with a gait), the pelvis follows a balance plan (:mod:`~.gait_plan`; ballistic
            height with flight) keeping the needed CoP on the feet, the weight moving onto the stance foot over
            ``first_shift`` s before the first lift-off; ``shift`` is then the pelvis offset from the COM.

    Returns:
        Dict with ``root_pos [T, 3]``, ``pelvis_rot [T, 4]``, ``heading [T]``, ``stride [T]`` (right-minus-left
        foot fore-aft offset, about +-1 at full strides) and the local rotation ``[T, 4]`` of each leg body by name.
    """
    fps = 1.0 / float(times[1] - times[0])
    xy, heading = path(times)
    n = times.shape[0]
    balanced = first_shift is not None and gait is not None
    # A balance plan must see the steps after the clip's end: plan the feet further (the clip's part is the same).
    ext = extend_times(times, 1.5)[0] if balanced else times
    ahead = {s: plan_foot(ext, path, s, stance, gait) for s in "LR"}
    feet = {s: FootTrack(*(x[:n] for x in (f.ankle_pos, f.rot, f.yaw, f.contact))) for s, f in ahead.items()}
    fwd, left = yaw_frame(heading)
    support = smooth(feet["L"].contact - feet["R"].contact, 0.1 * fps)  # +1 on the left foot .. -1 on the right
    stride = smooth(((feet["R"].ankle_pos - feet["L"].ankle_pos) * fwd).sum(-1), 2.0) / 0.7
    pelvis_xy = xy + sway * support[:, None] * left[:, :2]
    if shift is not None and not balanced:
        pelvis_xy = pelvis_xy + shift[:, :1] * fwd[:, :2] + shift[:, 1:] * left[:, :2]
    roll = roll_amp * support + (lean if lean is not None else 0.0)
    pelvis_rot = yaw_roll_pitch(heading + yaw_amp * stride.clamp(-1.2, 1.2), roll, pitch)
    if dip is not None:
        height = height - dip * smooth((feet["L"].contact + feet["R"].contact).clamp(max=1.0), 0.05 * fps)
    running = balanced and gait.duty < 0.5  # flight: the pelvis falls freely in flight, springs off in stance
    down = (ahead["L"].contact + ahead["R"].contact).clamp(max=1.0)
    profile, root_z = ballistic_height(down, 1.0 / fps) if running else None, height
    for _ in range(3 if balanced else 1):
        if balanced:
            tips = {s: f.ankle_pos + quat_rotate(f.rot, _toe_tip(s).expand_as(f.ankle_pos)) for s, f in ahead.items()}
            pelvis_xy = balance_xy(ext, ahead, tips, float(first_shift), root_z, xy[0])[:n]
            if shift is not None:
                pelvis_xy = pelvis_xy + shift[:, :1] * fwd[:, :2] + shift[:, 1:] * left[:, :2]
        limit = torch.minimum(*(max_pelvis_height(s, pelvis_xy, pelvis_rot, feet[s].ankle_pos, knee_min) for s in "LR"))
        if running:
            root_z = running_height(profile, down, limit, float(height[0]), 1.0 / fps)[:n]
            continue
        # Blur the capped target (kinks at double support) under the cap: gentle sinks, no huge vertical forces.
        root_z = height
        for _ in range(zsmooth_iters if balanced else 1):
            root_z = smooth(torch.minimum(root_z, limit - 0.006), zsmooth if balanced else 1.5)
        root_z = torch.minimum(root_z, limit)
    out = {
        "root_pos": torch.cat([pelvis_xy, root_z[:, None]], -1),
        "pelvis_rot": pelvis_rot,
        "heading": heading,
        "stride": stride,
    }
    for s in "LR":
        foot = feet[s]
        # Knees track over the toes, nudged toward the pelvis heading.
        knee_dir = 0.7 * yaw_frame(foot.yaw)[1] + 0.3 * yaw_frame(heading)[1]
        hip, knee, ankle, miss = solve_leg(s, out["root_pos"], pelvis_rot, foot, knee_dir, knee_min)
        if float(miss.max()) > 1e-6:
            raise RuntimeError(f"{s} leg misses its foot target by {float(miss.max()):.4f} m")
        out.update({f"{s}_Hip": hip, f"{s}_Knee": knee, f"{s}_Ankle": ankle})
    return out
