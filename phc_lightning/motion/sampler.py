"""Failure-driven motion sampling weights (PHC progressive multiplicative control policy, "PMCP").

After every evaluation the caller passes which motions failed; :meth:`MotionSampler.weights` then gives the
sampling probabilities for training resets (fed to ``MotionLibrary.set_sampling_weights``). Modes:

=========  ===================================================================================================
mode       weights
=========  ===================================================================================================
``soft``   ∝ cumulative failure count per motion (PHC soft PMCP); uniform while nothing has ever failed
``hard``   uniform over the motions that failed in the LAST evaluation; uniform over all if none failed
``decay``  per-motion w, initially 1/M; after an evaluation failed → 1, successful → max(w·decay, 1/M); ∝ w
=========  ===================================================================================================

With ``uniform_mix`` m > 0 the weights are ``(1 - m) · mode weights + m / M``: every motion keeps at least m / M of
the draws, so motions the policy already tracks stay in training instead of being forgotten (PHC: m = 0, where a
motion that never failed is never drawn again).

The history for every mode is kept whatever the mode, and :meth:`MotionSampler.state_dict` holds only
tensors and ints, so it survives ``torch.save`` / ``torch.load(weights_only=True)`` and resuming is exact.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from phc_lightning.core.errors import ConfigError

Tensor = torch.Tensor

SAMPLER_MODES = ("soft", "hard", "decay")


class MotionSampler:
    """Per-motion sampling weights driven by evaluation failures.

    Args:
        num_motions: number of motions M in the library (>= 1).
        mode: ``"soft"``, ``"hard"`` or ``"decay"`` (see module docstring).
        decay: multiplicative decay of a successful motion's weight per evaluation in ``decay`` mode, in (0, 1].
        uniform_mix: share of uniform sampling mixed into the mode's weights, in [0, 1] (PHC: 0).

    Attributes:
        failure_counts: ``[M]`` long, how many evaluations each motion failed (all time).
        last_failed: ``[M]`` bool, failures of the last evaluation.
        decay_weights: ``[M]`` float64, the unnormalized ``decay``-mode weights.
        num_updates: number of evaluations seen.
    """

    def __init__(self, num_motions: int, mode: str = "soft", decay: float = 0.999, uniform_mix: float = 0.0) -> None:
        if int(num_motions) < 1:
            raise ConfigError(f"num_motions: must be >= 1, got {num_motions}")
        if mode not in SAMPLER_MODES:
            raise ConfigError(f"mode: unknown sampler mode {mode!r}, expected one of {', '.join(SAMPLER_MODES)}")
        if not 0.0 < float(decay) <= 1.0:
            raise ConfigError(f"decay: must be in (0, 1], got {decay}")
        if not 0.0 <= float(uniform_mix) <= 1.0:
            raise ConfigError(f"uniform_mix: must be in [0, 1], got {uniform_mix}")
        self.uniform_mix = float(uniform_mix)
        self.num_motions = int(num_motions)
        self.mode = mode
        self.decay = float(decay)
        self.failure_counts = torch.zeros(self.num_motions, dtype=torch.long)
        self.last_failed = torch.zeros(self.num_motions, dtype=torch.bool)
        self.decay_weights = torch.full((self.num_motions,), 1.0 / self.num_motions, dtype=torch.float64)
        self.num_updates = 0

    def update(self, failed: Tensor) -> None:
        """Record one evaluation.

        Args:
            failed: ``[M]`` bool, True for each motion that failed this evaluation (any device).
        """
        failed = torch.as_tensor(failed).detach().cpu()
        if failed.dtype != torch.bool or failed.shape != (self.num_motions,):
            raise ValueError(
                f"failed: expected a bool tensor of shape [{self.num_motions}], got {failed.dtype} of shape "
                f"{list(failed.shape)}"
            )
        self.failure_counts += failed.long()
        self.last_failed = failed.clone()
        floor = 1.0 / self.num_motions
        decayed = (self.decay_weights * self.decay).clamp_min(floor)
        self.decay_weights = torch.where(failed, torch.ones_like(decayed), decayed)
        self.num_updates += 1

    def weights(self) -> Tensor:
        """Sampling probabilities for the current mode, ``[M]`` float32 on CPU, summing to 1."""
        if self.mode == "soft":
            raw = self.failure_counts.double()
        elif self.mode == "hard":
            raw = self.last_failed.double()
        else:
            raw = self.decay_weights
        if raw.sum() <= 0:  # soft: never failed; hard: nothing failed last time
            raw = torch.ones_like(raw)
        mixed = (1.0 - self.uniform_mix) * raw / raw.sum() + self.uniform_mix / self.num_motions
        return mixed.float()

    def state_dict(self) -> Dict[str, Any]:
        """History as tensors and ints only (``torch.load(weights_only=True)``-safe)."""
        return {
            "num_motions": self.num_motions,
            "num_updates": self.num_updates,
            "failure_counts": self.failure_counts.clone(),
            "last_failed": self.last_failed.clone(),
            "decay_weights": self.decay_weights.clone(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the history saved by :meth:`state_dict`; mode and decay stay as constructed (from config)."""
        missing = [
            k
            for k in ("num_motions", "num_updates", "failure_counts", "last_failed", "decay_weights")
            if k not in state
        ]
        if missing:
            raise KeyError(f"MotionSampler state: missing keys {missing}")
        if int(state["num_motions"]) != self.num_motions:
            raise ValueError(
                f"MotionSampler state: saved for {int(state['num_motions'])} motions, this library has "
                f"{self.num_motions}"
            )
        shapes = {k: tuple(torch.as_tensor(state[k]).shape) for k in ("failure_counts", "last_failed", "decay_weights")}
        bad = {k: s for k, s in shapes.items() if s != (self.num_motions,)}
        if bad:
            raise ValueError(f"MotionSampler state: expected shape ({self.num_motions},), got {bad}")
        self.num_updates = int(state["num_updates"])
        self.failure_counts = torch.as_tensor(state["failure_counts"]).cpu().long().clone()
        self.last_failed = torch.as_tensor(state["last_failed"]).cpu().bool().clone()
        self.decay_weights = torch.as_tensor(state["decay_weights"]).cpu().double().clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_motions={self.num_motions}, mode={self.mode!r}, decay={self.decay}, "
            f"num_updates={self.num_updates})"
        )
