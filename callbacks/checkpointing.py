"""Checkpoints of one run: periodic ones pruned to the newest K, ``last`` at a fixed cadence, and a separately named
checkpoint when training is interrupted.

Built on Lightning's ``ModelCheckpoint`` (which writes through an atomic temp-file-and-rename, so a half-written
file never becomes a checkpoint). What exact resume needs lives in the module and datamodule state (RNG streams,
env and physics state, counters), which Lightning puts in every checkpoint, so any checkpoint callback (also a
plain ``ModelCheckpoint``) resumes exactly from an epoch boundary. Added here:

- ``last.ckpt`` every ``last_every_n_epochs`` epochs and at a normal end, written by this class itself, so the
  cadence is the same on every Lightning version (2.3 and 2.6 differ in when ``save_last`` fires);
- on Ctrl-C or an exception, ``interrupted.ckpt``: a mid-iteration state, named apart so that ``--ckpt_path last``
  always means the last epoch boundary (resuming from ``interrupted.ckpt`` works, but is not bit-exact).

Everything stored is tensors or primitives: checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from typing import Optional

import lightning as L
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import ModelCheckpoint

INTERRUPTED_NAME = "interrupted"


class PHCCheckpoint(ModelCheckpoint):
    """Every ``every_n_epochs`` epochs (newest ``save_top_k`` kept) plus ``last`` and ``interrupted``.

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
