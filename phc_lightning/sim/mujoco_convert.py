"""MuJoCo's state conventions to and from the package's, in torch, on any device.

:class:`~phc_lightning.sim.mujoco_warp.MujocoWarpBackend` keeps MuJoCo's layout in device memory and converts at
this edge without leaving the device; the CPU backend does the same arithmetic in numpy / float64
(:func:`~phc_lightning.sim.mujoco_cpu.body_state_from_mujoco`), so the two agree to float32 rounding.

MuJoCo side: quaternions wxyz; the free joint's ``qvel[0:3]`` is the world linear velocity of the pelvis origin and
``qvel[3:6]`` its angular velocity in the *pelvis frame*; ``cvel`` is ``[angular, linear]`` at the kinematic tree's
centre of mass. Package side: quaternions xyzw, every velocity in the world frame (see :mod:`phc_lightning.sim.base`).
"""

from __future__ import annotations

from typing import Tuple

import torch

from phc_lightning.core.rotations import quat_normalize, quat_rotate_inverse

Tensor = torch.Tensor


def generalized_from_root(
    root_pos: Tensor, root_rot: Tensor, root_vel: Tensor, root_angvel: Tensor, dof_pos: Tensor, dof_vel: Tensor
) -> Tuple[Tensor, Tensor]:
    """MuJoCo ``qpos (M, 7 + D)`` and ``qvel (M, 6 + D)`` of M humanoids, in the dtype of the inputs.

    Args:
        root_pos: pelvis world position ``(M, 3)``.
        root_rot: pelvis world orientation, xyzw ``(M, 4)`` (normalized here).
        root_vel: pelvis world linear velocity ``(M, 3)``.
        root_angvel: pelvis world angular velocity ``(M, 3)``.
        dof_pos: hinge angles ``(M, D)``.
        dof_vel: hinge velocities ``(M, D)``.
    """
    rot = quat_normalize(root_rot)
    qpos = torch.cat([root_pos, rot[:, 3:4], rot[:, :3], dof_pos], dim=1)
    qvel = torch.cat([root_vel, quat_rotate_inverse(rot, root_angvel), dof_vel], dim=1)
    return qpos, qvel


def body_state_from_derived(
    xpos: Tensor, xquat: Tensor, cvel: Tensor, root_com: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """World pose and velocity of every body origin from MuJoCo's derived fields (new tensors, same dtype).

    Args:
        xpos: body origins ``(N, B, 3)``.
        xquat: body orientations, wxyz ``(N, B, 4)``.
        cvel: ``[angular, linear]`` spatial velocity ``(N, B, 6)``, world-aligned, at ``root_com``.
        root_com: centre of mass of the kinematic tree ``(N, 1, 3)`` (``subtree_com`` of the root body).

    Returns:
        ``pos (N, B, 3)``, ``rot (N, B, 4)`` xyzw, ``vel (N, B, 3)`` linear velocity of the body origin,
        ``angvel (N, B, 3)``, all world frame.
    """
    angvel = cvel[..., :3].clone()
    # rigid-body transport of the linear velocity from the tree's com to the body origin: v + w x r
    vel = cvel[..., 3:] + torch.cross(angvel, xpos - root_com, dim=-1)
    rot = torch.cat([xquat[..., 1:], xquat[..., :1]], dim=-1)
    return xpos.clone(), rot, vel, angvel
