"""Checkpoints of one run: periodic ones pruned to the newest K, ``last`` at a fixed cadence, and a separately named
checkpoint when training is interrupted.

Built on Lightning's ``ModelCheckpoint`` (which writes through an atomic temp-file-and-rename, so a half-written
file never becomes a checkpoint). What exact resume needs lives in the module and datamodule state (RNG streams,
env and physics state, counters), which Lightning puts in every checkpoint, so any checkpoint callback (also a
plain ``ModelCheckpoint``) resumes exactly from an epoch boundary. Added here:

- ``last.ckpt`` every ``last_every_n_epochs`` epochs and at a normal end, written by this class itself, so the
  cadence is the same on every Lightning version (2.3 and 2.6 differ in when ``save_last`` fires);
- on Ctrl-C or an exception, ``interrupted.ckpt``: a mid-iteration state, named apart so that ``--ckpt_path last``
  always means the last epoch boundary (resuming from ``interrupted.ckpt`` works, but is not bit-exact);
- ``best.ckpt``: the policy of the best evaluation during fit (higher success rate, then lower ``mpjpe_g``), written
  right after an evaluation that beats the best so far; the best score is part of this callback's state, so a
  resumed run keeps comparing against it. It is for ``validate`` / ``render`` / ``export`` / ``init_from``;
  resume from ``last.ckpt`` (``best.ckpt`` is saved between the evaluation and the epoch's end hooks).

Every file written is announced to the loggers (``after_save_checkpoint``), so a logger that uploads checkpoints
(W&B or MLflow with ``log_model``) uploads these too.

Everything stored is tensors or primitives: checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional
from weakref import proxy

import lightning as L
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import ModelCheckpoint

from phc_lightning.evaluation.metrics import evaluation_score

INTERRUPTED_NAME = "interrupted"
BEST_NAME = "best"


class PHCCheckpoint(ModelCheckpoint):
    """Every ``every_n_epochs`` epochs (newest ``save_top_k`` kept) plus ``last``, ``best`` and ``interrupted``.

    Args:
        dirpath: where checkpoints go; default ``<run dir>/checkpoints`` (the CLI's run directory).
        every_n_epochs: interval of the kept, periodic checkpoints in epochs (PPO iterations).
        save_top_k: how many periodic checkpoints to keep, newest first (-1: all). ``last`` is always kept.
        last_every_n_epochs: interval of ``last.ckpt`` updates in epochs.
    """

    def __init__(
        self,
        dirpath: Optional[str] = None,
        every_n_epochs: PositiveInt = 50,
        save_top_k: int = 3,
        last_every_n_epochs: PositiveInt = 1,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="epoch{epoch:05d}",
            auto_insert_metric_name=False,
            every_n_epochs=every_n_epochs,
            save_top_k=save_top_k,
            monitor="epoch",  # with mode=max the newest checkpoints are the ones kept
            mode="max",
            save_last=False,  # written below, at our own cadence
            save_on_train_epoch_end=True,
        )
        self.last_every_n_epochs = last_every_n_epochs
        self.best_eval: Optional[Dict[str, float]] = None
        """The best evaluation during fit so far: ``success_rate``, ``mpjpe_g``, ``epoch``, ``env_steps``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Default folder: ``<trainer.default_root_dir>/checkpoints`` (the run directory), whatever the loggers are
        (Lightning's default would follow the first logger, e.g. into a W&B run id folder)."""
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """From here on a crash has training progress worth saving."""
        self._training_started = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Periodic checkpoint (Lightning's logic), then ``last`` at its own cadence."""
        super().on_train_epoch_end(trainer, pl_module)
        if (trainer.current_epoch + 1) % self.last_every_n_epochs == 0:
            self._save_named(trainer, self.CHECKPOINT_NAME_LAST)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After an evaluation during fit (its ``eval/*`` are logged): ``best.ckpt`` if it beats the best so far."""
        super().on_validation_end(trainer, pl_module)
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or trainer.state.fn != "fit" or "eval/success_rate" not in metrics:
            return
        # the same on every rank (torchmetrics syncs the evaluation), so every rank joins the save or none does
        current = {"success_rate": float(metrics["eval/success_rate"]),
                   "mpjpe_g": float(metrics.get("eval/mpjpe_g", math.nan))}
        best = self.best_eval
        if best is not None and evaluation_score(**current) <= evaluation_score(best["success_rate"], best["mpjpe_g"]):
            return
        self.best_eval = dict(current, epoch=trainer.current_epoch, env_steps=int(getattr(pl_module, "env_steps", 0)))
        self._save_named(trainer, BEST_NAME)

    def state_dict(self) -> Dict[str, Any]:
        """Lightning's ``ModelCheckpoint`` state and the best evaluation so far."""
        return {**super().state_dict(), "best_eval": self.best_eval}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a resumed run keeps comparing against the best evaluation of the run)."""
        state_dict = dict(state_dict)
        self.best_eval = state_dict.pop("best_eval", None)
        super().load_state_dict(state_dict)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A normal end always leaves ``last.ckpt`` of the final state."""
        self._save_named(trainer, self.CHECKPOINT_NAME_LAST)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Ctrl-C or a crash: save what we have as ``interrupted.ckpt`` rather than lose the interval.

        Not before training started: an error while setting up or restoring (say, a resume with other data
        settings) has nothing worth saving. Not with several processes either: saving gathers every rank's data
        state, and a rank that failed (or was killed) would never join, so the others would hang; ``last.ckpt``
        of the last epoch boundary is kept.
        """
        if trainer.world_size > 1:
            return
        if self.dirpath is not None and getattr(self, "_training_started", False):
            self._save_named(trainer, INTERRUPTED_NAME)

    def _save_named(self, trainer: L.Trainer, name: str) -> None:
        if self.dirpath is None:
            return
        if trainer.global_rank == 0:
            os.makedirs(self.dirpath, exist_ok=True)
        path = os.path.join(str(self.dirpath), name + self.FILE_EXTENSION)
        trainer.save_checkpoint(path, weights_only=False)  # full state: optimizers, loops, callbacks
        if name == self.CHECKPOINT_NAME_LAST:
            self.last_model_path = path
        if trainer.is_global_zero:  # as ModelCheckpoint does for the files it writes itself
            for logger in trainer.loggers:
                # the view itself, not a weak proxy: a logger may keep it until it uploads (W&B log_model=True)
                logger.after_save_checkpoint(_SavedFile(self, path, best=name == BEST_NAME))


class _SavedFile:
    """The callback as a logger's ``after_save_checkpoint`` sees it, for one file written under a name.

    Loggers that upload checkpoints (W&B, MLflow) look for files in the callback's ``last_model_path``,
    ``best_model_path`` and ``best_k_models``; this view shows them the named file there (``best.ckpt`` as the best
    one), and everything else of the callback as it is.
    """

    def __init__(self, callback: PHCCheckpoint, path: str, best: bool) -> None:
        self._callback = proxy(callback)
        self.last_model_path = path
        self.best_model_path = path if best else ""
        self.best_model_score = None
        self.best_k_models: Dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._callback, name)
