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

import torch

from phc_lightning import skeleton
from phc_lightning.rotations import (
    heading_quat,
    heading_quat_inv,
    quat_conjugate,
    quat_mul,
    quat_rotate,
    quat_to_tan_norm,
)
from phc_lightning.sim.base import SimState

Tensor = torch.Tensor

SELF_OBS_DIM = 1 + 3 * (skeleton.NUM_BODIES - 1) + 6 * skeleton.NUM_BODIES + 3 * skeleton.NUM_BODIES * 2  # 358
TASK_OBS_DIM = 24 * skeleton.NUM_BODIES  # 576
OBS_DIM = SELF_OBS_DIM + TASK_OBS_DIM  # 934


def _expand_bodies(q: Tensor, num_bodies: int) -> Tensor:
    """``(N, 4)`` -> ``(N, B, 4)`` view for broadcasting a per-env rotation over bodies."""
    return q.unsqueeze(-2).expand(q.shape[0], num_bodies, 4)


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
    n, b = body_pos.shape[:2]
    root_pos = body_pos[:, 0]
    heading_inv = _expand_bodies(heading_quat_inv(body_rot[:, 0]), b)
    local_pos = quat_rotate(heading_inv, body_pos - root_pos.unsqueeze(-2))[:, 1:]
    local_rot = quat_to_tan_norm(quat_mul(heading_inv, body_rot))
    local_vel = quat_rotate(heading_inv, body_vel)
    local_angvel = quat_rotate(heading_inv, body_angvel)
    return torch.cat(
        [
            root_pos[:, 2:3],
            local_pos.reshape(n, -1),
            local_rot.reshape(n, -1),
            local_vel.reshape(n, -1),
            local_angvel.reshape(n, -1),
        ],
        dim=-1,
    )


def compute_task_obs(sim: SimState, ref: SimState) -> Tensor:
    """What the policy must change to reach the reference frame, in the heading frame of the sim root.

    Args:
        sim: simulated state; ``body_*`` fields ``(N, 24, *)`` (dof fields unused).
        ref: reference state of the frame to reach (the *next* frame in the env), same shapes.

    Returns:
        ``(N, 576)``, feature-major: Δpos (72), Δrot tan-norm (144), Δvel (72), Δangvel (72), ref positions
        relative to the sim root (72), heading-local ref rotations tan-norm (144).
    """
    n, b = sim.body_pos.shape[:2]
    root_rot = sim.body_rot[:, 0]
    heading_inv = _expand_bodies(heading_quat_inv(root_rot), b)
    heading = _expand_bodies(heading_quat(root_rot), b)

    diff_pos = quat_rotate(heading_inv, ref.body_pos - sim.body_pos)
    # Change of basis h⁻¹·Δq·h turns the world-frame rotation difference into the same rotation seen from
    # the heading frame, so it does not depend on which way the humanoid faces.
    diff_rot = quat_mul(quat_mul(heading_inv, quat_mul(ref.body_rot, quat_conjugate(sim.body_rot))), heading)
    diff_vel = quat_rotate(heading_inv, ref.body_vel - sim.body_vel)
    diff_angvel = quat_rotate(heading_inv, ref.body_angvel - sim.body_angvel)
    ref_local_pos = quat_rotate(heading_inv, ref.body_pos - sim.body_pos[:, :1])
    ref_local_rot = quat_mul(heading_inv, ref.body_rot)
    return torch.cat(
        [
            diff_pos.reshape(n, -1),
            quat_to_tan_norm(diff_rot).reshape(n, -1),
            diff_vel.reshape(n, -1),
            diff_angvel.reshape(n, -1),
            ref_local_pos.reshape(n, -1),
            quat_to_tan_norm(ref_local_rot).reshape(n, -1),
        ],
        dim=-1,
    )


def compute_obs(sim: SimState, ref: SimState) -> Tensor:
    """Full policy observation ``(N, 934)`` = cat(self obs of ``sim``, task obs of ``sim`` towards ``ref``)."""
    self_obs = compute_self_obs(sim.body_pos, sim.body_rot, sim.body_vel, sim.body_angvel)
    return torch.cat([self_obs, compute_task_obs(sim, ref)], dim=-1)
