"""Quaternion helpers. The one convention inside the package: **xyzw** (scalar last), as in PHC files.

MuJoCo uses wxyz; convert only at the backend edge with :func:`wxyz_to_xyzw` / :func:`xyzw_to_wxyz`.
All functions take torch tensors with the quaternion in the last dimension and broadcast over the rest.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

Tensor = torch.Tensor


def wxyz_to_xyzw(q: Tensor) -> Tensor:
    """Reorder scalar-first quaternions to scalar-last."""
    return torch.cat([q[..., 1:4], q[..., 0:1]], dim=-1)


def xyzw_to_wxyz(q: Tensor) -> Tensor:
    """Reorder scalar-last quaternions to scalar-first."""
    return torch.cat([q[..., 3:4], q[..., 0:3]], dim=-1)


def quat_normalize(q: Tensor) -> Tensor:
    """Unit quaternion; a zero quaternion becomes NaN-free identity-ish (divides by at least 1e-9)."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def quat_conjugate(q: Tensor) -> Tensor:
    """Inverse of a unit quaternion."""
    return torch.cat([-q[..., :3], q[..., 3:4]], dim=-1)


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors ``v [..., 3]`` by unit quaternions ``q [..., 4]``."""
    xyz, w = q[..., :3], q[..., 3:4]
    t = 2.0 * torch.cross(xyz.expand_as(v), v, dim=-1)
    return v + w * t + torch.cross(xyz.expand_as(v), t, dim=-1)


def quat_rotate_inverse(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors by the inverse of ``q``."""
    return quat_rotate(quat_conjugate(q), v)


def quat_from_axis_angle(axis: Tensor, angle: Tensor) -> Tensor:
    """Quaternion from unit ``axis [..., 3]`` and ``angle [...]`` (radians)."""
    half = 0.5 * angle.unsqueeze(-1)
    return torch.cat([axis * torch.sin(half), torch.cos(half)], dim=-1)


def quat_to_angle_axis(q: Tensor) -> Tuple[Tensor, Tensor]:
    """Angle in [0, pi] and unit axis of each rotation (axis is x for the identity)."""
    q = quat_normalize(q)
    q = torch.where(q[..., 3:4] < 0, -q, q)  # pick the short way round
    sin_half = q[..., :3].norm(dim=-1)
    angle = 2.0 * torch.atan2(sin_half, q[..., 3])
    default = torch.zeros_like(q[..., :3])
    default[..., 0] = 1.0
    axis = torch.where(sin_half.unsqueeze(-1) > 1e-9, q[..., :3] / sin_half.clamp_min(1e-9).unsqueeze(-1), default)
    return angle, axis


def quat_angle(q: Tensor) -> Tensor:
    """Rotation angle in [0, pi] of each quaternion."""
    return quat_to_angle_axis(q)[0]


def quat_to_exp_map(q: Tensor) -> Tensor:
    """Axis-angle vector (axis * angle)."""
    angle, axis = quat_to_angle_axis(q)
    return axis * angle.unsqueeze(-1)


def exp_map_to_quat(v: Tensor) -> Tensor:
    """Quaternion from an axis-angle vector."""
    angle = v.norm(dim=-1)
    default = torch.zeros_like(v)
    default[..., 0] = 1.0
    axis = torch.where(angle.unsqueeze(-1) > 1e-9, v / angle.clamp_min(1e-9).unsqueeze(-1), default)
    return quat_from_axis_angle(axis, angle)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]``."""
    x, y, z, w = quat_normalize(q).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))  # fmt: skip


def quat_to_tan_norm(q: Tensor) -> Tensor:
    """6D rotation feature used by PHC: the rotated x axis (tangent) and z axis (normal), ``[..., 6]``.

    Written out as the first and third columns of the rotation matrix: this runs every env step on every body,
    and the closed form is several times cheaper than rotating two constant vectors.
    """
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w),
            2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip


def heading_angle(q: Tensor) -> Tensor:
    """Yaw of each rotation: angle of the rotated +x axis in the ground plane."""
    x, y, z, w = q.unbind(-1)
    return torch.atan2(2 * (x * y + z * w), 1 - 2 * (y * y + z * z))


def heading_quat(q: Tensor) -> Tensor:
    """Rotation about +z by the heading of ``q``."""
    half = 0.5 * heading_angle(q)
    zero = torch.zeros_like(half)
    return torch.stack([zero, zero, torch.sin(half), torch.cos(half)], dim=-1)


def heading_quat_inv(q: Tensor) -> Tensor:
    """Inverse of :func:`heading_quat`: maps world vectors into the heading frame."""
    return quat_conjugate(heading_quat(q))


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation; ``t [...]`` broadcasts against the quaternions' leading dims."""
    t = t.unsqueeze(-1)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    small = sin_theta < 1e-6
    w0 = torch.where(small, 1.0 - t, torch.sin((1.0 - t) * theta) / sin_theta.clamp_min(1e-6))
    w1 = torch.where(small, t, torch.sin(t * theta) / sin_theta.clamp_min(1e-6))
    return quat_normalize(w0 * q0 + w1 * q1)


def quat_from_euler_xyz(angles: Tensor) -> Tensor:
    """Rotation of three sequential hinges x, y, z (``R = Rx(a) Ry(b) Rz(c)``), ``angles [..., 3]``."""
    eye = torch.eye(3, dtype=angles.dtype, device=angles.device)
    qx = quat_from_axis_angle(eye[0], angles[..., 0])
    qy = quat_from_axis_angle(eye[1], angles[..., 1])
    qz = quat_from_axis_angle(eye[2], angles[..., 2])
    return quat_mul(quat_mul(qx, qy), qz)


def quat_to_euler_xyz(q: Tensor) -> Tensor:
    """Inverse of :func:`quat_from_euler_xyz`: hinge angles ``[..., 3]`` with the y angle in [-pi/2, pi/2]."""
    m = quat_to_matrix(q)
    a = torch.atan2(-m[..., 1, 2], m[..., 2, 2])
    b = torch.asin(m[..., 0, 2].clamp(-1.0, 1.0))
    c = torch.atan2(-m[..., 0, 1], m[..., 0, 0])
    return torch.stack([a, b, c], dim=-1)


def wrap_angle(angle: Tensor) -> Tensor:
    """Angles wrapped into ``[-pi, pi)``."""
    return torch.remainder(angle + math.pi, 2.0 * math.pi) - math.pi
