"""LRAnnealing on a real tiny LightningModule with manual optimization and an env-step counter."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks import LRAnnealing
from phc_lightning.core.errors import ConfigError

LR0 = 0.1
STEPS_PER_BATCH = 100  # env steps the module "collects" per training_step
BATCHES_PER_EPOCH = 3


class TinyModule(pl.LightningModule):
    """Manual-optimization module that counts env steps like PHCModule and records the lr per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(2, 1)
        self.register_buffer("env_steps", torch.tensor(0, dtype=torch.long))
        self.seen = {}  # epoch -> (lr at its first step, env_steps at its start)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        if batch_idx == 0:
            self.seen[self.current_epoch] = (opt.param_groups[0]["lr"], int(self.env_steps))
        loss = self.layer(batch[0]).pow(2).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.env_steps += STEPS_PER_BATCH

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(BATCHES_PER_EPOCH * 2, 2)), batch_size=2)


def fit(callback: LRAnnealing, max_epochs: int, module=None, ckpt_path=None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module if module is not None else TinyModule(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize(
    "kwargs, expected_factor",
    [
        (dict(schedule="exp", decay_rate=0.5, min_factor=0.3), lambda e, s: max(math.exp(-0.5 * e), 0.3)),
        (dict(schedule="linear", total_timesteps=1200), lambda e, s: max(1.0 - s / 1200, 0.0)),
        (
            dict(schedule="cosine", min_factor=0.2, total_timesteps=1200),
            lambda e, s: 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(s / 1200, 1.0))),
        ),
        (dict(schedule="constant"), lambda e, s: 1.0),
    ],
    ids=["exp", "linear", "cosine", "constant"],
)
def test_lr_per_epoch_follows_the_schedule_formula(kwargs, expected_factor):
    module = TinyModule()
    trainer = fit(LRAnnealing(**kwargs), max_epochs=5, module=module)
    assert sorted(module.seen) == [0, 1, 2, 3, 4]
    for epoch, (lr, env_steps) in module.seen.items():
        assert env_steps == epoch * BATCHES_PER_EPOCH * STEPS_PER_BATCH
        assert lr == pytest.approx(LR0 * expected_factor(epoch, env_steps), rel=1e-12), epoch
    assert trainer.callback_metrics["charts/learning_rate"].item() == pytest.approx(module.seen[4][0], rel=1e-6)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == LR0


def test_resumed_run_reproduces_the_lr_sequence(tmp_path):
    callback_kwargs = dict(schedule="cosine", min_factor=0.1, total_timesteps=1500)
    straight = TinyModule()
    fit(LRAnnealing(**callback_kwargs), max_epochs=5, module=straight)

    first = fit(LRAnnealing(**callback_kwargs), max_epochs=2)
    ckpt = tmp_path / "epoch2.ckpt"
    first.save_checkpoint(ckpt)
    resumed = TinyModule()
    fit(LRAnnealing(**callback_kwargs), max_epochs=5, module=resumed, ckpt_path=str(ckpt))
    assert sorted(resumed.seen) == [2, 3, 4]
    for epoch in (2, 3, 4):
        assert resumed.seen[epoch] == pytest.approx(straight.seen[epoch], rel=1e-12), epoch


def test_bad_configuration_raises_naming_the_field():
    with pytest.raises(ValueError, match="schedule.*exp, linear, cosine, constant"):
        LRAnnealing(schedule="step")
    with pytest.raises(ValueError, match="total_timesteps"):
        LRAnnealing(schedule="linear", total_timesteps=0)
    with pytest.raises(ValueError, match="min_factor"):
        LRAnnealing(min_factor=1.5)


def test_progress_schedules_need_an_env_steps_counter():
    class NoCounter(TinyModule):
        def __init__(self) -> None:
            super().__init__()
            del self.env_steps

        def training_step(self, batch, batch_idx):
            return None

    with pytest.raises(AttributeError, match="env_steps"):
        fit(LRAnnealing(schedule="linear", total_timesteps=10), max_epochs=1, module=NoCounter())


class KLModule(TinyModule):
    """Reports a scripted approx KL per minibatch (``last_approx_kl``, as PHCModule does) and records the lr."""

    def __init__(self, kls) -> None:
        super().__init__()
        self.kls = list(kls)
        self.lrs = []
        self.last_approx_kl = float("nan")

    def configure_optimizers(self):
        # Two groups like PHCModule's actor and critic; the critic's lr is 5x the actor's.
        return torch.optim.Adam([{"params": [self.layer.weight]}, {"params": [self.layer.bias], "lr": 5 * LR0}], lr=LR0)

    def training_step(self, batch, batch_idx):
        self.lrs.append([g["lr"] for g in self.optimizers().param_groups])
        super().training_step(batch, batch_idx)
        self.last_approx_kl = self.kls[len(self.lrs) - 1]


def test_adaptive_kl_lowers_the_lr_above_the_band_and_raises_it_below():
    target = 0.01
    kls = [0.05, 0.05, 0.012, 0.001, 0.001, 0.015]  # above 2x target, inside the band, below target / 2
    module = KLModule(kls)
    fit(LRAnnealing(schedule="adaptive_kl", target_kl=target, min_lr=1e-3, max_lr=1.0), max_epochs=2, module=module)
    actor = [lrs[0] for lrs in module.lrs]
    expected = [LR0, LR0 / 1.5, LR0 / 1.5**2, LR0 / 1.5**2, LR0 / 1.5, LR0]
    assert actor == pytest.approx(expected, rel=1e-12)
    assert all(critic == pytest.approx(5 * a, rel=1e-12) for a, critic in (lrs for lrs in module.lrs))


def test_adaptive_kl_keeps_the_lr_inside_its_bounds():
    module = KLModule([1.0] * 3 + [0.001] * 3)
    fit(LRAnnealing(schedule="adaptive_kl", target_kl=0.01, min_lr=0.05, max_lr=0.12), max_epochs=2, module=module)
    actor = [lrs[0] for lrs in module.lrs]
    assert actor == pytest.approx([0.1, 0.1 / 1.5, 0.05, 0.05, 0.075, 0.1125], rel=1e-12)
    assert min(actor) >= 0.05 and max(actor) <= 0.12


def test_adaptive_kl_rejects_bad_bounds():
    with pytest.raises(ValueError, match="min_lr <= max_lr"):
        LRAnnealing(schedule="adaptive_kl", min_lr=1e-2, max_lr=1e-3)


def test_adaptive_kl_ignores_the_zero_kl_of_an_iterations_first_minibatch():
    module = KLModule([0.0, 0.05, 0.0, 0.05, 0.0, 0.0])
    fit(LRAnnealing(schedule="adaptive_kl", target_kl=0.01, min_lr=1e-3, max_lr=1.0), max_epochs=2, module=module)
    assert [lrs[0] for lrs in module.lrs] == pytest.approx([LR0, LR0, LR0 / 1.5, LR0 / 1.5, LR0 / 1.5**2, LR0 / 1.5**2])


def test_the_run_length_and_the_kl_target_come_from_the_datamodule_and_the_module_unless_given():
    class WithHparams(KLModule):
        def __init__(self, kls, target_kl) -> None:
            super().__init__(kls)
            self.save_hyperparameters({"target_kl": target_kl})

    class Data(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"total_timesteps": 1200})

        def train_dataloader(self):
            return TinyModule().train_dataloader()

    module = TinyModule()
    trainer = pl.Trainer(max_epochs=3, callbacks=[LRAnnealing(schedule="linear")], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=Data())
    assert [module.seen[e][0] for e in range(3)] == pytest.approx([LR0 * (1 - e * 300 / 1200) for e in range(3)])
    # neither the callback nor a datamodule knows the run's length: one line naming the key
    with pytest.raises(ConfigError, match="LRAnnealing total_timesteps: .*data.total_timesteps"):
        fit(LRAnnealing(schedule="linear"), max_epochs=1)

    # adaptive_kl aims at the module's target_kl (0.01 here: 0.05 is above twice it, 0.001 below half)
    module = WithHparams([0.05, 0.05, 0.001], target_kl=0.01)
    fit(LRAnnealing(schedule="adaptive_kl", min_lr=1e-3, max_lr=1.0), max_epochs=1, module=module)
    assert [lrs[0] for lrs in module.lrs] == pytest.approx([LR0, LR0 / 1.5, LR0 / 1.5**2])
    # its own target wins (0.05 is inside the band of 0.04)
    module = WithHparams([0.05, 0.05, 0.001], target_kl=0.01)
    fit(LRAnnealing(schedule="adaptive_kl", target_kl=0.04, min_lr=1e-3, max_lr=1.0), max_epochs=1, module=module)
    assert [lrs[0] for lrs in module.lrs] == pytest.approx([LR0, LR0, LR0])
    with pytest.raises(ConfigError, match="LRAnnealing target_kl: .*model.target_kl"):
        fit(LRAnnealing(schedule="adaptive_kl"), max_epochs=1, module=KLModule([0.05] * 3))
