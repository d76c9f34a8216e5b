"""AMP end to end: ``phc fit`` with AMP on, ``phc validate`` of its checkpoint, and exact resume (2 + 2 == 4)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers import phc
from tests.run.test_resume import SMOKE, assert_same_state, fit, losses

# Smoke-sized AMP: a small discriminator, and a keep probability that puts samples into the replay buffer at once.
AMP_FLAGS = ("--model.amp.enabled", "true", "--model.amp.disc_hidden", "[64, 32]",
             "--model.amp.replay_keep_prob", "0.1", "--model.amp.replay_size", "64")
AMP_LOGS = ("losses/disc", "losses/disc_grad_penalty", "charts/disc_accuracy_agent", "charts/disc_accuracy_demo",
            "rewards/task", "rewards/disc")


@pytest.mark.slow
def test_smoke_fit_with_amp_then_validate_on_its_checkpoint(tmp_path: Path) -> None:
    run = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "2", *AMP_FLAGS, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke" / "version_0"
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    for key in AMP_LOGS:
        values = [float(r[key]) for r in rows if r.get(key)]
        assert len(values) == 2, key  # once per iteration
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in AMP_LOGS[2:4] if r.get(k))

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["amp"]["enabled"] is True
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    policy_opt, disc_opt = ckpt["optimizer_states"]  # both optimizers are checkpointed
    assert disc_opt["param_groups"][0]["lr"] == pytest.approx(1e-4)  # LRAnnealing leaves the disc's lr alone
    assert policy_opt["param_groups"][0]["lr"] != pytest.approx(3e-4, rel=1e-6, abs=0)  # and moves the policy's
    assert ckpt["PHCDataModule"]["rollout"]["amp"]["replay"]["rows"].shape[1] == 1960

    # validate builds the model from the checkpoint's hyperparameters: AMP on, without asking for it
    val = phc("validate", "--config", SMOKE, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    assert "PHC evaluation" in val.stdout and "mpjpe_g" in val.stdout


@pytest.mark.slow
def test_amp_resume_from_epoch_2_equals_4_epochs_straight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    straight = fit(tmp_path / "straight", 4, *AMP_FLAGS)
    fit(tmp_path / "resumed", 2, *AMP_FLAGS)
    # the checkpoint brings AMP back (its model settings), so the flags are not needed to resume
    resumed = fit(tmp_path / "resumed", 4, "--ckpt_path", "last")
    assert_same_state(straight, resumed)
    a = torch.load(straight / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "last.ckpt", weights_only=True)
    assert len(a["optimizer_states"]) == len(b["optimizer_states"]) == 2
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for pid, state in opt_a["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(opt_b["state"][pid][name], value, rtol=0, atol=0)
    amp_a, amp_b = a["PHCDataModule"]["rollout"]["amp"], b["PHCDataModule"]["rollout"]["amp"]
    torch.testing.assert_close(amp_b["replay"]["rows"], amp_a["replay"]["rows"], rtol=0, atol=0)
    torch.testing.assert_close(amp_b["frames"], amp_a["frames"], rtol=0, atol=0)
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    for epoch in (2, 3):
        assert la[epoch] == lb[epoch], f"losses of epoch {epoch} differ"
        assert la[epoch]["losses/disc"]  # the discriminator's losses are among them


@pytest.mark.slow
def test_resuming_an_amp_run_without_amp_fails_in_one_line(tmp_path: Path) -> None:
    first = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    last = tmp_path / "runs" / "smoke" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["hyper_parameters"]["amp"]  # a checkpoint from before AMP existed: the config's setting applies
    torch.save(ckpt, last)
    other = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "2", "--ckpt_path", "last", *AMP_FLAGS,
                cwd=tmp_path)
    assert other.returncode == 2, other.stderr[-2000:]
    assert "Traceback" not in other.stderr and "trained with AMP off" in other.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--model.amp.history", "0"), "model.amp.history"),
        (("--model.amp.replay_keep_prob", "2"), "model.amp.replay_keep_prob"),
        (("--model.amp.disc_hidden", "[]"), "model.amp.disc_hidden"),
        (("--data.amp.enabled", "true"), "--data.amp"),  # one block, the model's: the data side gets a copy
    ],
)
def test_bad_amp_settings_give_one_line_error_and_exit_2(tmp_path: Path, args: tuple, needle: str) -> None:
    out = phc("fit", "--config", SMOKE, "--model.amp.enabled", "true", *args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("phc: error:")]
    assert len(error_lines) == 1 and needle in error_lines[0], out.stderr[-2000:]


@pytest.mark.slow
def test_amp_trains_with_mirror_images_of_the_policy_minibatches(tmp_path: Path) -> None:
    """configs/phc.yaml mirrors the minibatches: the images train the policy, AMP's samples pass through as they are."""
    run = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "2", "--model.mirror_augment", "true", *AMP_FLAGS,
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "runs" / "smoke" / "version_0" / "metrics.csv").open()))
    for key in ("losses/disc", "losses/policy"):
        assert len([r for r in rows if r.get(key)]) == 2, key
