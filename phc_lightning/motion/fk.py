"""Forward kinematics on the SMPL skeleton of :mod:`phc_lightning.skeleton`.

Rotations are xyzw quaternions relative to the T-pose rest frame: a body whose global rotation is the
identity points exactly as in the rest pose, so ``pos[j] = pos[parent] + R_global[parent] @ offset[j]``.
"""

from __future__ import annotations

from typing import Optional

import torch

from phc_lightning import skeleton
from phc_lightning.rotations import quat_conjugate, quat_from_euler_xyz, quat_mul, quat_rotate, quat_to_euler_xyz

Tensor = torch.Tensor


def offsets_tensor(dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> Tensor:
    """Rest offsets ``(24, 3)`` of each body relative to its parent."""
    return torch.tensor(skeleton.OFFSETS, dtype=dtype, device=device)


def local_to_global(local_rot: Tensor) -> Tensor:
    """Global rotations ``(..., 24, 4)`` from parent-relative ones (root's local rotation is global)."""
    out = [local_rot[..., 0, :]]
    for j in range(1, skeleton.NUM_BODIES):
        out.append(quat_mul(out[skeleton.PARENTS[j]], local_rot[..., j, :]))
    return torch.stack(out, dim=-2)


def global_to_local(global_rot: Tensor) -> Tensor:
    """Parent-relative rotations ``(..., 24, 4)`` from global ones."""
    parents = torch.tensor(skeleton.PARENTS[1:], device=global_rot.device)
    child = global_rot[..., 1:, :]
    local = quat_mul(quat_conjugate(global_rot[..., parents, :]), child)
    return torch.cat([global_rot[..., :1, :], local], dim=-2)


def body_positions(root_pos: Tensor, global_rot: Tensor, offsets: Optional[Tensor] = None) -> Tensor:
    """World positions ``(..., 24, 3)`` of every body from the root position and global rotations."""
    if offsets is None:
        offsets = offsets_tensor(global_rot.dtype, global_rot.device)
    out = [root_pos]
    for j in range(1, skeleton.NUM_BODIES):
        p = skeleton.PARENTS[j]
        out.append(out[p] + quat_rotate(global_rot[..., p, :], offsets[j].expand_as(root_pos)))
    return torch.stack(out, dim=-2)


def local_to_dof(local_rot: Tensor) -> Tensor:
    """The 69 hinge angles that reproduce the non-root local rotations exactly (x, y, z hinge order)."""
    return quat_to_euler_xyz(local_rot[..., 1:, :]).flatten(-2)


def dof_to_local(root_rot: Tensor, dof_pos: Tensor) -> Tensor:
    """Local rotations ``(..., 24, 4)`` from the root rotation and the 69 hinge angles."""
    hinge = quat_from_euler_xyz(dof_pos.unflatten(-1, (skeleton.NUM_BODIES - 1, 3)))
    return torch.cat([root_rot.unsqueeze(-2), hinge], dim=-2)
