"""The PHC evaluation side of ``PHCModule``: Lightning's validation hooks feed torchmetrics and per-motion rows.

The datamodule's ``val_dataloader`` plays every motion once (:func:`phc_lightning.evaluation.playback.play_motions`);
each batch is one chunk of finished motions. ``EvalStats`` reads :meth:`TrackingEvaluation.eval_results` to write files,
and ``MotionResampling`` reads :meth:`TrackingEvaluation.eval_failed`.

With several processes each plays its share of the motions: torchmetrics sums the metric states over the
processes, and the per-motion rows are gathered on the first read after the evaluation (every rank reads them at
the same hooks), so every rank sees every motion's row.

Two conventions are accumulated from the same play (docs/evaluation.md): ours (``success_rate``, ``mpjpe_g``, ...)
and PHC's own (``phc/success_rate``, ``phc/mpjpe_g``, ...; logged as ``eval/phc/...``).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from phc_lightning.evaluation.metrics import ERROR_NAMES, MotionTrackingMetrics
from phc_lightning.evaluation.phc_convention import PHC_PREFIX
from phc_lightning.evaluation.playback import per_motion_rows
from phc_lightning.rl import distributed

Tensor = torch.Tensor


class TrackingEvaluation:
    """Helpers of :class:`phc_lightning.learner.module.PHCModule` (a ``LightningModule``): call
    :meth:`_init_evaluation` in ``__init__``; PHCModule's validation hooks call :meth:`_start_evaluation`,
    :meth:`_accumulate_eval` and :meth:`_log_evaluation`."""

    def _init_evaluation(self) -> None:
        self.eval_metrics = MotionTrackingMetrics()
        self.eval_metrics_phc = MotionTrackingMetrics()  # the same motions under PHC's convention
        self._eval_rows: List[Dict[str, float]] = []
        self._rows_gathered = False

    def _start_evaluation(self) -> None:
        """Fresh metric states and per-motion rows for this evaluation."""
        self.eval_metrics.reset()
        self.eval_metrics_phc.reset()
        self._eval_rows = []
        self._rows_gathered = False

    def _log_evaluation(self) -> None:
        """Log ``eval/*`` (torchmetrics syncs the sums across processes)."""
        summary, _ = self.eval_results()
        self.log_dict({"eval/" + k: v for k, v in summary.items()}, batch_size=1)
        self.log_env_step()

    def _accumulate_eval(self, batch: Dict[str, Tensor]) -> None:
        """Add one chunk of played motions (:func:`~phc_lightning.evaluation.playback.play_motions` output)."""
        sums = {name: batch[f"sums/{name}"] for name in ERROR_NAMES}
        frames = {name: batch[f"frames/{name}"] for name in ERROR_NAMES}
        self.eval_metrics.update(None, None, batch["success"], sums=sums, frames=frames)
        if "phc/success" in batch:
            sums = {name: batch[f"phc/sums/{name}"] for name in ERROR_NAMES}
            frames = {name: batch[f"phc/frames/{name}"] for name in ERROR_NAMES}
            self.eval_metrics_phc.update(None, None, batch["phc/success"], sums=sums, frames=frames)
        self._eval_rows.extend(per_motion_rows(batch))

    def eval_results(self) -> Tuple[Dict[str, float], List[Dict[str, float]]]:
        """Summary metrics of the current evaluation and its per-motion rows (sorted by motion id).

        The summary holds our convention's keys (``success_rate``, ``mpjpe_g``, ...) and PHC's (``phc/...``).
        """
        summary = {k: float(v) for k, v in self.eval_metrics.compute().items()}
        summary.update({PHC_PREFIX + k: float(v) for k, v in self.eval_metrics_phc.compute().items()})
        return summary, sorted(self._all_rows(), key=lambda r: r["motion_id"])

    def _all_rows(self) -> List[Dict[str, float]]:
        """The rows of every process (gathered once per evaluation; a collective call with several)."""
        if not self._rows_gathered:
            self._eval_rows = [row for part in distributed.gather_objects(self._eval_rows) for row in part]
            self._rows_gathered = True
        return self._eval_rows

    def eval_failed(self, num_motions: int) -> Tensor:
        """``[num_motions]`` bool: motions that failed in the current evaluation."""
        failed = torch.zeros(num_motions, dtype=torch.bool)
        for row in self._all_rows():
            failed[row["motion_id"]] = not row["success"]
        return failed

    @torch.no_grad()
    def evaluate(self, dataloader) -> Tuple[Dict[str, float], List[Dict[str, float]]]:
        """Run an evaluation outside Lightning's loops (the final evaluation after fit)."""
        self._start_evaluation()
        was_training = self.training
        self.eval()
        for batch in dataloader:
            self._accumulate_eval(batch)
        self.train(was_training)
        return self.eval_results()

