"""PHCDashboard: plain per-epoch lines off a terminal, a Live panel on one, and replacing the default progress bar."""

from __future__ import annotations

import re
from typing import Optional

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from rich.console import Console
from torch.utils.data import DataLoader, TensorDataset

from callbacks.dashboard import PHCDashboard, _duration

STEPS_PER_BATCH = 512  # 2 minibatches per epoch -> 1,024 env steps per epoch


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=2)


class TinyPPO(pl.LightningModule):
    """Manual optimization, an ``env_steps`` buffer and the project's log keys with epoch-dependent values."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(3, 1)
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.long))

    def training_step(self, batch, batch_idx: int) -> None:
        opt = self.optimizers()
        loss = self.layer(batch[0]).pow(2).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.env_steps += STEPS_PER_BATCH
        epoch = self.current_epoch
        self.log_dict({"charts/episode_return": 10.0 + 2 * epoch, "losses/policy": -0.004, "losses/value": 0.91,
                       "perf/collect_time": 0.75, "perf/learn_time": 0.25}, on_step=False, on_epoch=True, batch_size=2)

    def on_train_epoch_end(self) -> None:
        # Logged after the callbacks' on_train_epoch_end, like the module's per-iteration stats.
        self.log("charts/SPS", 1000.0 * (self.current_epoch + 1), batch_size=1)

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log_dict({"eval/success_rate": 0.75, "eval/mpjpe_g": 45.25}, batch_size=2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TinyData(pl.LightningDataModule):
    def __init__(self, total_timesteps: int) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        return _loader()


def _fit(dashboard: PHCDashboard, validate: bool = False, data: Optional[TinyData] = None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         accelerator="cpu", devices=1, callbacks=[dashboard], limit_val_batches=1 if validate else 0)
    model = TinyPPO()
    if data is not None:
        trainer.fit(model, datamodule=data)
    else:
        trainer.fit(model, train_dataloaders=_loader(), val_dataloaders=_loader() if validate else None)
    return trainer


def _plain_console() -> Console:
    return Console(record=True, width=150, force_terminal=False)


def test_plain_lines_report_epoch_steps_and_logged_values() -> None:
    console = _plain_console()
    _fit(PHCDashboard(console=console))
    lines = [line for line in console.export_text().splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3
    for epoch, line in enumerate(lines):
        steps = (epoch + 1) * 2 * STEPS_PER_BATCH
        # SPS is logged in the module's own on_train_epoch_end: it must land in the same epoch's line.
        assert line.startswith(f"epoch {epoch} | steps {steps:,} | SPS {1000 * (epoch + 1):,} | "), line
        assert f"| return {10.0 + 2 * epoch:.1f} | len – | pi -0.004 v 0.91 | collect 75% learn 25% | cpu " in line
        assert "ETA" not in line  # no datamodule -> no total_timesteps
        assert re.search(r"\| cpu \d+% ram \d+\.\dG$", line), line


def test_plain_lines_show_progress_and_eta_from_datamodule_total_timesteps() -> None:
    console = _plain_console()
    _fit(PHCDashboard(console=console), data=TinyData(total_timesteps=4096))
    lines = [line for line in console.export_text().splitlines() if line.startswith("epoch ")]
    assert lines[0].startswith("epoch 0 | steps 1,024/4,096 (25.0%) | SPS 1,000 | ETA 3s | ")
    assert lines[2].startswith("epoch 2 | steps 3,072/4,096 (75.0%) | SPS 3,000 | ETA 0s | ")


def test_evaluation_prints_evaluating_and_eval_results_but_not_for_sanity_check() -> None:
    console = _plain_console()
    _fit(PHCDashboard(console=console), validate=True)
    text = console.export_text()
    for epoch in range(3):
        assert f"epoch {epoch} | evaluating…\neval epoch {epoch} | success 75.0% | mpjpe_g 45.2\n" in text
    assert text.count("evaluating…") == 3  # the sanity check before training prints nothing
    assert len([line for line in text.splitlines() if line.startswith("epoch ")]) == 6  # 3 epoch + 3 evaluating…


def test_validate_without_fit_prints_the_eval_line() -> None:
    console = _plain_console()
    trainer = pl.Trainer(logger=False, enable_model_summary=False, accelerator="cpu", devices=1,
                         callbacks=[PHCDashboard(console=console)])
    trainer.validate(TinyPPO(), dataloaders=_loader(), verbose=False)
    assert console.export_text() == "epoch 0 | evaluating…\neval epoch 0 | success 75.0% | mpjpe_g 45.2\n"


def test_live_panel_replaces_default_progress_bar_on_a_terminal() -> None:
    console = Console(record=True, width=150, force_terminal=True)
    dashboard = PHCDashboard(console=console, refresh_per_second=20)
    trainer = _fit(dashboard, validate=True)
    assert trainer.progress_bar_callback is dashboard
    assert not any(isinstance(cb, TQDMProgressBar) for cb in trainer.callbacks)
    text = console.export_text()
    for label in ("PHC training", "env steps", "SPS", "episode", "losses", "system", "evaluating…"):
        assert label in text, label
    assert "3,072" in text and "return 14.0" in text and "success 75.0%" in text
    assert not re.search(r"^epoch \d+ \| steps", text, flags=re.MULTILINE)  # no plain lines on a terminal
    assert dashboard._live is None  # stopped at the end of training


def test_plain_can_be_forced_on_a_terminal() -> None:
    console = Console(record=True, width=150, force_terminal=True)
    dashboard = PHCDashboard(console=console, plain=True)
    assert dashboard.is_plain and not PHCDashboard(console=console).is_plain


def test_rejects_non_positive_refresh_rate() -> None:
    with pytest.raises(ValueError, match="refresh_per_second"):
        PHCDashboard(refresh_per_second=0)


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (220, "3m40s"), (7500, "2h05m"), (90000, "1d01h")])
def test_duration_formatting(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
