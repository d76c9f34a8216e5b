"""Device-resident motion library: every frame's full reference state, sampling and interpolated lookup.

All motions are concatenated along one frame axis (``F = Σ T_m`` frames) and kept on ``device``:

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
import gc
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

from phc_lightning.core import rng, skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.rotations import quat_conjugate, quat_mul, quat_normalize, quat_to_exp_map, slerp, wrap_angle
from phc_lightning.core.threads import one_cpu_thread
from phc_lightning.motion import fk
from phc_lightning.motion.formats import load_motion_file
from phc_lightning.motion.raw_motion import RawMotion, check_unique_keys, validate_motion
from phc_lightning.sim.base import SimState

Tensor = torch.Tensor
_FRAME_FIELDS = ("body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel")
# FK and differences run over groups of whole motions of about this many frames, bounding temporary memory.
_CHUNK_FRAMES = 1 << 18
# Snap lookups that land within this many frames below an exact frame onto it (float32 ``t * fps`` noise).
_FRAME_SNAP = 1e-4
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


class MotionLibrary:
    """All reference motions on one device, with weighted sampling and interpolated state lookup.

    Args:
        motion_file: a ``.npz`` / ``.pkl`` motion file, or already loaded :class:`RawMotion` s.
        device: where every tensor lives.
        fix_height: shift each motion vertically so that its lowest sole over the whole motion touches z = 0.
        velocity_smoothing: sigma in frames of the Gaussian filter over central-difference velocities, as PHC
            (2); 0: raw forward differences, unsmoothed.
        max_dof_vel: bound on ``|dof_vel|`` in rad/s against Euler-rate blow-ups near 90 degree flexion; None: no
            clamp.
        index_only: keep the motions as loaded (root positions and rotations, ~0.4 kB a frame) and build no
            per-frame buffers (~2 kB a frame); :meth:`subset` then builds full libraries of a few motions at a time.
            For evaluating motion sets too large to hold whole (``phc validate``): such a library cannot be
            stepped or sampled itself.
        chunk_frames: frames of the motion groups whose buffers are computed at once (bounds temporary memory).

    Attributes:
        num_motions: ``M``.
        keys: motion names ``[M]``.
        fps: frames per second ``[M]`` float.
        num_frames: frames per motion ``[M]`` long.
        lengths: duration in seconds ``(num_frames - 1) / fps``, ``[M]`` float.
        frame_start: index of each motion's first frame in the concatenated buffers, ``[M]`` long.
        sampling_weights: non-negative sampling weights ``[M]`` (uniform by default).

    Example:
        >>> lib = MotionLibrary("phc_lightning/assets/motions.npz")
        >>> ids = lib.sample_motions(8)
        >>> state = lib.get_state(ids, lib.sample_times(ids))  # SimState with 8 rows
    """

    def __init__(
        self,
        motion_file: Union[str, Path, List[RawMotion]],
        device: Union[str, torch.device] = "cpu",
        fix_height: bool = True,
        velocity_smoothing: float = DEFAULT_VELOCITY_SMOOTHING,
        max_dof_vel: Optional[float] = DEFAULT_MAX_DOF_VEL,
        index_only: bool = False,
        chunk_frames: int = _CHUNK_FRAMES,
    ) -> None:
        if not (math.isfinite(velocity_smoothing) and velocity_smoothing >= 0):
            raise ConfigError(f"velocity_smoothing must be a finite number >= 0, got {velocity_smoothing}")
        if max_dof_vel is not None and not max_dof_vel > 0:
            raise ConfigError(f"max_dof_vel must be > 0 or None, got {max_dof_vel}")
        self.velocity_smoothing = float(velocity_smoothing)
        self.max_dof_vel = None if max_dof_vel is None else float(max_dof_vel)
        if isinstance(motion_file, (list, tuple)):  # in-memory motions get the same checks as files
            motions = [validate_motion("<motions>", m.key, m.fps, m.root_pos, m.global_rot) for m in motion_file]
            check_unique_keys("<motions>", [m.key for m in motions])
        else:
            motions = load_motion_file(motion_file)
        if not motions:
            raise ValueError("MotionLibrary needs at least one motion")
        self.device = torch.device(device)
        self.keys: List[str] = [m.key for m in motions]
        self.num_motions = len(motions)
        self.fps = torch.tensor([float(m.fps) for m in motions], dtype=torch.float32, device=self.device)
        self.num_frames = torch.tensor([m.num_frames for m in motions], dtype=torch.long, device=self.device)
        self.lengths = (self.num_frames - 1).to(torch.float32) / self.fps
        self.frame_start = torch.cumsum(self.num_frames, 0) - self.num_frames
        self.sampling_weights = torch.full((self.num_motions,), 1.0 / self.num_motions, device=self.device)
        self.fix_height = fix_height
        self.index_only = index_only
        self._raw: Optional[List[RawMotion]] = motions if index_only else None
        if index_only:
            # Validation copied every array of the file; the originals are garbage now. glibc keeps freed heap
            # pages unless asked, and for an AMASS-sized set that would double what the motions cost.
            del motion_file
            gc.collect()
            release_freed_heap()
            return

        # Chunks are written into buffers of the final size: no second copy of every frame at the end.
        total = int(self.num_frames.sum())
        buffers: Dict[str, Tensor] = {}
        offset = 0
        for group in _chunk_motions(motions, chunk_frames):
            frames = self._frames_of(group, fix_height)
            if not buffers:
                buffers = {name: frames[name].new_empty((total,) + tuple(frames[name].shape[1:]))
                           for name in _FRAME_FIELDS}
            count = frames["body_pos"].shape[0]
            for name in _FRAME_FIELDS:
                buffers[name][offset : offset + count] = frames[name]
            offset += count
        self.body_pos = buffers["body_pos"]
        self.body_rot = buffers["body_rot"]
        self.body_vel = buffers["body_vel"]
        self.body_angvel = buffers["body_angvel"]
        self.dof_pos = buffers["dof_pos"]
        self.dof_vel = buffers["dof_vel"]

    def _frames_of(self, motions: Sequence[RawMotion], fix_height: bool) -> Dict[str, Tensor]:
        """Per-frame buffers for a group of motions, computed on the library's device in float32."""

        def cat(name: str) -> Tensor:
            return torch.cat([torch.tensor(getattr(m, name), dtype=torch.float32) for m in motions]).to(self.device)

        fps = torch.tensor([float(m.fps) for m in motions], dtype=torch.float32, device=self.device)
        num_frames = torch.tensor([m.num_frames for m in motions], dtype=torch.long, device=self.device)
        # One thread: with two, the hinge angles came out different (by up to 3e-5 rad) from one process to the next,
        # so no two runs of one config trained on the same references.
        with one_cpu_thread(self.device):
            return compute_motion_frames(
                cat("root_pos"), cat("global_rot"), fps, num_frames, fix_height, self.velocity_smoothing,
                self.max_dof_vel,
            )

    @property
    def total_frames(self) -> int:
        """Number of frames over all motions."""
        return int(self.num_frames.sum())

    def subset(self, motion_ids: Sequence[int]) -> MotionLibrary:
        """A full library of the given motions (ids of this library, in that order) with the same options; needs an
        ``index_only`` library, which keeps the motions as loaded."""
        if self._raw is None:
            raise ValueError("MotionLibrary.subset needs a library built with index_only=True")
        # Smaller FK groups than a training library's: their temporaries, not the chunk's frames, would dominate.
        return MotionLibrary([self._raw[int(i)] for i in motion_ids], device=self.device, fix_height=self.fix_height,
                             velocity_smoothing=self.velocity_smoothing, max_dof_vel=self.max_dof_vel,
                             chunk_frames=_CHUNK_FRAMES >> 3)

    def set_sampling_weights(self, weights: Tensor) -> None:
        """Replace the sampling weights (need not sum to 1).

        Args:
            weights: ``[M]`` finite, non-negative, not all zero.

        Raises:
            ValueError: wrong shape, negative, non-finite or all-zero weights.
        """
        weights = torch.as_tensor(weights, dtype=torch.float32).to(self.device)
        if weights.shape != (self.num_motions,):
            raise ValueError(f"sampling weights must have shape [{self.num_motions}], got {list(weights.shape)}")
        if not bool(torch.isfinite(weights).all()):
            raise ValueError("sampling weights must be finite")
        if bool((weights < 0).any()):
            raise ValueError("sampling weights must be non-negative")
        if not bool((weights > 0).any()):
            raise ValueError("sampling weights must not all be zero")
        self.sampling_weights = weights.clone()

    def sample_motions(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw ``n`` motion ids ``[n]`` (long) with replacement, with probability ∝ :attr:`sampling_weights`.

        ``generator`` must live on the library's device.
        """
        return rng.multinomial(self.sampling_weights, n, generator, "MotionLibrary.sample_motions")

    def sample_times(self, motion_ids: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Uniform start times ``[n]`` in ``[0, length)`` seconds of each given motion."""
        ids = motion_ids.to(self.device, torch.long)
        u = rng.rand(ids.shape, generator, self.device, "MotionLibrary.sample_times")
        return u * self.lengths[ids]

    def get_state(self, motion_ids: Tensor, times: Tensor) -> SimState:
        """Reference state of each ``(motion, time)`` pair, interpolated between the two nearest frames.

        Args:
            motion_ids: ``[n]`` long motion indices.
            times: ``[n]`` seconds, clamped to ``[0, length]`` of each motion.

        Returns:
            :class:`~phc_lightning.sim.base.SimState` with ``n`` rows: positions, velocities and hinge angles
            linearly interpolated (hinge angles along the short way round), rotations slerped.
        """
        ids = motion_ids.to(self.device, torch.long)
        t = torch.minimum(times.to(self.device, torch.float32).clamp_min(0.0), self.lengths[ids])
        phase = t * self.fps[ids]
        last = self.num_frames[ids] - 1
        f0 = torch.minimum(torch.floor(phase + _FRAME_SNAP).long(), last)
        f1 = torch.minimum(f0 + 1, last)
        blend = (phase - f0).clamp(0.0, 1.0)
        g0 = self.frame_start[ids] + f0
        g1 = self.frame_start[ids] + f1

        def lerp(buf: Tensor) -> Tensor:
            w = blend.view((-1,) + (1,) * (buf.dim() - 1))
            return torch.lerp(buf[g0], buf[g1], w)

        dof0 = self.dof_pos[g0]
        dof_pos = dof0 + wrap_angle(self.dof_pos[g1] - dof0) * blend[:, None]
        return SimState(
            body_pos=lerp(self.body_pos),
            body_rot=slerp(self.body_rot[g0], self.body_rot[g1], blend[:, None].expand(-1, skeleton.NUM_BODIES)),
            body_vel=lerp(self.body_vel),
            body_angvel=lerp(self.body_angvel),
            dof_pos=dof_pos,
            dof_vel=lerp(self.dof_vel),
        )


def _chunk_motions(motions: Sequence[RawMotion], max_frames: int) -> List[List[RawMotion]]:
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
