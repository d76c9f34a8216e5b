"""MotionResampling with a real Trainer, env and evaluation: failures drive the weights and the envs' motions."""

from __future__ import annotations

from pathlib import Path
from typing import List

import lightning as L
import pytest
import torch

from callbacks import EvalStats, MotionResampling
from phc_lightning.learner.module import PHCModule
from phc_lightning.rl.recurrent import STATE_KEY
from phc_lightning.rollout.datamodule import PHCDataModule
from phc_lightning.rollout.dataset import ITERATION_KEY

FAILED = torch.tensor([False, True, False, True, False, False, False])  # the 7 bundled motions


class RecordEnvMotions(L.Callback):
    """Placed after MotionResampling: sees each epoch's motions after any re-draw."""

    def __init__(self) -> None:
        self.motion_ids: List[torch.Tensor] = []
        self.weights: List[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.motion_ids.append(trainer.datamodule.env.motion_ids.clone())
        self.weights.append(trainer.datamodule.motions.sampling_weights.clone())


class RecordFailures(L.Callback):
    """Which motions each evaluation during fit failed, from its per-motion rows."""

    def __init__(self) -> None:
        self.failed: List[torch.Tensor] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _, rows = pl_module.eval_results()
        self.failed.append(torch.tensor([not row["success"] for row in rows]))


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_evaluation_failures_drive_weights_and_redraw_env_motions(tmp_path: Path, mode: str) -> None:
    # Nothing patched: the real evaluation of the policy decides which motions failed.
    resampling = MotionResampling(every_n_epochs=1, mode=mode, seed=0)
    failures, recorder = RecordFailures(), RecordEnvMotions()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path),
                        callbacks=[EvalStats(final=False), failures, resampling, recorder])
    data = PHCDataModule(num_envs=16, num_threads=1, horizon=4, update_epochs=1, num_minibatches=1)
    # residual actions near zero: the untrained policy tracks the easy motions (stand, wave) and fails the others
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], residual_actions=True, action_scale=0.5,
                       dof_action_scale={}, learning_rate=1e-5)
    trainer.fit(module, datamodule=data)

    assert len(failures.failed) == 2
    for failed in failures.failed:  # some motions fail and some are tracked, so the weights tell them apart
        assert 0 < int(failed.sum()) < 7, failed
    for epoch, ids in enumerate(recorder.motion_ids):
        counts = sum(f.long() for f in failures.failed[: epoch + 1]) if mode == "soft" else failures.failed[epoch]
        expected = (counts / counts.sum()).float()
        torch.testing.assert_close(recorder.weights[epoch] / recorder.weights[epoch].sum(), expected)
        # every env now tracks a motion the evaluations failed
        assert set(ids.tolist()) <= set(counts.nonzero().flatten().tolist())
    torch.testing.assert_close(resampling.sampler.weights(), expected)


class ProbeRestart(L.Callback):
    """Placed after MotionResampling: the envs right after each re-draw, and what each iteration starts from."""

    def __init__(self) -> None:
        self.after_resample: List[torch.Tensor] = []
        self.first_obs: List[torch.Tensor] = []
        self.first_states: List[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.after_resample.append(trainer.datamodule.env.obs.clone())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0:  # time-major rows: the first num_envs are the observations collection started from
            self.first_obs.append(batch[ITERATION_KEY]["obs"][: trainer.datamodule.env.num_envs].clone())
            self.first_states.append(batch[STATE_KEY].clone())


def test_a_resample_resets_every_env_once_and_the_next_iteration_starts_from_those_states(tmp_path: Path) -> None:
    num_envs, horizon = 8, 4
    probe = ProbeRestart()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0, default_root_dir=str(tmp_path),
                        callbacks=[MotionResampling(every_n_epochs=1, seed=0), probe])
    data = PHCDataModule(num_envs=num_envs, num_threads=1, horizon=horizon, update_epochs=1, num_minibatches=1)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], recurrent="actor", lstm_hidden=8)
    trainer.fit(module, datamodule=data)
    # the iteration after the resample starts from the states assign_motions reset the envs to (a second reset
    # would draw new start times), each env with a blank memory
    assert torch.equal(probe.first_obs[1], probe.after_resample[0])
    assert not torch.equal(probe.after_resample[0], probe.first_obs[0])
    assert probe.first_states[1].abs().sum() == 0
    # the normalizer saw each transition of the two buffers once, and no reset observations on top
    assert int(module.obs_norm.count) == 2 * horizon * num_envs


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
