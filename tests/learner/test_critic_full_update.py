"""``model.critic_full_update``: after the KL stop, the critic alone keeps training (a real Trainer, tiny sizes)."""

from __future__ import annotations

import math
from typing import List

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from phc_lightning.task.observations import OBS_DIM as OBS_DIM_TASK
from tests.learner.test_module import make_minibatches, make_trainer, tiny_module


class ParameterSnapshots(L.Callback):
    """The actor's and the critic's parameters after every minibatch."""

    def __init__(self) -> None:
        self.actor: List[torch.Tensor] = []
        self.critic: List[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        policy = pl_module.policy
        self.actor.append(torch.cat([p.detach().flatten() for p in [*policy.actor.parameters(), policy.log_std]]))
        self.critic.append(torch.cat([p.detach().flatten() for p in policy.critic.parameters()]))


@pytest.mark.parametrize("mirror", [False, True])
def test_critic_full_update_trains_only_the_critic_after_the_kl_stop(mirror):
    torch.manual_seed(0)
    module = tiny_module(obs_dim=OBS_DIM_TASK, target_kl=1e-12, learning_rate=1e-2, learnable_log_std=True,
                         critic_full_update=True, mirror_augment=mirror)
    batches = make_minibatches(module, num=6)
    snapshots = ParameterSnapshots()
    trainer = make_trainer(callbacks=[snapshots])
    trainer.fit(module, DataLoader(batches, batch_size=None))
    # minibatches 0 and 1 train both (1 passes the KL target), 2-5 the critic alone: six optimizer steps
    assert trainer.global_step == 6
    assert trainer.callback_metrics["charts/update_fraction"].item() == pytest.approx(2 / 6)
    assert not torch.equal(snapshots.actor[0], snapshots.actor[1])
    for before, after in zip(snapshots.actor[1:], snapshots.actor[2:]):
        assert torch.equal(before, after)  # weights and log-std untouched: no gradient, no Adam momentum step
    for before, after in zip(snapshots.critic[1:], snapshots.critic[2:]):
        assert not torch.equal(before, after)
    assert math.isfinite(trainer.callback_metrics["losses/critic_only_value"].item())
