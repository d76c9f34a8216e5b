"""Checkpoints continue the same run exactly, load with weights_only=True, and survive crashes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from phc_lightning.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def fit(run_dir: Path, max_epochs: int, *extra: str) -> Path:
    """``phc fit`` of the smoke config inside ``run_dir`` (its paths are relative); returns the checkpoint dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        run_cli(["fit", "--config", SMOKE, "--trainer.max_epochs", str(max_epochs), *extra])
    finally:
        os.chdir(cwd)
    return run_dir / "runs" / "smoke" / "checkpoints"


def losses(run_dir: Path) -> Dict[int, Dict[str, str]]:
    """losses/* per epoch from every CSV log under run_dir (a resumed run writes a second version)."""
    out: Dict[int, Dict[str, str]] = {}
    for path in sorted(run_dir.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("losses/policy"):
                out[int(row["epoch"])] = {k: v for k, v in row.items() if k.startswith("losses/")}
    return out


@pytest.mark.slow
def test_resume_from_epoch_2_equals_4_epochs_straight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    straight = fit(tmp_path / "straight", 4)
    fit(tmp_path / "resumed", 2)
    resumed = fit(tmp_path / "resumed", 4, "--ckpt_path", "last")
    a = torch.load(straight / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "last.ckpt", weights_only=True)
    assert int(a["state_dict"]["env_steps"]) == int(b["state_dict"]["env_steps"]) > 0
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=f"{key} differs")
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(la) == sorted(lb) == [0, 1, 2, 3]
    for epoch in (2, 3):
        assert la[epoch] == lb[epoch], f"losses of epoch {epoch} differ"


@pytest.mark.slow
def test_checkpoint_holds_everything_as_plain_tensors_and_warm_start_anchors(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    last = fit(tmp_path / "a", 2) / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["optimizer_states"], "optimizer state missing"
    assert "obs_norm.mean" in ckpt["state_dict"] and int(ckpt["state_dict"]["obs_norm.count"]) > 0
    data_state = ckpt["PHCDataModule"]
    assert {"env", "shuffle_rng", "motion_weights"} <= set(data_state)
    callbacks = " ".join(ckpt["callbacks"])
    assert "MotionResampling" in callbacks and "PHCCheckpoint" in callbacks

    # warm start: weights come over, counters and optimizer start fresh, the L2 anchor is the loaded weights
    cli = run_cli(["--config", SMOKE, "--model.init_from", str(last)], run=False)
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
    last = tmp_path / "runs" / "smoke" / "checkpoints" / "last.ckpt"
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
    from phc_lightning.module import PHCModule

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
    last = tmp_path / "crash" / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert int(torch.load(last, weights_only=True)["state_dict"]["env_steps"]) > 0


@pytest.mark.slow
def test_resuming_with_other_data_settings_fails_clearly_and_keeps_last(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE]
    first = subprocess.run(cmd + ["--trainer.max_epochs", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    last = tmp_path / "runs" / "smoke" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    other = subprocess.run(cmd + ["--trainer.max_epochs", "3", "--data.num_envs", "4", "--ckpt_path", "last"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert other.returncode == 2
    assert "Traceback" not in other.stderr and "phc: error: --ckpt_path" in other.stderr
    assert last.read_bytes() == before
