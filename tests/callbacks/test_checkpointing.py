"""PHCCheckpoint with a real Trainer, env and evaluation: ``best.ckpt`` follows the best evaluation (also across a
resume), and every file it writes is announced to the loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.utilities import _scan_checkpoints

from callbacks import PHCCheckpoint
from phc_lightning.evaluation.metrics import evaluation_score
from phc_lightning.learner.module import PHCModule
from phc_lightning.rollout.datamodule import PHCDataModule


class UploadingLogger(CSVLogger):
    """What a logger that uploads checkpoints (W&B or MLflow with ``log_model="all"``) would upload: the files
    Lightning's own scan finds in the callback each ``after_save_checkpoint`` hands it, with their tags."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir)
        self.uploaded: Dict[str, Set[str]] = {}

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        for _, path, _, tag in _scan_checkpoints(checkpoint_callback, {}):
            self.uploaded.setdefault(Path(path).name, set()).add(tag)


class RecordEvaluations(L.Callback):
    """``(epoch, success_rate, mpjpe_g, policy weights)`` of every evaluation during fit."""

    def __init__(self) -> None:
        self.evals: List[Tuple[int, float, float, Dict[str, torch.Tensor]]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        weights = {k: v.clone() for k, v in pl_module.policy.state_dict().items()}
        self.evals.append((trainer.current_epoch, float(m["eval/success_rate"]), float(m["eval/mpjpe_g"]), weights))


def fit(tmp_path: Path, max_epochs: int, ckpt_path: str = None, **trainer_kwargs: Any):
    checkpoint, recorder = PHCCheckpoint(dirpath=str(tmp_path / "ckpts"), every_n_epochs=1), RecordEvaluations()
    logger = UploadingLogger(str(tmp_path))
    trainer = L.Trainer(max_epochs=max_epochs, check_val_every_n_epoch=1, num_sanity_val_steps=0, logger=logger,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=[checkpoint, recorder], **trainer_kwargs)
    dm = PHCDataModule(num_envs=8, num_threads=1, horizon=8, update_epochs=1, num_minibatches=1, seed=0)
    module = PHCModule(actor_hidden=[32], critic_hidden=[32], learning_rate=3e-3)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return checkpoint, recorder, logger


def best_of(evals: List[Tuple[int, float, float, Dict[str, torch.Tensor]]]):
    """The first evaluation of the highest score (a later one replaces it only when strictly better)."""
    return max(reversed(evals), key=lambda e: evaluation_score(e[1], e[2]))


def test_best_ckpt_holds_the_best_evaluation_and_a_resumed_run_keeps_comparing_against_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint, recorder, logger = fit(tmp_path, 4)
    best = best_of(recorder.evals)
    assert [e[0] for e in recorder.evals] == [0, 1, 2, 3]
    assert best[0] < 3  # a later, worse evaluation did not replace it (else the test would prove little)
    saved = torch.load(tmp_path / "ckpts" / "best.ckpt", weights_only=True)
    assert saved["epoch"] == best[0]
    for key, value in best[3].items():
        assert torch.equal(saved["state_dict"]["policy." + key], value), key
    assert checkpoint.best_eval == {"success_rate": best[1], "mpjpe_g": best[2], "epoch": best[0],
                                    "env_steps": (best[0] + 1) * 8 * 8}
    # every file written is announced to the loggers: best.ckpt as the best one
    assert logger.uploaded["best.ckpt"] == {"best"}
    assert {"last.ckpt", "epoch00003.ckpt"} <= set(logger.uploaded)

    # the best score travels in the callback's state: a resumed run compares against it, not against its first
    # evaluation
    resumed, recorder, _ = fit(tmp_path, 6, ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    assert [e[0] for e in recorder.evals] == [4, 5]
    later_best = best_of(recorder.evals)
    if evaluation_score(later_best[1], later_best[2]) > evaluation_score(best[1], best[2]):
        assert resumed.best_eval["epoch"] == later_best[0]
    else:
        assert resumed.best_eval == checkpoint.best_eval
        assert torch.load(tmp_path / "ckpts" / "best.ckpt", weights_only=True)["epoch"] == best[0]


class RaiseAtEpoch(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("stop here")


def test_the_interrupted_checkpoint_is_announced_to_the_loggers(tmp_path: Path) -> None:
    logger = UploadingLogger(str(tmp_path))
    trainer = L.Trainer(max_epochs=3, limit_val_batches=0, logger=logger, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=[PHCCheckpoint(dirpath=str(tmp_path / "ckpts")), RaiseAtEpoch()])
    dm = PHCDataModule(num_envs=4, num_threads=1, horizon=4, update_epochs=1, num_minibatches=1)
    with pytest.raises(RuntimeError, match="stop here"):
        trainer.fit(PHCModule(actor_hidden=[16], critic_hidden=[16]), datamodule=dm)
    assert (tmp_path / "ckpts" / "interrupted.ckpt").is_file()
    assert {"last.ckpt", "interrupted.ckpt"} <= set(logger.uploaded)
