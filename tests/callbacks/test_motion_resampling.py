"""MotionResampling with a real Trainer, env and evaluation: failures drive the weights and the envs' motions."""

from __future__ import annotations

from pathlib import Path
from typing import List

import lightning as L
import pytest
import torch

from callbacks import EvalStats, MotionResampling
from phc_lightning.learner.module import PHCModule
from phc_lightning.rollout.datamodule import PHCDataModule

FAILED = torch.tensor([False, True, False, True, False, False, False])  # the 7 bundled motions


class RecordEnvMotions(L.Callback):
    """Placed after MotionResampling: sees each epoch's motions after any re-draw."""

    def __init__(self) -> None:
        self.motion_ids: List[torch.Tensor] = []
        self.weights: List[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.motion_ids.append(trainer.datamodule.env.motion_ids.clone())
        self.weights.append(trainer.datamodule.motions.sampling_weights.clone())


@pytest.mark.parametrize("mode, expected", [
    ("soft", torch.tensor([0, 1, 0, 1, 0, 0, 0]) / 2.0),
    ("hard", torch.tensor([0, 1, 0, 1, 0, 0, 0]) / 2.0),
])
def test_evaluation_failures_drive_weights_and_redraw_env_motions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  mode: str, expected: torch.Tensor) -> None:
    # The evaluation really runs; only its verdict is fixed so that the expected weights are known exactly.
    monkeypatch.setattr(PHCModule, "eval_failed", lambda self, n: FAILED.clone())
    resampling = MotionResampling(every_n_epochs=1, mode=mode, seed=0)
    recorder = RecordEnvMotions()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path),
                        callbacks=[EvalStats(final=False), resampling, recorder])
    data = PHCDataModule(num_envs=16, num_threads=1, horizon=4, update_epochs=1, num_minibatches=1)
    trainer.fit(PHCModule(actor_hidden=[16], critic_hidden=[16]), datamodule=data)

    torch.testing.assert_close(resampling.sampler.weights(), expected.float())
    torch.testing.assert_close(recorder.weights[-1] / recorder.weights[-1].sum(), expected.float())
    for ids in recorder.motion_ids:
        assert set(ids.tolist()) <= {1, 3}  # every env now tracks one of the failed motions
    assert len(set(recorder.motion_ids[-1].tolist())) == 2


def test_decay_mode_weights_after_an_evaluation() -> None:
    from phc_lightning.motion.sampler import MotionSampler

    sampler = MotionSampler(7, mode="decay", decay=0.5)
    sampler.update(FAILED)
    floor = 1 / 7  # weights start at the floor
    raw = torch.tensor([floor, 1, floor, 1, floor, floor, floor])  # failed -> 1, successful -> max(w * 0.5, 1/7)
    torch.testing.assert_close(sampler.weights(), (raw / raw.sum()).float())
    sampler.update(torch.tensor([False, False, False, True, False, False, False]))  # motion 1 now succeeds
    raw = torch.tensor([floor, 0.5, floor, 1, floor, floor, floor])
    torch.testing.assert_close(sampler.weights(), (raw / raw.sum()).float())
