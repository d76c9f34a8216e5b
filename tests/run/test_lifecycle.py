"""One run directory per run, evaluation only when asked for, one seed for every generator, CLI hygiene."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List

import pytest
import torch

from phc_lightning.run.lightning_cli import run_cli
from tests.helpers import SMOKE, phc

NO_EVAL = ("--trainer.check_val_every_n_epoch", "null", "--trainer.callbacks", "[]")


def fit(*args: str) -> None:
    run_cli(["fit", "--config", SMOKE, *args])


@pytest.mark.slow
def test_default_root_dir_holds_every_file_and_two_runs_do_not_collide(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    fit("--trainer.max_epochs", "2", "--trainer.default_root_dir", str(root))
    fit("--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root))
    first, second = root / "version_0", root / "version_1"
    for run, epochs in ((first, 2), (second, 1)):
        assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
        assert (run / "eval" / "final_summary.json").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        # last.ckpt is the state at the end of fit
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epochs
    assert not (tmp_path / "runs").exists()  # nothing landed in the working folder
    # best.ckpt: the evaluation after epoch 1 (smoke.yaml evaluates every 2 epochs)
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["best.ckpt", "epoch00000.ckpt",
                                                                         "epoch00001.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_periodic_checkpoints_are_pruned_to_the_newest_k(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fit("--trainer.max_epochs", "5", "--trainer.callbacks", "[]", "--trainer.callbacks+=callbacks.PHCCheckpoint",
        "--trainer.callbacks.every_n_epochs", "1", "--trainer.callbacks.save_top_k", "2")
    names = sorted(p.name for p in (tmp_path / "runs" / "smoke" / "version_0" / "checkpoints").iterdir())
    assert names == ["best.ckpt", "epoch00003.ckpt", "epoch00004.ckpt", "last.ckpt"]  # best and last are kept


def rows(run_dir: Path) -> List[dict]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


@pytest.mark.slow
def test_curves_are_logged_against_env_steps_and_no_evaluation_runs_unless_asked(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fit("--trainer.max_epochs", "3", *NO_EVAL)
    logged = rows(tmp_path / "runs" / "smoke" / "version_0")
    train = [r for r in logged if r.get("charts/env_steps")]
    assert [int(r["step"]) for r in train] == [128, 256, 384]  # smoke: 8 envs x 16 steps per iteration
    assert all(float(r["charts/env_steps"]) == float(r["step"]) for r in train)
    assert not any(r.get("eval/mpjpe_g") for r in logged)  # no cadence set, no EvalStats: no evaluation

    fit("--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "2", "--trainer.callbacks", "[]")
    logged = rows(tmp_path / "runs" / "smoke" / "version_1")
    evals = [int(r["step"]) for r in logged if r.get("eval/mpjpe_g")]
    assert evals == [256, 512]  # the user's cadence, at the env step of the evaluated policy


def test_task_config_is_nested_and_changes_the_reward(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rewards = []
    for w_pos in ("0.5", "0.05"):
        cli = run_cli(["--config", SMOKE, "--data.task.w_pos", w_pos, "--data.task.power_coef", "0"], run=False)
        dm = cli.datamodule
        assert dm.task.w_pos == float(w_pos)
        dm.setup("fit")
        dm.env.reset()
        result = dm.env.step(dm.env.ref_next_dof_pos.clone())
        rewards.append(result.reward)
        dm.teardown("fit")
    assert not torch.allclose(rewards[0], rewards[1])


def test_one_seed_drives_every_generator(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    def draws(*args: str) -> List[torch.Tensor]:
        cli = run_cli(["--config", SMOKE, *args], run=False)
        dm = cli.datamodule
        dm.setup("fit")
        out = [dm.env.reset().clone(), torch.randperm(64, generator=dm.rollout.generator)]
        dm.teardown("fit")
        return out

    a, b, c = draws("--seed_everything", "1"), draws("--seed_everything", "1"), draws("--seed_everything", "2")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])  # env start times / motion draws
    assert not torch.equal(a[1], c[1])  # minibatch order
    pinned = draws("--seed_everything", "2", "--data.seed", "5"), draws("--seed_everything", "3", "--data.seed", "5")
    assert torch.equal(pinned[0][0], pinned[1][0])  # an explicit seed wins


def test_help_offers_only_fit_and_validate_and_no_optimizer_flags(tmp_path) -> None:
    top = phc("--help", cwd=tmp_path, timeout=300)
    assert "{fit,validate}" in top.stdout
    fit_help = phc("fit", "--help", cwd=tmp_path, timeout=300)
    assert fit_help.returncode == 0
    assert "--optimizer" not in fit_help.stdout and "--lr_scheduler" not in fit_help.stdout
    assert "--data.task.w_pos" in fit_help.stdout and "--run_name" in fit_help.stdout
