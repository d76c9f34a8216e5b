"""Checkpoints that can continue the same run exactly, and that survive crashes.

Built on Lightning's ``ModelCheckpoint`` (which already writes through an atomic temp-file-and-rename, so a
half-written file never becomes ``last.ckpt``). Added here:
- ``last.ckpt`` is also written at a normal end, on Ctrl-C and on an exception, so at most one checkpoint
  interval is lost even by a crash (a ``kill -9`` loses the epochs since the last interval);
- the global torch RNG states (policy sampling) travel in the checkpoint, so a resumed run draws the same actions.
Everything stored is tensors or primitives: checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class PHCCheckpoint(ModelCheckpoint):
    """Every ``every_n_epochs`` epochs plus ``last``, on any way out of training.

    Args:
        dirpath: where checkpoints go; keep it fixed per run so ``--ckpt_path last`` finds it on resume.
        every_n_epochs: checkpoint interval in epochs (PPO iterations).
        save_top_k: how many periodic checkpoints to keep (-1: all). ``last.ckpt`` is always kept.
    """

    def __init__(self, dirpath: Optional[str] = None, every_n_epochs: int = 50, save_top_k: int = 3) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"checkpoint every_n_epochs must be >= 1, got {every_n_epochs}")
        super().__init__(
            dirpath=dirpath,
            filename="epoch{epoch:05d}",
            auto_insert_metric_name=False,
            every_n_epochs=every_n_epochs,
            save_top_k=save_top_k,
            monitor="epoch",  # with mode=max the newest checkpoints are the ones kept
            mode="max",
            save_last=True,
            save_on_train_epoch_end=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """From here on a crash has training progress worth saving."""
        self._training_started = True

    def _save_final(self, trainer: L.Trainer) -> None:
        if trainer.global_rank == 0 and self.dirpath is not None:
            os.makedirs(self.dirpath, exist_ok=True)
        path = os.path.join(str(self.dirpath), self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        trainer.save_checkpoint(path, weights_only=False)  # full state: optimizers, loops, callbacks
        self.last_model_path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A normal end always leaves ``last.ckpt`` of the final state."""
        self._save_final(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Ctrl-C or a crash: save what we have rather than lose the interval.

        Not before training started: an error while setting up or restoring (say, a resume with other data
        settings) must not overwrite the ``last.ckpt`` the user is trying to continue from.
        """
        if self.dirpath is not None and getattr(self, "_training_started", False):
            self._save_final(trainer)

    def state_dict(self) -> Dict[str, Any]:
        """ModelCheckpoint's own state plus the RNG states that drive action sampling."""
        state = super().state_dict()
        state["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["cuda_rng_states"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore ModelCheckpoint's state and the RNGs."""
        state = dict(state_dict)
        rng = state.pop("torch_rng_state", None)
        cuda_rng = state.pop("cuda_rng_states", None)
        super().load_state_dict(state)
        if rng is not None:
            torch.set_rng_state(rng)
        if cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_rng)
