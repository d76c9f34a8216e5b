"""Checkpoints continue the same run exactly, load with weights_only=True, and survive crashes."""

from __future__ import annotations

import csv
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import lightning as L
import pytest
import torch

from phc_lightning.run.lightning_cli import run_cli
from tests.helpers import SMOKE


def fit(run_dir: Path, max_epochs: int, *extra: str, config: str = SMOKE) -> Path:
    """``phc fit`` of the smoke config inside ``run_dir`` (its paths are relative); returns the checkpoint dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        run_cli(["fit", "--config", config, "--trainer.max_epochs", str(max_epochs), *extra])
    finally:
        os.chdir(cwd)
    return run_dir / "runs" / "smoke" / "version_0" / "checkpoints"


def smoke_with_callbacks(tmp_path: Path, callbacks: str) -> str:
    """The smoke config with its callback list replaced by ``callbacks`` (YAML list items, 4-space indented)."""
    text = Path(SMOKE).read_text()
    head, rest = text.split("  callbacks:\n", 1)
    tail = rest[rest.index("model:"):]
    path = tmp_path / "smoke_callbacks.yaml"
    path.write_text(head + "  callbacks:\n" + callbacks + tail)
    return str(path)


def assert_same_state(a_dir: Path, b_dir: Path, name: str = "last.ckpt") -> None:
    a = torch.load(a_dir / name, weights_only=True)
    b = torch.load(b_dir / name, weights_only=True)
    assert int(a["state_dict"]["env_steps"]) == int(b["state_dict"]["env_steps"]) > 0
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=f"{key} differs")


def losses(run_dir: Path) -> Dict[int, Dict[str, str]]:
    """losses/* per epoch from every CSV log under run_dir (a resumed run writes a second version)."""
    out: Dict[int, Dict[str, str]] = {}
    for path in sorted(run_dir.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("losses/policy"):
                out[int(float(row["epoch"]))] = {k: v for k, v in row.items() if k.startswith("losses/")}
    return out


LR_SCHEDULES = {
    "exp": "schedule: exp\n          decay_rate: 0.05",
    "linear": "schedule: linear\n          total_timesteps: 1024",
    "cosine": "schedule: cosine\n          total_timesteps: 1024",
    "constant": "schedule: constant",
    "adaptive_kl": "schedule: adaptive_kl\n          target_kl: 0.001",
}


@pytest.mark.slow
@pytest.mark.parametrize("schedule", sorted(LR_SCHEDULES))
def test_resume_from_epoch_2_equals_4_epochs_straight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       schedule: str) -> None:
    monkeypatch.chdir(tmp_path)
    config = smoke_with_callbacks(tmp_path, (
        "    - class_path: callbacks.PHCCheckpoint\n"
        "      init_args:\n"
        "        every_n_epochs: 1\n"
        "    - class_path: callbacks.MotionResampling\n"
        "      init_args:\n"
        "        every_n_epochs: 2\n"
        "    - class_path: callbacks.LRAnnealing\n"
        "      init_args:\n"
        f"          {LR_SCHEDULES[schedule]}\n"
    ))
    straight = fit(tmp_path / "straight", 4, config=config)
    fit(tmp_path / "resumed", 2, config=config)
    resumed = fit(tmp_path / "resumed", 4, "--ckpt_path", "last", config=config)
    assert_same_state(straight, resumed)
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(la) == sorted(lb) == [0, 1, 2, 3]
    for epoch in (2, 3):
        assert la[epoch] == lb[epoch], f"losses of epoch {epoch} differ"
    lr = [float(row) for row in learning_rates(tmp_path / "resumed")]
    if schedule != "constant":
        assert len(set(lr)) > 1, lr  # the schedule did move the lr, so the comparison means something


def learning_rates(run_dir: Path) -> List[str]:
    return [row["charts/learning_rate"] for path in sorted(run_dir.rglob("metrics.csv"))
            for row in csv.DictReader(path.open()) if row.get("charts/learning_rate")]


@pytest.mark.slow
def test_resume_is_exact_with_a_plain_model_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = smoke_with_callbacks(tmp_path, (
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args:\n"
        "        save_last: true\n"
        "    - class_path: callbacks.LRAnnealing\n"
    ))
    straight = fit(tmp_path / "straight", 4, config=config)
    fit(tmp_path / "resumed", 2, config=config)
    resumed = fit(tmp_path / "resumed", 4, "--ckpt_path", "last", config=config)
    assert_same_state(straight, resumed)


class EpochStartProbe(L.Callback):
    """Records, at every on_train_epoch_start, how many env steps the run had collected."""

    records: List[tuple] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        EpochStartProbe.records.append(
            (trainer.current_epoch, int(pl_module.env_steps))
        )


@pytest.mark.slow
def test_a_user_callback_sees_epoch_start_before_collection_also_after_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    probe = ["--trainer.callbacks+=tests.run.test_resume.EpochStartProbe"]
    # the class the CLI imports by name (pytest may have imported this file under another module name)
    records = importlib.import_module("tests.run.test_resume").EpochStartProbe.records
    records.clear()
    fit(tmp_path / "run", 2, *probe)
    fit(tmp_path / "run", 4, "--ckpt_path", "last", *probe)
    steps = 8 * 16  # smoke: num_envs x horizon
    # epoch e starts with e iterations collected, epoch 0 and the first epoch after the resume included
    assert records == [(e, e * steps) for e in range(4)]


@pytest.mark.slow
def test_checkpoint_holds_everything_as_plain_tensors_and_warm_start_anchors(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    last = fit(tmp_path / "a", 2) / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["optimizer_states"], "optimizer state missing"
    assert "obs_norm.mean" in ckpt["state_dict"] and int(ckpt["state_dict"]["obs_norm.count"]) > 0
    data_state = ckpt["PHCDataModule"]
    assert {"env", "rollout", "motion_weights"} <= set(data_state)
    assert {"shuffle_rng", "action_rng"} <= set(data_state["rollout"])
    assert "env_steps" not in data_state["rollout"]  # one counter: the module's
    callbacks = " ".join(ckpt["callbacks"])
    assert "MotionResampling" in callbacks and "PHCCheckpoint" in callbacks

    # warm start: weights come over, counters and optimizer start fresh, the L2 anchor is the loaded weights
    cli = run_cli(["--config", SMOKE, "--model.init_from", str(last), "--model.l2_init_coef", "0.1"], run=False)
    module = cli.model
    for key in ("policy.actor.0.weight", "obs_norm.mean"):
        torch.testing.assert_close(module.state_dict()[key], ckpt["state_dict"][key])
    assert int(module.env_steps) == 0
    assert float(module.l2_init_distance()) == 0.0


@pytest.mark.slow
def test_a_kill_mid_training_leaves_a_loadable_last_checkpoint(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE]
    proc = subprocess.Popen(cmd + ["--trainer.max_epochs", "1000"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = tmp_path / "runs" / "smoke" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and not (last.is_file() and len(list(last.parent.glob("epoch*.ckpt"))) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file()
    # no half-written file is left under a checkpoint name, and last.ckpt loads
    names: List[str] = os.listdir(last.parent)
    assert all(name.endswith(".ckpt") for name in names), names
    ckpt = torch.load(last, weights_only=True)
    assert int(ckpt["state_dict"]["env_steps"]) > 0
    # and the run continues from it
    resumed = subprocess.run(cmd + ["--trainer.max_epochs", str(ckpt["epoch"] + 2), "--ckpt_path", "last"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.mark.slow
def test_an_exception_in_training_leaves_a_final_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from phc_lightning.learner.module import PHCModule

    calls = {"n": 0}
    real = PHCModule.training_step

    def failing_step(self, batch, batch_idx=0):
        calls["n"] += 1
        if calls["n"] == 7:  # in the middle of the 2nd iteration (smoke: 4 minibatches per iteration)
            raise RuntimeError("boom")
        return real(self, batch, batch_idx)

    monkeypatch.setattr(PHCModule, "training_step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path / "crash", 5)
    checkpoints = tmp_path / "crash" / "runs" / "smoke" / "version_0" / "checkpoints"
    # the mid-iteration state is named apart; `last` stays the last epoch boundary (epoch 0)
    interrupted = torch.load(checkpoints / "interrupted.ckpt", weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and interrupted["epoch"] == 1
    assert int(interrupted["state_dict"]["env_steps"]) > int(last["state_dict"]["env_steps"]) > 0


@pytest.mark.slow
def test_resuming_with_other_data_settings_fails_clearly_and_keeps_last(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE]
    first = subprocess.run(cmd + ["--trainer.max_epochs", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    last = tmp_path / "runs" / "smoke" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    other = subprocess.run(cmd + ["--trainer.max_epochs", "3", "--data.num_envs", "4", "--ckpt_path", "last"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert other.returncode == 2
    assert "Traceback" not in other.stderr and "phc: error: --ckpt_path" in other.stderr
    assert last.read_bytes() == before
