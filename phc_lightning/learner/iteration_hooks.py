"""The iteration side of ``PHCModule``: the rollout's summary opens an iteration, its last minibatch closes it.

One Lightning epoch is one PPO iteration. The data side hands the learner a summary of its collection with the first
minibatch (:data:`phc_lightning.rollout.dataset.ITERATION_KEY`); after the last minibatch the normalizers learn from the
iteration's data and what the rollout saw is logged against env steps.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from phc_lightning.rl import distributed
from phc_lightning.rollout.dataset import ITERATION_KEY


class IterationHooks:
    """Helpers of :class:`phc_lightning.learner.module.PHCModule` (a ``LightningModule`` with ``env_steps`` and
    ``update_normalizers``): call :meth:`_init_iteration` in ``__init__``; PHCModule's ``on_train_batch_start`` calls
    :meth:`_open_iteration`, its ``on_train_batch_end`` and ``on_train_epoch_end`` :meth:`_close_iteration`."""

    def _init_iteration(self) -> None:
        self._iteration: Optional[Dict[str, Any]] = None
        self._iteration_start = self._learn_end = 0.0
        self._minibatches_trained = 0
        self._kl_stopped = False
        self.last_iteration: Dict[str, float] = {}  # steps, collect and learn seconds of the last iteration

    def _open_iteration(self, batch: Dict[str, Any], batch_idx: int) -> None:
        """The first minibatch of an iteration carries the rollout's summary: count its env steps now, so hooks
        of the next epoch and the logs see the steps collected so far (``env_steps`` is the run's one counter, saved
        with the module)."""
        summary = batch.pop(ITERATION_KEY, None)
        if summary is None:
            if batch_idx == 0:
                raise RuntimeError(
                    "PHCModule: the epoch's first minibatch carries no rollout summary (batch key 'iteration'), so "
                    "the observation normalizer would never learn; train it with PHCDataModule (phc_lightning."
                    "rollout) or a data source that adds rollout.iteration_summary(...) to each iteration's first "
                    "minibatch"
                )
            return
        self._iteration = summary
        self._iteration_start = self._learn_end = time.perf_counter()
        self._minibatches_trained = 0
        self._kl_stopped = False
        self.env_steps += int(summary["env_steps"])

    def _close_iteration(self) -> None:
        """Normalizers learn from the iteration's data (only now, so collection and update saw the same
        normalization), then log what the rollout saw and how the time was split, against env steps."""
        summary, self._iteration = self._iteration, None
        if summary is None:
            return
        self.update_normalizers(summary["obs"], summary["returns"])
        logs = dict(summary["stats"])
        collect = logs.get("perf/collect_time", 0.0)
        learn = self._learn_end - self._iteration_start
        logs["perf/learn_time"] = learn
        logs["perf/collect_fraction"] = collect / (collect + learn) if collect + learn > 0 else 0.0
        logs["charts/SPS"] = summary["env_steps"] / (collect + learn) if collect + learn > 0 else 0.0
        logs["charts/env_steps"] = float(self.env_steps)
        logs["charts/update_fraction"] = self._minibatches_trained / max(self.trainer.num_training_batches, 1)
        self.last_iteration = {"env_steps": int(summary["env_steps"]), "collect_time": collect, "learn_time": learn}
        logs = distributed.mean_logs_across_ranks(logs)  # keys may differ by rank: no per-key sync_dist
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=1)
        self.log_env_step()
        total = summary["total_timesteps"]
        if total is not None and int(self.env_steps) >= total:
            self.trainer.should_stop = True

    def log_env_step(self) -> None:
        """Env steps as the x-axis of what is logged now (Lightning takes a logged ``step`` as the step)."""
        self.log("step", float(self.env_steps), on_step=False, on_epoch=True, batch_size=1)
        self.log("epoch", float(self.current_epoch), on_step=False, on_epoch=True, batch_size=1)
