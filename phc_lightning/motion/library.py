"""The motion library: every motion's metadata and sampling weights, the per-frame reference buffers of the motions
it keeps resident (all of them, or those the envs currently track), weighted sampling and interpolated lookup.

Motion ids are always ids of the whole set (``0 ... M-1``). The per-frame buffers (:mod:`phc_lightning.motion.frames`,
1,800 bytes a frame) concatenate the resident motions along one frame axis, on ``device``:

- **all resident** (a set of at most ``resident_motions`` motions, or ``resident_motions=None``): every motion's
  buffers are built once, and the motions as loaded are dropped; what every library did before residency existed.
- **streaming** (a larger set): the motions as loaded (root positions and global rotations, 396 bytes a frame) stay
  in host memory, and :meth:`MotionLibrary.make_resident` builds the buffers of the motions a set of envs tracks
  (the env calls it whenever its motions change: at the start, on a resample, on resume, in evaluation chunks).
  Which motions are resident is a function of those ids alone (sorted, distinct), and the same motions always
  build the same bits, so a resumed run holds the very buffers it saved with. Metadata, sampling weights and
  failure statistics stay over all ``M`` motions, so draws cover the whole set.
- **index only** (``phc validate``): the motions as loaded and no buffers; :meth:`MotionLibrary.subset` builds
  libraries of one evaluation chunk at a time.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

from phc_lightning.core import rng, skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.rotations import slerp, wrap_angle
from phc_lightning.motion.formats import load_motion_file
from phc_lightning.motion.frames import (
    CHUNK_FRAMES,
    DEFAULT_MAX_DOF_VEL,
    DEFAULT_VELOCITY_SMOOTHING,
    FRAME_FIELDS,
    build_frames,
    release_freed_heap,
    smooth_over_time,
    sole_heights,
)
from phc_lightning.motion.raw_motion import RawMotion, check_unique_keys, validate_motion
from phc_lightning.sim.base import SimState

# Names this module has always offered, now defined in phc_lightning.motion.frames.
__all__ = ["MotionLibrary", "DEFAULT_MAX_DOF_VEL", "DEFAULT_VELOCITY_SMOOTHING", "release_freed_heap",
           "smooth_over_time", "sole_heights"]

Tensor = torch.Tensor
# Snap lookups that land within this many frames below an exact frame onto it (float32 ``t * fps`` noise).
_FRAME_SNAP = 1e-4
# frame_start of a motion that is not resident: any lookup of it indexes past the buffers and fails loudly (an
# IndexError on the CPU, a device assert on CUDA) instead of reading another motion's frames, without a host check.
_NOT_RESIDENT = 1 << 62

_FRAME_SHAPES = {"body_pos": (skeleton.NUM_BODIES, 3), "body_rot": (skeleton.NUM_BODIES, 4),
                 "body_vel": (skeleton.NUM_BODIES, 3), "body_angvel": (skeleton.NUM_BODIES, 3),
                 "dof_pos": (skeleton.NUM_DOFS,), "dof_vel": (skeleton.NUM_DOFS,)}


class MotionLibrary:
    """Reference motions on one device: metadata and sampling over all, per-frame buffers of the resident ones.

    Args:
        motion_file: a ``.npz`` / ``.pkl`` motion file, or already loaded :class:`RawMotion` s.
        device: where every tensor lives (the motions as loaded stay in host memory).
        fix_height: shift each motion vertically so that its lowest sole over the whole motion touches z = 0.
        velocity_smoothing: sigma in frames of the Gaussian filter over central-difference velocities, as PHC
            (2); 0: raw forward differences, unsmoothed.
        max_dof_vel: bound on ``|dof_vel|`` in rad/s against Euler-rate blow-ups near 90 degree flexion; None: no
            clamp.
        index_only: keep the motions as loaded and build no per-frame buffers; :meth:`subset` then builds full
            libraries of a few motions at a time. For evaluating motion sets too large to hold whole (``phc
            validate``): such a library cannot be stepped or sampled itself.
        chunk_frames: frames of the motion groups whose buffers are computed at once (bounds temporary memory).
        resident_motions: the most motions whose per-frame buffers are held at once. A set of at most this many
            (or None) is all resident; a larger one streams: nothing is resident until :meth:`make_resident`.

    Attributes:
        num_motions: ``M``.
        keys: motion names ``[M]``.
        fps: frames per second ``[M]`` float.
        num_frames: frames per motion ``[M]`` long.
        lengths: duration in seconds ``(num_frames - 1) / fps``, ``[M]`` float.
        frame_start: index of each motion's first frame in the resident buffers, ``[M]`` long (past the buffers'
            end for a motion that is not resident).
        sampling_weights: non-negative sampling weights ``[M]`` (uniform by default).
        resident_ids: the resident motions ``[R]`` long, ascending.
        all_resident: whether every motion is resident for good (no streaming).

    Example:
        >>> lib = MotionLibrary("phc_lightning/assets/motions.npz")
        >>> ids = lib.sample_motions(8)
        >>> state = lib.get_state(ids, lib.sample_times(ids))  # SimState with 8 rows
    """

    body_pos: Tensor
    body_rot: Tensor
    body_vel: Tensor
    body_angvel: Tensor
    dof_pos: Tensor
    dof_vel: Tensor

    def __init__(
        self,
        motion_file: Union[str, Path, List[RawMotion]],
        device: Union[str, torch.device] = "cpu",
        fix_height: bool = True,
        velocity_smoothing: float = DEFAULT_VELOCITY_SMOOTHING,
        max_dof_vel: Optional[float] = DEFAULT_MAX_DOF_VEL,
        index_only: bool = False,
        chunk_frames: int = CHUNK_FRAMES,
        resident_motions: Optional[int] = None,
    ) -> None:
        if not (math.isfinite(velocity_smoothing) and velocity_smoothing >= 0):
            raise ConfigError(f"velocity_smoothing must be a finite number >= 0, got {velocity_smoothing}")
        if max_dof_vel is not None and not max_dof_vel > 0:
            raise ConfigError(f"max_dof_vel must be > 0 or None, got {max_dof_vel}")
        if resident_motions is not None and int(resident_motions) < 1:
            raise ConfigError(f"resident_motions must be >= 1 or None, got {resident_motions}")
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
        self._frames_host = torch.tensor([m.num_frames for m in motions], dtype=torch.long)
        self.num_frames = self._frames_host.to(self.device)
        self.lengths = (self.num_frames - 1).to(torch.float32) / self.fps
        self.sampling_weights = torch.full((self.num_motions,), 1.0 / self.num_motions, device=self.device)
        self.fix_height = fix_height
        self.index_only = index_only
        self.chunk_frames = int(chunk_frames)
        self.resident_motions = None if resident_motions is None else int(resident_motions)
        self.all_resident = not index_only and (resident_motions is None or self.num_motions <= resident_motions)
        self._raw: Optional[List[RawMotion]] = None if self.all_resident else motions
        if self.all_resident:
            self._set_buffers(build_frames(motions, self.device, fix_height, self.velocity_smoothing,
                                           self.max_dof_vel, self.chunk_frames), torch.arange(self.num_motions))
            return
        self._set_buffers({}, torch.zeros(0, dtype=torch.long))
        # Whatever loading copied is garbage now; glibc keeps freed heap pages unless asked, and for an AMASS-sized
        # set that would double what the motions cost.
        del motion_file
        gc.collect()
        release_freed_heap()

    # ------------------------------------------------------------------ residency

    def make_resident(self, motion_ids: Tensor) -> None:
        """Hold the per-frame buffers of exactly the distinct motions among ``motion_ids`` (ids of the whole set).

        A no-op for an all-resident library, and when those motions are resident already; otherwise the current
        buffers are dropped first, then the new ones built from the motions as loaded (never two sets at once).
        Reads ``motion_ids`` on the host: call it when the envs' motions change, not every step.

        Raises:
            ValueError: an ``index_only`` library, or more distinct motions than ``resident_motions``.
        """
        if self.all_resident:
            return
        if self.index_only:
            raise ValueError("MotionLibrary.make_resident: an index_only library builds subsets, not resident sets")
        ids = torch.unique(torch.as_tensor(motion_ids).detach().to("cpu", torch.long))  # sorted
        if ids.numel() > self.resident_motions:
            raise ValueError(f"MotionLibrary.make_resident: {ids.numel()} distinct motions, more than "
                             f"resident_motions={self.resident_motions}")
        if torch.equal(ids, self._resident_host):
            return
        if ids.numel() and (int(ids[0]) < 0 or int(ids[-1]) >= self.num_motions):
            raise ValueError(f"MotionLibrary.make_resident: motion ids must be in [0, {self.num_motions})")
        self._set_buffers({}, torch.zeros(0, dtype=torch.long))
        release_freed_heap()
        motions = [self._raw[i] for i in ids.tolist()]
        self._set_buffers(build_frames(motions, self.device, self.fix_height, self.velocity_smoothing,
                                       self.max_dof_vel, self.chunk_frames), ids)

    def _set_buffers(self, buffers: Dict[str, Tensor], ids: Tensor) -> None:
        """Install the buffers of the motions ``ids`` (CPU, ascending; concatenated in that order)."""
        for name in FRAME_FIELDS:
            setattr(self, name, buffers.get(name, torch.zeros((0,) + _FRAME_SHAPES[name], device=self.device)))
        counts = self._frames_host[ids]
        starts = torch.full((self.num_motions,), _NOT_RESIDENT, dtype=torch.long)
        starts[ids] = torch.cumsum(counts, 0) - counts
        self.frame_start = starts.to(self.device)
        self._resident_host = ids
        self.resident_ids = ids.to(self.device)
        self._resident_weights = self._weights_of_resident()

    def _weights_of_resident(self) -> Tensor:
        """Sampling weights of the resident motions (uniform among them where those are all zero)."""
        if self.all_resident or self.resident_ids.numel() == 0:
            return self.sampling_weights
        weights = self.sampling_weights[self.resident_ids]
        return weights if bool((weights > 0).any()) else torch.ones_like(weights)

    @property
    def total_frames(self) -> int:
        """Number of frames over all motions."""
        return int(self._frames_host.sum())

    @property
    def resident_frames(self) -> int:
        """Number of frames whose per-frame buffers are held."""
        return int(self.body_pos.shape[0])

    def memory_bytes(self) -> Dict[str, int]:
        """Bytes held: ``frames`` (per-frame buffers, on ``device``), ``raw`` (the motions as loaded, host),
        ``metadata`` (per-motion tensors over all motions)."""
        raw = sum(m.root_pos.nbytes + m.global_rot.nbytes for m in self._raw) if self._raw is not None else 0
        per_motion = (self.fps, self.num_frames, self._frames_host, self.lengths, self.frame_start,
                      self.sampling_weights, self.resident_ids, self._resident_host)
        return {
            "frames": sum(getattr(self, name).nbytes for name in FRAME_FIELDS),
            "raw": int(raw),
            "metadata": sum(t.nbytes for t in per_motion),
        }

    def subset(self, motion_ids: Sequence[int]) -> MotionLibrary:
        """An all-resident library of the given motions (ids of this library, in that order) with the same options;
        needs a library that keeps the motions as loaded (``index_only`` or streaming)."""
        if self._raw is None:
            raise ValueError("MotionLibrary.subset needs a library that keeps its motions as loaded (index_only=True, "
                             "or more motions than resident_motions)")
        # Smaller FK groups than a training library's: their temporaries, not the chunk's frames, would dominate.
        return MotionLibrary([self._raw[int(i)] for i in motion_ids], device=self.device, fix_height=self.fix_height,
                             velocity_smoothing=self.velocity_smoothing, max_dof_vel=self.max_dof_vel,
                             chunk_frames=CHUNK_FRAMES >> 3)

    # ------------------------------------------------------------------ sampling and lookup

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
        self._resident_weights = self._weights_of_resident()

    def sample_motions(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw ``n`` motion ids ``[n]`` (long) with replacement, with probability ∝ :attr:`sampling_weights`.

        ``generator`` must live on the library's device.
        """
        return rng.multinomial(self.sampling_weights, n, generator, "MotionLibrary.sample_motions")

    def sample_resident_motions(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw ``n`` ids ``[n]`` of resident motions (AMP demos), with probability ∝ :attr:`sampling_weights`
        among them (uniform where those are all zero). The same draw as :meth:`sample_motions` when all are
        resident. ``generator`` must live on the library's device."""
        if self.all_resident:
            return self.sample_motions(n, generator)
        if self.resident_ids.numel() == 0:
            raise ValueError("MotionLibrary.sample_resident_motions: no motion is resident yet (make_resident)")
        picks = rng.multinomial(self._resident_weights, n, generator, "MotionLibrary.sample_resident_motions")
        return self.resident_ids[picks]

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
