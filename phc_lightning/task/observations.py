"""Observation kernels of the tracking task (PHC ``compute_humanoid_observations_smpl_max`` and
``compute_imitation_observations_v6`` with upright start, local root obs, root height obs, one future frame).

Every vector is expressed in the *heading frame* of the simulated root: the world frame turned about +z by
the root's yaw, so the observation is invariant to where the humanoid stands and which way it faces on the
ground plane (only the root height is absolute). Quaternions are xyzw.

Layout of the 934-dim observation (feature-major, as PHC concatenates it):

=========  ======  ==============================================================
slice      size    content
=========  ======  ==============================================================
0          1       root height (m)
1:70       69      23 non-root body positions relative to the root
70:214     144     24 body rotations, heading-local, 6D tan-norm
214:286    72      24 body linear velocities
286:358    72      24 body angular velocities
358:430    72      Δpos = ref − sim, 24 bodies
430:574    144     Δrot = ref · sim⁻¹ as a heading-frame rotation, tan-norm
574:646    72      Δvel = ref − sim
646:718    72      Δangvel = ref − sim
718:790    72      ref body positions relative to the sim root
790:934    144     ref body rotations, heading-local, tan-norm
=========  ======  ==============================================================
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import heading_angle, quat_conjugate, quat_mul, quat_to_tan_norm
from phc_lightning.sim.base import SimState

Tensor = torch.Tensor

SELF_OBS_DIM = 1 + 3 * (skeleton.NUM_BODIES - 1) + 6 * skeleton.NUM_BODIES + 3 * skeleton.NUM_BODIES * 2  # 358
TASK_OBS_DIM = 24 * skeleton.NUM_BODIES  # 576
OBS_DIM = SELF_OBS_DIM + TASK_OBS_DIM  # 934


def observation_size(num_future_frames: int = 1) -> int:
    """Observation size with the task features of ``num_future_frames`` reference frames (PHC: 1, i.e. 934)."""
    return SELF_OBS_DIM + TASK_OBS_DIM * num_future_frames


def _expand_bodies(q: Tensor, num_bodies: int) -> Tensor:
    """``(N, 4)`` -> ``(N, B, 4)`` view for broadcasting a per-env rotation over bodies."""
    return q.unsqueeze(-2).expand(q.shape[0], num_bodies, 4)


def _to_heading_frame(cos_h: Tensor, sin_h: Tensor, v: Tensor) -> Tensor:
    """Rotate world vectors ``(N, K, 3)`` by minus the heading (a yaw), given its ``(N, 1)`` cos and sin.

    A yaw is a 2D rotation of x and y; written out it costs a handful of ops for all vectors at once, which
    matters because this runs on ~170 vectors per env every step.
    """
    x, y = v[..., 0], v[..., 1]
    return torch.stack([cos_h * x + sin_h * y, cos_h * y - sin_h * x, v[..., 2]], dim=-1)


def _heading(root_rot: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """cos and sin ``(N, 1)`` of the root heading and the inverse heading quaternion ``(N, 4)``."""
    h = heading_angle(root_rot)
    half = 0.5 * h
    zero = torch.zeros_like(half)
    inv = torch.stack([zero, zero, -torch.sin(half), torch.cos(half)], dim=-1)
    return torch.cos(h).unsqueeze(-1), torch.sin(h).unsqueeze(-1), inv


def compute_self_obs(body_pos: Tensor, body_rot: Tensor, body_vel: Tensor, body_angvel: Tensor) -> Tensor:
    """Proprioception of the simulated humanoid in its own heading frame.

    Args:
        body_pos: world body positions ``(N, 24, 3)``; body 0 is the root.
        body_rot: world body rotations, xyzw ``(N, 24, 4)``.
        body_vel: world linear velocities ``(N, 24, 3)``.
        body_angvel: world angular velocities ``(N, 24, 3)``.

    Returns:
        ``(N, 358)``: root height (1), non-root positions relative to the root (69), heading-local rotations
        as tan-norm (144), linear (72) and angular (72) velocities; all vectors in the heading frame.
    """
    return _observe(SimState(body_pos, body_rot, body_vel, body_angvel, body_pos, body_pos), None)


def compute_task_obs(sim: SimState, ref: SimState) -> Tensor:
    """What the policy must change to reach the reference frame, in the heading frame of the sim root.

    Args:
        sim: simulated state; ``body_*`` fields ``(N, 24, *)`` (dof fields unused).
        ref: reference state of the frame to reach (the *next* frame in the env), same shapes.

    Returns:
        ``(N, 576)``, feature-major: Δpos (72), Δrot tan-norm (144), Δvel (72), Δangvel (72), ref positions
        relative to the sim root (72), heading-local ref rotations tan-norm (144).
    """
    return _observe(sim, ref)[:, SELF_OBS_DIM:]


def compute_obs(sim: SimState, ref: SimState) -> Tensor:
    """Full policy observation ``(N, 934)`` = cat(self obs of ``sim``, task obs of ``sim`` towards ``ref``)."""
    return _observe(sim, ref)


def _observe(sim: SimState, ref: Optional[SimState]) -> Tensor:
    """Self obs (and task obs when ``ref`` is given) with every vector and rotation transformed in one batch."""
    n, b = sim.body_pos.shape[:2]
    root_pos = sim.body_pos[:, :1]
    cos_h, sin_h, inv = _heading(sim.body_rot[:, 0])
    vectors = [sim.body_pos - root_pos, sim.body_vel, sim.body_angvel]
    rotations = [sim.body_rot]
    if ref is not None:
        vectors += [ref.body_pos - sim.body_pos, ref.body_vel - sim.body_vel, ref.body_angvel - sim.body_angvel,
                    ref.body_pos - root_pos]
        # Change of basis h⁻¹·Δq·h turns the world-frame rotation difference into the same rotation seen from
        # the heading frame, so it does not depend on which way the humanoid faces.
        diff = quat_mul(ref.body_rot, quat_conjugate(sim.body_rot))
        rotations += [ref.body_rot, quat_mul(diff, _expand_bodies(quat_conjugate(inv), b))]
    local_vec = _to_heading_frame(cos_h, sin_h, torch.cat(vectors, dim=1)).reshape(n, len(vectors), b * 3)
    local_rot = quat_to_tan_norm(quat_mul(_expand_bodies(inv, len(rotations) * b), torch.cat(rotations, dim=1)))
    local_rot = local_rot.reshape(n, len(rotations), b * 6)
    parts = [sim.body_pos[:, 0, 2:3], local_vec[:, 0, 3:], local_rot[:, 0], local_vec[:, 1], local_vec[:, 2]]
    if ref is not None:
        parts += [local_vec[:, 3], local_rot[:, 2], local_vec[:, 4], local_vec[:, 5], local_vec[:, 6], local_rot[:, 1]]
    return torch.cat(parts, dim=-1)
