"""Per-frame reference buffers of motions concatenated along one frame axis (``F = Σ T_m`` frames):

===============  ==============  ==============================================================
buffer           shape           meaning
===============  ==============  ==============================================================
``body_pos``     (F, 24, 3)      world body positions by FK on our skeleton offsets, metres
``body_rot``     (F, 24, 4)      global rotations, unit quaternions **xyzw**, relative to T-pose
``body_vel``     (F, 24, 3)      world linear velocity, m/s
``body_angvel``  (F, 24, 3)      world angular velocity, from ``exp_map(q[t+1] q[t]^-1) × fps``, rad/s
``dof_pos``      (F, 69)         hinge angles reproducing the local rotations, radians
``dof_vel``      (F, 69)         from wrapped hinge-angle differences × fps, rad/s, optionally clamped
===============  ==============  ==============================================================

1,800 bytes a frame, against 396 for the motion as loaded (root position and global rotations): the motion library
(:mod:`phc_lightning.motion.library`) builds them only for the motions it keeps resident.

Velocities are computed as PHC does (``velocity_smoothing = 2``): central differences (one-sided at a motion's
first and last frame, like ``np.gradient``), then a Gaussian filter of ``sigma = 2`` frames over time with the
edge frames repeated (scipy's ``gaussian_filter1d(mode="nearest")``), within each motion. Raw mocap differences
are noisy and, as forward differences, half a frame late. ``velocity_smoothing = 0`` keeps the raw forward
differences instead (the last frame repeats the previous frame's), exactly consistent with the positions.

``max_dof_vel`` clamps every hinge speed: near 90 degrees about a joint's middle (y) hinge the x-y-z hinge
angles are ill-conditioned and their rates explode although the joint turns slowly (see
:func:`~phc_lightning.motion.fk.near_singular_hinges`).
"""

from __future__ import annotations

import ctypes
from typing import Dict, List, Optional, Sequence, Union

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_conjugate, quat_mul, quat_normalize, quat_to_exp_map, wrap_angle
from phc_lightning.core.threads import one_cpu_thread
from phc_lightning.motion import fk
from phc_lightning.motion.raw_motion import RawMotion

Tensor = torch.Tensor
FRAME_FIELDS = ("body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel")
"""The per-frame buffers, in the order of the module table."""
# FK and differences run over groups of whole motions of about this many frames, bounding temporary memory.
CHUNK_FRAMES = 1 << 18
# PHC's reference velocity filter: gaussian_filter1d(sigma=2 frames). The default truncation (4 sigma) as in scipy.
DEFAULT_VELOCITY_SMOOTHING = 2.0
_TRUNCATE = 4.0
# Hinge speed bound, rad/s, a safety net: human joints rarely pass ~20 rad/s, while Euler-rate blow-ups near the
# y = 90 degree singularity can go far beyond. Measured peaks, raw -> smoothed (sigma 2): CMU 05_06 27 -> 14 rad/s
# (a knee's x and z hinges at 77 degrees flexion), the bundled motions 9.5 -> 5.1 rad/s.
DEFAULT_MAX_DOF_VEL = 20.0


def sole_heights(body_pos: Tensor) -> Tensor:
    """Height of the lowest sole ``[...]`` from body positions ``[..., 24, 3]`` (foot origin z minus sole depth)."""
    depth = torch.tensor(
        [skeleton.SOLE_DEPTH[skeleton.BODY_NAMES[b]] for b in skeleton.FOOT_BODIES],
        dtype=body_pos.dtype,
        device=body_pos.device,
    )
    return (body_pos[..., list(skeleton.FOOT_BODIES), 2] - depth).min(dim=-1).values


def compute_motion_frames(
    root_pos: Tensor,
    global_rot: Tensor,
    fps: Tensor,
    num_frames: Tensor,
    fix_height: bool,
    velocity_smoothing: float = DEFAULT_VELOCITY_SMOOTHING,
    max_dof_vel: Optional[float] = DEFAULT_MAX_DOF_VEL,
) -> Dict[str, Tensor]:
    """Full per-frame reference state of consecutive motions concatenated along the frame axis.

    Args:
        root_pos: pelvis positions ``[F, 3]``.
        global_rot: global rotations ``[F, 24, 4]`` xyzw.
        fps: frames per second of each motion ``[M]``.
        num_frames: frames of each motion ``[M]`` (each >= 2, summing to ``F``).
        fix_height: shift each motion vertically so that its lowest sole over all frames is at z = 0.
        velocity_smoothing: Gaussian sigma in frames over central differences; 0: raw forward differences.
        max_dof_vel: clamp ``|dof_vel|`` to this (rad/s); None: no clamp.

    Returns:
        ``{"body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel"}``, shapes in the module table.
    """
    device = root_pos.device
    motion_of_frame = torch.repeat_interleave(torch.arange(len(num_frames), device=device), num_frames)
    rot = quat_normalize(global_rot)
    body_pos = fk.body_positions(root_pos, rot)
    if fix_height:
        lowest = torch.full((len(num_frames),), float("inf"), dtype=body_pos.dtype, device=device)
        lowest = lowest.scatter_reduce(0, motion_of_frame, sole_heights(body_pos), reduce="amin")
        body_pos = body_pos.clone()
        body_pos[..., 2] -= lowest[motion_of_frame].unsqueeze(-1)
    starts = torch.zeros(root_pos.shape[0], dtype=torch.bool, device=device)
    starts[torch.cumsum(num_frames, 0) - num_frames] = True
    dof_pos = fk.continuous_hinge_branch(fk.local_to_dof(fk.global_to_local(rot)), starts)

    # Forward differences a -> b = a + 1; a motion's last frame reuses the pair (T-2, T-1).
    ends = torch.cumsum(num_frames, 0) - 1
    idx = torch.arange(root_pos.shape[0], device=device)
    is_last = torch.zeros_like(idx, dtype=torch.bool)
    is_last[ends] = True
    a = torch.where(is_last, idx - 1, idx)
    b = a + 1
    frame_fps = fps.to(body_pos.dtype)[motion_of_frame]
    body_vel = (body_pos[b] - body_pos[a]) * frame_fps[:, None, None]
    body_angvel = quat_to_exp_map(quat_mul(rot[b], quat_conjugate(rot[a]))) * frame_fps[:, None, None]
    dof_vel = wrap_angle(dof_pos[b] - dof_pos[a]) * frame_fps[:, None]
    if velocity_smoothing > 0:
        first, last = idx[starts].repeat_interleave(num_frames), ends.repeat_interleave(num_frames)
        body_vel, body_angvel, dof_vel = (
            smooth_over_time(central_from_forward(v, starts, is_last), first, last, velocity_smoothing)
            for v in (body_vel, body_angvel, dof_vel)
        )
    if max_dof_vel is not None:
        # A plain clamp rather than a damped Euler-rate Jacobian: away from the singularity it changes nothing (and
        # keeps dof_vel the derivative of dof_pos); near y = +-90 degrees the x and z hinges share one axis and
        # their rates blow up together while the joint's turn about that axis (x rate +- z rate) stays small, so
        # clamping both bounds what reference-state init writes into the hinges and keeps that turn about right.
        dof_vel = dof_vel.clamp(-max_dof_vel, max_dof_vel)
    return {
        "body_pos": body_pos,
        "body_rot": rot,
        "body_vel": body_vel,
        "body_angvel": body_angvel,
        "dof_pos": dof_pos,
        "dof_vel": dof_vel,
    }


def central_from_forward(forward: Tensor, starts: Tensor, is_last: Tensor) -> Tensor:
    """Central differences from forward ones, like ``np.gradient`` (one-sided at each motion's ends).

    Args:
        forward: ``[F, ...]`` rate of frame ``t -> t + 1`` at ``t`` (at a motion's last frame: ``T-2 -> T-1``).
        starts: ``[F]`` bool, first frame of each motion.
        is_last: ``[F]`` bool, last frame of each motion.

    Returns:
        ``[F, ...]``: the mean of the rates into and out of each interior frame; ``forward`` at the ends.
    """
    prev = (torch.arange(forward.shape[0], device=forward.device) - 1).clamp_min(0)
    edge = (starts | is_last).view((-1,) + (1,) * (forward.dim() - 1))
    return torch.where(edge, forward, 0.5 * (forward[prev] + forward))


def smooth_over_time(x: Tensor, first: Tensor, last: Tensor, sigma: float) -> Tensor:
    """Gaussian filter over the frame axis within each motion, as scipy's ``gaussian_filter1d(mode="nearest")``.

    A weighted sum of shifted copies (a 1-D convolution whose padding repeats each motion's own edge frames, so
    neighbouring motions of the concatenated buffer never mix).

    Args:
        x: ``[F, ...]`` values per frame.
        first: ``[F]`` index of the first frame of each frame's motion.
        last: ``[F]`` index of the last frame of each frame's motion.
        sigma: standard deviation in frames (> 0); taps out to ``int(4 sigma + 0.5)`` frames.
    """
    radius = int(_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).tolist()
    idx = torch.arange(x.shape[0], device=x.device)
    out = torch.zeros_like(x)
    for k, w in zip(range(-radius, radius + 1), weights):
        out += w * x[torch.minimum(torch.maximum(idx + k, first), last)]
    return out


def release_freed_heap() -> None:
    """Return freed heap memory to the operating system (glibc ``malloc_trim``; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass



def build_frames(
    motions: Sequence[RawMotion],
    device: Union[str, torch.device],
    fix_height: bool,
    velocity_smoothing: float,
    max_dof_vel: Optional[float],
    chunk_frames: int = CHUNK_FRAMES,
) -> Dict[str, Tensor]:
    """The buffers of the module table for ``motions`` concatenated in the given order, on ``device``, float32.

    Groups of whole motions of about ``chunk_frames`` frames are computed at a time and written into buffers of the
    final size, so the temporaries stay bounded and no second copy of every frame exists at the end. The grouping
    follows from the motions and ``chunk_frames`` alone: the same motions always give the same bits.
    """
    device = torch.device(device)
    total = sum(m.num_frames for m in motions)
    buffers: Dict[str, Tensor] = {}
    offset = 0
    for group in chunk_motions(motions, chunk_frames):
        frames = _group_frames(group, device, fix_height, velocity_smoothing, max_dof_vel)
        if not buffers:
            buffers = {name: frames[name].new_empty((total,) + tuple(frames[name].shape[1:]))
                       for name in FRAME_FIELDS}
        count = frames["body_pos"].shape[0]
        for name in FRAME_FIELDS:
            buffers[name][offset : offset + count] = frames[name]
        offset += count
    return buffers


def _group_frames(motions: Sequence[RawMotion], device: torch.device, fix_height: bool, velocity_smoothing: float,
                  max_dof_vel: Optional[float]) -> Dict[str, Tensor]:
    """Per-frame buffers for one group of motions, computed on ``device`` in float32."""

    def cat(name: str) -> Tensor:
        return torch.cat([torch.tensor(getattr(m, name), dtype=torch.float32) for m in motions]).to(device)

    fps = torch.tensor([float(m.fps) for m in motions], dtype=torch.float32, device=device)
    num_frames = torch.tensor([m.num_frames for m in motions], dtype=torch.long, device=device)
    # One thread: with two, the hinge angles came out different (by up to 3e-5 rad) from one process to the next,
    # so no two runs of one config trained on the same references.
    with one_cpu_thread(device):
        return compute_motion_frames(cat("root_pos"), cat("global_rot"), fps, num_frames, fix_height,
                                     velocity_smoothing, max_dof_vel)


def chunk_motions(motions: Sequence[RawMotion], max_frames: int) -> List[List[RawMotion]]:
    """Split motions (in order) into groups of at most ``max_frames`` frames (a longer motion is its own group)."""
    groups: List[List[RawMotion]] = [[]]
    frames = 0
    for m in motions:
        if groups[-1] and frames + m.num_frames > max_frames:
            groups.append([])
            frames = 0
        groups[-1].append(m)
        frames += m.num_frames
    return groups
