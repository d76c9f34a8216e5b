"""Balance planning for the stepping clips: where the centre of pressure goes and a centre of mass that puts it there.

A reference motion is only trackable by a physical humanoid if the ground can supply the forces it needs: the
centre of pressure (CoP, the zero-moment point) it implies must lie inside the support polygon of the feet in
contact. :func:`zmp_reference` places a desired CoP on the feet (under the loaded foot in single support, moving
from the trailing to the leading foot over each double support, weight shifted onto the stance foot before the
clip's first lift-off); :func:`plan_com` finds the horizontal centre-of-mass path whose linear-inverted-pendulum
CoP, ``x - z / (g + z'') x''``, follows it (least squares, so it anticipates: the pendulum slows over midstance
and speeds up at push-off, and it leans toward the stance foot before the swing foot lifts).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from phc_lightning.core.rotations import quat_rotate

Tensor = torch.Tensor
DTYPE = torch.float64
GRAVITY = 9.81
# Desired CoP on a flat foot: ahead of the ankle (mid rigid foot, heel -5 .. toe joint +12 cm); on a rolling
# foot: behind the toe tip it pivots over, inside the toe box.
FLAT_AHEAD = 0.035
TIP_BEHIND = 0.045
COM_ABOVE_PELVIS = 0.02  # walking: the centre of mass sits ~2 cm above the pelvis origin


def smooth(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur along dim 0 with standard deviation ``sigma`` frames, edges held constant."""
    if sigma <= 0:
        return x
    radius = int(math.ceil(3.0 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=DTYPE) / sigma) ** 2)
    k = k / k.sum()
    pad = torch.cat([x[:1].expand((radius,) + x.shape[1:]), x, x[-1:].expand((radius,) + x.shape[1:])])
    out = torch.zeros_like(x)
    for i in range(2 * radius + 1):
        out = out + k[i] * pad[i : i + x.shape[0]]
    return out


def min_jerk(s: Tensor) -> Tensor:
    """Minimum-jerk blend 0 -> 1 of ``s`` clamped to [0, 1]: zero velocity and acceleration at both ends."""
    s = s.clamp(0.0, 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s * s)


def support_share(contact_l: Tensor, contact_r: Tensor, dt: float, first_shift: float) -> Tensor:
    """Fraction ``[T]`` of the body weight on the left foot (NaN in flight).

    Single support puts all of it on the foot down. Over each double support it moves linearly from the foot
    about to lift to the other one; the double support the clip starts with (both feet down since frame 0)
    starts even and shifts only over its last ``first_shift`` seconds, a deliberate weight shift before the
    first step.
    """
    cl, cr = contact_l.numpy() > 0.5, contact_r.numpy() > 0.5
    n = len(cl)
    share = np.full(n, np.nan)
    share[cl & ~cr] = 1.0
    share[cr & ~cl] = 0.0
    both = cl & cr
    i = 0
    while i < n:
        if not both[i]:
            i += 1
            continue
        a = i
        while i < n and both[i]:
            i += 1
        b = i  # first frame past this double support
        start = 0.5 if a == 0 else (share[a - 1] if not np.isnan(share[a - 1]) else 0.5)
        if b >= n:  # the horizon ends in double support: nothing to shift toward
            share[a:b] = start
            continue
        end = 1.0 if cl[b] else 0.0  # the foot still down afterwards takes the weight
        span = b - a if a > 0 else min(b - a, max(1, int(round(first_shift / dt))))
        ramp = np.clip((np.arange(a, b) - (b - span) + 1.0) / span, 0.0, 1.0)
        share[a:b] = start + (end - start) * ramp
    return torch.from_numpy(share)


def foot_support_point(ankle_pos: Tensor, rot: Tensor, tip: Tensor) -> Tensor:
    """Desired CoP ``[T, 2]`` under one foot: mid-foot while flat, moving onto the toe box as the heel lifts.

    Args:
        ankle_pos: ankle origin ``[T, 3]``; rot: foot rotation ``[T, 4]`` (xyzw); tip: toe tip (the roll pivot)
            in world coordinates ``[T, 3]``.
    """
    fwd = quat_rotate(rot, torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE).expand_as(ankle_pos))
    heel_up = (-fwd[:, 2] / 0.15).clamp(0.0, 1.0)[:, None]  # foot pitch ~0.15 rad: weight on the toes
    flat_dir = fwd[:, :2] / fwd[:, :2].norm(dim=-1, keepdim=True)
    flat = ankle_pos[:, :2] + FLAT_AHEAD * flat_dir
    toes = tip[:, :2] - TIP_BEHIND * flat_dir
    return (1.0 - heel_up) * flat + heel_up * toes


def zmp_reference(share: Tensor, point_l: Tensor, point_r: Tensor) -> Tensor:
    """Desired CoP ``[T, 2]``: the feet's support points weighted by the share of weight each carries."""
    s = torch.nan_to_num(share, nan=0.5)[:, None]
    return s * point_l + (1.0 - s) * point_r


def plan_com(
    times: Tensor,
    zmp: Tensor,
    share: Tensor,
    com_z: Tensor,
    start: Tensor,
    guide: Optional[Tensor] = None,
    guide_weight: float = 0.0,
    jerk_weight: float = 1.0,
) -> Tensor:
    """Horizontal centre-of-mass path ``[T, 2]`` whose pendulum CoP ``c - z/(g + z'') c''`` tracks ``zmp``.

    Solved in least squares over the whole (look-ahead) horizon: CoP errors weigh more in single support (a
    foot-sized polygon) than in double support (a wide one); in flight (``share`` NaN) the COM keeps its
    velocity. The COM starts at rest at ``start [2]``. ``guide [T, 2]`` optionally pulls the COM toward a path
    with ``guide_weight`` (keeps turning/stepping-in-place clips from drifting).
    """
    n = times.shape[0]
    dt = float(times[1] - times[0])
    z = com_z.numpy()
    zdd = np.zeros(n)
    zdd[1:-1] = (z[2:] - 2.0 * z[1:-1] + z[:-2]) / (dt * dt)
    coef = z / np.maximum(GRAVITY + zdd, 0.5)  # never divide by ~0 (flight is handled separately)
    s = share.numpy()
    flight = np.isnan(s)
    single = ~flight & ((s < 0.02) | (s > 0.98))
    rows = []
    rhs = []

    def add(cols: Dict[int, float], weight: float, target: np.ndarray) -> None:
        r = np.zeros(n)
        for c, v in cols.items():
            r[c] += v
        rows.append(weight * r)
        rhs.append(weight * target)

    p = zmp.numpy()
    x0 = start.numpy()
    for i in range(1, n - 1):
        k = coef[i] / (dt * dt)
        if flight[i]:
            add({i - 1: 1.0, i: -2.0, i + 1: 1.0}, 100.0, np.zeros(2))
        else:
            add({i - 1: -k, i: 1.0 + 2.0 * k, i + 1: -k}, 1.0 if single[i] else 0.3, p[i])
    for i in range(2, n - 1):  # a little jerk penalty: no frame-to-frame chatter
        add({i - 2: -1.0, i - 1: 3.0, i: -3.0, i + 1: 1.0}, jerk_weight, np.zeros(2))
    add({0: 1.0}, 100.0, x0)  # starts at rest where it stands
    add({0: -1.0, 1: 1.0}, 100.0, np.zeros(2))
    if guide is not None and guide_weight > 0.0:
        g = guide.numpy()
        for i in range(n):
            add({i: 1.0}, guide_weight, g[i])
    a = np.stack(rows)
    b = np.stack(rhs)
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return torch.from_numpy(sol)


def extend_times(times: Tensor, lookahead: float) -> Tuple[Tensor, int]:
    """Frame times continued ``lookahead`` seconds past the clip (the plan must see the steps to come)."""
    dt = float(times[1] - times[0])
    extra = int(math.ceil(lookahead / dt))
    more = times[-1] + dt * torch.arange(1, extra + 1, dtype=DTYPE)
    return torch.cat([times, more]), times.shape[0]


def balance_xy(
    times: Tensor, feet: Dict[str, Any], tips: Dict[str, Tensor], first_shift: float, pelvis_z: Tensor, start: Tensor
) -> Tensor:
    """Centre-of-mass path ``[T, 2]`` over the look-ahead ``times`` for planned feet (``FootTrack`` by side,
    toe tips ``[T, 3]`` by side); ``pelvis_z`` covers the clip (held after it), ``start [2]`` is where it stands."""
    dt = float(times[1] - times[0])
    share = support_share(feet["L"].contact, feet["R"].contact, dt, first_shift)
    points = {s: foot_support_point(f.ankle_pos, f.rot, tips[s]) for s, f in feet.items()}
    zmp = zmp_reference(share, points["L"], points["R"])
    z = torch.cat([pelvis_z, pelvis_z[-1:].expand(times.shape[0] - pelvis_z.shape[0])]) + COM_ABOVE_PELVIS
    return plan_com(times, zmp, share, z, start)


def ballistic_height(contact: Tensor, dt: float, shape: float = 0.3, settle: float = 0.2) -> Tensor:
    """Pelvis height profile ``[T]`` (relative to its start, at rest there) for a gait with flight phases.

    ``contact [T]`` is 1 while any foot is down. In flight the height falls freely (z'' = -g, so the ground
    needs to push nothing). Each stance pushes with a half-sine-like force ``g + z'' = P (shape + (1 - shape)
    sin(pi s))`` scaled so the body leaves with the take-off velocity that makes the next flight symmetric
    (v = g T_flight / 2): it decelerates the fall and re-launches, like a spring. The first stance (standing
    at the start) eases that push in over its last ``settle`` seconds.
    """
    c = contact.numpy() > 0.5
    n = len(c)
    acc = np.zeros(n)
    vel = 0.0
    i = 0
    while i < n:
        a = i
        while i < n and c[i] == c[a]:
            i += 1
        b = i  # run [a, b)
        if not c[a]:
            acc[a:b] = -GRAVITY
            vel -= GRAVITY * (b - a) * dt
            continue
        j = b
        while j < n and not c[j]:
            j += 1
        if b >= n or j >= n:  # no take-off within the horizon: come to rest
            v_out, span = 0.0, b - a
        else:
            v_out, span = 0.5 * GRAVITY * (j - b) * dt, b - a
        s = (np.arange(b - a) + 0.5) / span
        w = shape + (1.0 - shape) * np.sin(math.pi * s)
        r = np.ones(b - a)
        if a == 0:  # standing start: push only over the last `settle` seconds
            r = min_jerk(torch.from_numpy((np.arange(b - a) - (b - a - settle / dt)) / (settle / dt))).numpy()
        # sum r (-g + P w) dt = v_out - vel
        p = ((v_out - vel) / dt + GRAVITY * r.sum()) / max(float((r * w).sum()), 1e-9)
        acc[a:b] = r * (-GRAVITY + p * w)
        vel = v_out
    # Central second differences of z equal acc exactly (what a finite-difference inverse dynamics sees).
    v_half = np.cumsum(acc) * dt  # velocity between frames k and k + 1
    z = np.concatenate([[0.0], np.cumsum(v_half[:-1]) * dt])
    return torch.from_numpy(z)


def running_height(
    profile: Tensor, contact: Tensor, limit: Tensor, start: float, dt: float, margin: float = 0.006
) -> Tensor:
    """Pelvis height ``[K]`` for a gait with flight: the ballistic ``profile [K]`` (:func:`ballistic_height`)
    lifted as high as the legs allow over the clip (``limit [T]``, T <= K), easing down from the standing
    ``start`` height before the first push-off (a constant offset keeps every flight a free fall)."""
    n = limit.shape[0]
    base = float((limit - profile[:n]).min()) - margin
    off = np.flatnonzero(contact.numpy() < 0.5)
    settle = max(float(off[0]) * dt - 0.25, dt) if len(off) else 1.0  # done before the push-off window
    t = torch.arange(profile.shape[0], dtype=DTYPE) * dt
    return base + profile + (start - base) * (1.0 - min_jerk(t / settle))
