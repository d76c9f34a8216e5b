"""The ``phc`` command as a user runs it: help, the smoke fit -> validate round trip, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.helpers import CMU_PKL as CMU
from tests.helpers import SMOKE, phc


def test_help_lists_the_verbs(tmp_path: Path) -> None:
    out = phc("--help", cwd=tmp_path)
    assert out.returncode == 0
    for verb in ("fit", "validate"):
        assert verb in out.stdout


@pytest.mark.slow
def test_smoke_fit_then_validate_on_its_checkpoint(tmp_path: Path) -> None:
    fit = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "2", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    # the run directory holds everything of the run
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    # the final evaluation reaches the logger (at the final env step) and the dashboard
    logged = list(csv.DictReader((run_dir / "metrics.csv").open()))
    final_steps = max(int(r["step"]) for r in logged)
    assert [r for r in logged if r.get("eval/success_rate") and int(r["step"]) == final_steps]
    assert "final eval | success" in fit.stdout
    # the final evaluation of fit wrote its files
    assert list((tmp_path / "runs" / "smoke").rglob("final_motions.csv"))

    val = phc("validate", "--config", SMOKE, "--ckpt_path", str(last), cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    assert "PHC evaluation" in val.stdout and "mpjpe_g" in val.stdout
    csv_path = next((tmp_path / "runs" / "smoke").rglob("validate_motions.csv"))
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) >= 6  # every bundled motion played once
    assert {"key", "frames", "frames_played", "success", "mpjpe_g"} <= set(rows[0])
    summary = json.loads(next((tmp_path / "runs" / "smoke").rglob("validate_summary.json")).read_text())
    assert 0.0 <= summary["success_rate"] <= 1.0

    # The checkpoint's action interface is the policy's: validate uses it over a contradicting config, and says so.
    other = phc("validate", "--config", SMOKE, "--ckpt_path", str(last), "--model.residual_actions", "true",
                cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "using the checkpoint's model.residual_actions=False (the config says True)" in other.stderr
    again = json.loads(next((tmp_path / "runs" / "smoke").rglob("validate_summary.json")).read_text())
    assert again["mpjpe_g"] == summary["mpjpe_g"]  # the same policy under the same interface

    if CMU.is_file():  # any motion file works for validate
        cmu = phc("validate", "--config", SMOKE, "--ckpt_path", str(last), "--data.motion_file", str(CMU), cwd=tmp_path)
        assert cmu.returncode == 0, cmu.stderr[-3000:]
        assert "1 motions" in cmu.stdout


@pytest.mark.slow
def test_validate_reports_our_convention_and_phcs_side_by_side(tmp_path: Path) -> None:
    val = phc("validate", "--config", SMOKE, cwd=tmp_path)  # an untrained policy: its motions fail
    assert val.returncode == 0, val.stderr[-3000:]
    assert "ours, all" in val.stdout and "PHC, all" in val.stdout
    runs = tmp_path / "runs" / "smoke"
    summary = json.loads(next(runs.rglob("validate_summary.json")).read_text())
    figures = set(summary) - {"tag", "epoch", "env_steps", "convention", "conventions"}
    assert set(summary["convention"]) == figures  # every figure says which convention it uses
    for key in ("success_rate", "mpjpe_g", "mpjpe_l", "mpjpe_pa", "vel_dist", "accel_dist"):
        assert summary["convention"][key] == "ours" and summary["convention"]["phc/" + key] == "phc"
    assert {"ours", "phc"} <= set(summary["conventions"])
    assert summary["success_rate"] < 1 and summary["phc/success_rate"] == summary["success_rate"]
    assert summary["phc/mpjpe_g"] != summary["mpjpe_g"]  # PHC also counts the replays of the failed motions
    logged = list(csv.DictReader(next(runs.rglob("metrics.csv")).open()))
    assert [r for r in logged if r.get("eval/phc/mpjpe_g")] and [r for r in logged if r.get("eval/mpjpe_g")]


def test_motions_info_on_bundled_file(tmp_path: Path) -> None:
    from phc_lightning.motion import BUNDLED_MOTIONS

    out = phc("motions", "info", BUNDLED_MOTIONS, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "walk" in out.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (("motions", "info", "does_not_exist.npz"), "does_not_exist.npz"),
        (("motions", "info", "motions.txt"), "motions.txt"),
        (("fit", "--config", SMOKE, "--data.num_minibatches", "7"), "num_minibatches"),
        (("fit", "--config", SMOKE, "--data.motion_file", "missing.pkl"), "missing.pkl"),
        (("fit", "--config", SMOKE, "--model.init_from", "nope.ckpt"), "nope.ckpt"),
        (("fit", "--config", SMOKE, "--model.learning_rate", "-1"), "learning_rate"),
        (("fit", "--config", SMOKE, "--data.backend", "bullet"), "bullet"),
        (("fit", "--config", SMOKE, "--data.task.power_coef", "-1"), "data.task.power_coef"),
        (("fit", "--config", SMOKE, "--data.num_envs", "0"), "data.num_envs"),
        (("fit", "--config", SMOKE, "--optimizer", "Adam"), "--optimizer"),
        (("test", "--config", SMOKE), "test"),
        (("fit", "--config", SMOKE, "--ckpt_path", "last"), "last.ckpt"),
        # a ConfigError in a callback's __init__, while LightningCLI builds it
        (("fit", "--config", SMOKE, "--trainer.callbacks+=callbacks.LRAnnealing", "--trainer.callbacks.schedule",
          "step"), "LRAnnealing schedule"),
        (("fit", "--config", SMOKE, "--trainer.callbacks+=callbacks.MotionResampling",
          "--trainer.callbacks.every_n_epochs", "0"), "every_n_epochs"),
        (("validate", "--config", SMOKE, "--ckpt_path", "corrupt.ckpt"), "corrupt.ckpt"),
        (("fit", "--config", SMOKE, "--ckpt_path", "corrupt.ckpt"), "corrupt.ckpt"),
        (("validate", "--config", SMOKE, "--ckpt_path", "foreign.ckpt"), "foreign.ckpt"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(tmp_path: Path, args: tuple, needle: str) -> None:
    (tmp_path / "motions.txt").write_text("not a motion file")
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 half a checkpoint")
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}},
               tmp_path / "foreign.ckpt")  # another model's Lightning checkpoint
    out = phc(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("phc: error:")]
    assert len(error_lines) == 1 and needle in error_lines[0], out.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or args[0] != "validate"  # no run directory for a file it cannot read


@pytest.mark.slow
def test_wandb_logger_works_offline(tmp_path: Path) -> None:
    wandb = ("--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true")
    out = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "1", *wandb, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke" / "version_0"
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert [p.name.endswith(run_id) for p in (run_dir / "wandb").glob("offline-run-*")] == [True]
    # the resumed run continues the same W&B run
    out = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "2", "--ckpt_path", "last", *wandb, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(run_id) for p in runs)
