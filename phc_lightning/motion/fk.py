"""Forward kinematics on the SMPL skeleton of :mod:`phc_lightning.core.skeleton`.

Rotations are xyzw quaternions relative to the T-pose rest frame: a body whose global rotation is the
identity points exactly as in the rest pose, so ``pos[j] = pos[parent] + R_global[parent] @ offset[j]``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import (
    quat_conjugate,
    quat_from_euler_xyz,
    quat_mul,
    quat_rotate,
    quat_to_euler_xyz,
    wrap_angle,
)

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


def continuous_hinge_branch(dof_pos: Tensor, starts: Tensor) -> Tensor:
    """Keep each joint on one of its two hinge solutions across frames.

    Every rotation has two hinge solutions, ``(a, b, c)`` and ``(a + pi, pi - b, c + pi)``; :func:`local_to_dof`
    returns the one with ``|b| <= pi/2``, which flips whenever a joint passes 90 degrees about y (a deep knee bend)
    and would turn into a velocity spike. A flip shows as ``a`` and ``c`` both jumping by about pi between frames;
    from there on, until the next flip, the other solution is used.

    Args:
        dof_pos: ``[F, 69]`` angles from :func:`local_to_dof` for consecutive frames.
        starts: ``[F]`` bool, True at the first frame of each motion (the branch restarts there).

    Returns:
        ``[F, 69]`` angles describing the same rotations, continuous within each motion.
    """
    ang = dof_pos.unflatten(-1, (skeleton.NUM_BODIES - 1, 3))
    a, b, c = ang.unbind(-1)
    jump = (wrap_angle(a[1:] - a[:-1]).abs() > math.pi / 2) & (wrap_angle(c[1:] - c[:-1]).abs() > math.pi / 2)
    jump = torch.cat([torch.zeros_like(jump[:1]), jump], dim=0) & ~starts.unsqueeze(-1)
    # parity of flips since the start of each motion: cumulative count minus the count at the motion's start
    count = torch.cumsum(jump.long(), dim=0)
    motion_id = torch.cumsum(starts.long(), dim=0) - 1
    start_idx = torch.nonzero(starts, as_tuple=False).squeeze(-1)
    base = (count - jump.long())[start_idx][motion_id]
    flipped = ((count - base) % 2).bool()
    alt = torch.stack([wrap_angle(a + math.pi), wrap_angle(math.pi - b), wrap_angle(c + math.pi)], dim=-1)
    return torch.where(flipped.unsqueeze(-1), alt, ang).flatten(-2)


def near_singular_hinges(dof_pos: Tensor, threshold_deg: float = 80.0) -> Tensor:
    """``[..., 23]`` bool: joints whose middle (y) hinge is within ``90 - threshold_deg`` degrees of +-90 degrees.

    There the x and z hinges turn about nearly the same axis, so their angles are ill-conditioned and their rates
    can be large while the joint itself turns slowly. ``|cos y|`` is the same on both hinge branches
    (``y`` and ``pi - y``), so this works on :func:`local_to_dof` and :func:`continuous_hinge_branch` output alike.
    """
    middle = dof_pos.unflatten(-1, (skeleton.NUM_BODIES - 1, 3))[..., 1]
    return torch.cos(middle).abs() < math.cos(math.radians(threshold_deg))
