"""AMP observations: one function turns a :class:`~phc_lightning.sim.base.SimState` into the 196 features per step
that the discriminator sees, for the simulated agent and for motion-library demos alike.

Layout of one step (PHC / ASE ``build_amp_observations`` with local root obs and 6D rotations), every vector in the
heading frame of the root (the world turned about +z by the root's yaw), quaternions xyzw:

=========  ======  ==================================================================
slice      size    content
=========  ======  ==================================================================
0          1       root height (m)
1:7        6       root rotation, heading-local, tan-norm 6D
7:10       3       root linear velocity
10:13      3       root angular velocity
13:127     114     local rotations of the 19 AMP joints (no hands, no toes) as 6D, from the hinge angles
127:184    57      hinge velocities of those joints
184:196    12      key bodies (ankles, wrists) relative to the root
=========  ======  ==================================================================

A sample stacks ``history`` steps, newest first: ``[N, history * 196]``. Demo histories are taken at
``t, t - dt, ...`` (``dt`` the control step), clamped at the motion start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.indices import index_tensor
from phc_lightning.core.rotations import heading_angle, quat_from_euler_xyz, quat_mul, quat_to_tan_norm
from phc_lightning.sim.base import SimState

if TYPE_CHECKING:
    from phc_lightning.motion.library import MotionLibrary

Tensor = torch.Tensor

AMP_JOINTS: Tuple[int, ...] = tuple(
    i for i, name in enumerate(skeleton.BODY_NAMES) if i > 0 and name not in skeleton.FROZEN_BODIES
)
"""Body indices of the 19 joints whose rotations and hinge velocities are AMP features."""
AMP_DOFS: Tuple[int, ...] = tuple(d for b in AMP_JOINTS for d in skeleton.body_dofs(skeleton.BODY_NAMES[b]))
KEY_BODIES: Tuple[int, ...] = tuple(skeleton.BODY_INDEX[n] for n in ("L_Ankle", "R_Ankle", "L_Wrist", "R_Wrist"))
AMP_OBS_STEP_DIM = 1 + 6 + 3 + 3 + 6 * len(AMP_JOINTS) + 3 * len(AMP_JOINTS) + 3 * len(KEY_BODIES)  # 196


def amp_obs_dim(history: int) -> int:
    """Size of one stacked AMP observation."""
    return AMP_OBS_STEP_DIM * history


def amp_step_features(state: SimState) -> Tensor:
    """The 196 AMP features of each row of ``state`` (layout in the module docstring).

    Args:
        state: ``body_*`` ``(N, 24, *)`` and ``dof_*`` ``(N, 69)`` fields; body 0 is the root.

    Returns:
        ``(N, 196)`` float32.
    """
    n = state.body_pos.shape[0]
    device = state.body_pos.device
    key_bodies, amp_dofs = index_tensor(KEY_BODIES, device), index_tensor(AMP_DOFS, device)  # no copy per step
    root_rot = state.body_rot[:, 0]
    yaw = heading_angle(root_rot)
    half = 0.5 * yaw
    zero = torch.zeros_like(half)
    heading_inv = torch.stack([zero, zero, -torch.sin(half), torch.cos(half)], dim=-1)
    cos_h, sin_h = torch.cos(yaw).unsqueeze(-1), torch.sin(yaw).unsqueeze(-1)

    key_pos = state.body_pos[:, key_bodies] - state.body_pos[:, :1]
    vectors = torch.cat([state.body_vel[:, :1], state.body_angvel[:, :1], key_pos], dim=1)  # (N, 2 + K, 3)
    x, y = vectors[..., 0], vectors[..., 1]
    local = torch.stack([cos_h * x + sin_h * y, cos_h * y - sin_h * x, vectors[..., 2]], dim=-1)

    hinges = state.dof_pos[:, amp_dofs].reshape(n, len(AMP_JOINTS), 3)
    # 6D of the joint rotation, not the raw angles: both hinge branches of one rotation give the same features
    joint_rot = quat_to_tan_norm(quat_from_euler_xyz(hinges)).reshape(n, -1)
    return torch.cat(
        [
            state.body_pos[:, 0, 2:3],
            quat_to_tan_norm(quat_mul(heading_inv, root_rot)),
            local[:, 0],
            local[:, 1],
            joint_rot,
            state.dof_vel[:, amp_dofs],
            local[:, 2:].reshape(n, -1),
        ],
        dim=-1,
    )


def demo_amp_obs(motions: MotionLibrary, motion_ids: Tensor, times: Tensor, history: int, dt: float) -> Tensor:
    """Stacked AMP observations of reference motions: steps at ``t, t - dt, ..., t - (history - 1) dt``.

    Args:
        motions: the motion library.
        motion_ids: ``(K,)`` long.
        times: ``(K,)`` seconds, the newest step of each sample.
        history: steps per sample.
        dt: seconds between steps (the control step).

    Returns:
        ``(K, history * 196)``, newest step first; times before the motion start are clamped to 0.
    """
    k = motion_ids.shape[0]
    back = torch.arange(history, device=times.device, dtype=times.dtype) * dt
    step_times = (times.unsqueeze(-1) - back).clamp_min(0.0)  # (K, H)
    state = motions.get_state(motion_ids.unsqueeze(-1).expand(k, history).reshape(-1), step_times.reshape(-1))
    return amp_step_features(state).reshape(k, history * AMP_OBS_STEP_DIM)


def sample_demo_amp_obs(
    motions: MotionLibrary, num: int, history: int, dt: float, generator: Optional[torch.Generator] = None
) -> Tensor:
    """``num`` demo samples ``(num, history * 196)`` at random resident motions (by the library's sampling weights;
    all motions unless the library streams) and uniformly random times; ``generator`` lives on the library's
    device."""
    ids = motions.sample_resident_motions(num, generator=generator)
    return demo_amp_obs(motions, ids, motions.sample_times(ids, generator=generator), history, dt)
