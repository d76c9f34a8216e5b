"""``MotionResampling``: failure-driven motion sampling (PHC's PMCP) fed by the evaluations."""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning as L
import torch

from phc_lightning.core import rng
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.seeding import derive_seed
from phc_lightning.motion.sampler import MotionSampler


class MotionResampling(L.Callback):
    """Every ``every_n_epochs`` epochs, re-draw each env's motion from failure-driven weights.

    Every evaluation during fit updates the per-motion failure history; the weights follow the sampler's mode
    (``soft``: ∝ cumulative failures, uniform while nothing failed; ``hard``: uniform over the last failures;
    ``decay``: failed → 1, successful × decay, floor 1/M). Then the envs are reset on their new motions, once: the
    next iteration continues from those reset states, each env with a blank recurrent memory.

    With several processes the failures come from the gathered evaluation (every motion once overall), so the
    weights are the same on every rank; the draw RNG is the same too: each rank draws the ids of all ranks' envs
    and keeps its own slice, so the ranks train on different motions and rank 0's saved RNG resumes them all.

    Args:
        every_n_epochs: resampling interval in epochs.
        mode: ``soft``, ``hard`` or ``decay``.
        decay: per-evaluation decay of successful motions' weights in ``decay`` mode.
        uniform_mix: share of uniform draws mixed into the failure-driven weights, in [0, 1]; keeps motions that
            are already tracked in training (PHC: 0, so a motion that never failed is never drawn again).
        seed: seeds the motion draws; null: derived from ``seed_everything``.
    """

    def __init__(
        self,
        every_n_epochs: int = 500,
        mode: str = "soft",
        decay: float = 0.999,
        uniform_mix: float = 0.0,
        seed: Optional[int] = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ConfigError(f"MotionResampling every_n_epochs must be >= 1, got {every_n_epochs}")
        # Validates mode, decay and uniform_mix now, with the field name in the error.
        MotionSampler(1, mode=mode, decay=decay, uniform_mix=uniform_mix)
        self.every_n_epochs = every_n_epochs
        self.mode = mode
        self.decay = decay
        self.uniform_mix = uniform_mix
        self.seed = seed
        self.generator: Optional[torch.Generator] = None  # seeded in setup, once the run seed and device are known
        self.sampler: Optional[MotionSampler] = None
        self._pending: Optional[Dict[str, Any]] = None
        self._pending_rng: Optional[torch.Tensor] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Size the sampler to the loaded motions; seed the draws, on the motion library's device (where they run)."""
        motions = trainer.datamodule.motions
        if self.generator is None or rng.canonical_device(self.generator.device) != rng.canonical_device(
                motions.device):
            self.generator = rng.new_generator(derive_seed(self.seed, "motion_resampling"), motions.device)
        if self._pending_rng is not None:
            self.generator.set_state(self._pending_rng)
            self._pending_rng = None
        if self.sampler is None or len(self.sampler.failure_counts) != motions.num_motions:
            self.sampler = MotionSampler(motions.num_motions, mode=self.mode, decay=self.decay,
                                         uniform_mix=self.uniform_mix)
        if self._pending is not None:
            self._restore(trainer)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record which motions failed in this evaluation (only evaluations during fit drive training)."""
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        failed = pl_module.eval_failed(trainer.datamodule.motions.num_motions)
        self.sampler.update(failed)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """At the interval, set the library's weights and re-draw every env's motion."""
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.resample(trainer)

    def resample(self, trainer: L.Trainer) -> torch.Tensor:
        """Apply the current weights and move every env to a freshly drawn motion; returns the new ids."""
        dm = trainer.datamodule
        dm.motions.set_sampling_weights(self.sampler.weights())
        n, rank, world = dm.env.num_envs, trainer.global_rank, trainer.world_size
        ids = dm.motions.sample_motions(n * world, generator=self.generator)[rank * n : (rank + 1) * n]
        # assign_motions resets every env onto its new motion: the next iteration starts from those states (one
        # reference-state init, one draw of the env's RNG)
        dm.rollout.restart_from(dm.env.assign_motions(ids))
        return ids

    def state_dict(self) -> Dict[str, Any]:
        """Failure history and draw RNG (tensors/primitives only)."""
        state: Dict[str, Any] = {}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore on resume; applied once the motions are loaded."""
        self._pending = dict(state_dict)
        saved_rng = self._pending.pop("generator", None)
        if saved_rng is not None and self.generator is not None:  # Lightning restores callbacks after setup
            self.generator.set_state(saved_rng)
        else:
            self._pending_rng = saved_rng

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Resumed runs sample with the restored weights from the first iteration on."""
        if self._pending is not None:
            self._restore(trainer)

    def _restore(self, trainer: L.Trainer) -> None:
        if self.sampler is None or "sampler" not in self._pending:
            return
        self.sampler.load_state_dict(self._pending["sampler"])
        trainer.datamodule.motions.set_sampling_weights(self.sampler.weights())
        self._pending = None
