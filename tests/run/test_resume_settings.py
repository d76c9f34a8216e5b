"""What a resume keeps: changed training settings are used and named, another network is refused with nothing lost,
and a warm-started run resumes and validates after its source checkpoint is gone."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from phc_lightning.learner.module import PHCModule
from phc_lightning.learner.resume import NOT_REPLAYED, RESUME_CHANGEABLE, RESUME_FIXED
from phc_lightning.run.lightning_cli import run_cli
from tests.helpers import phc
from tests.run.test_resume import smoke_with_callbacks

DECAY = 0.05
CALLBACKS = (
    "    - class_path: callbacks.PHCCheckpoint\n"
    "      init_args:\n"
    "        every_n_epochs: 1\n"
    "    - class_path: callbacks.LRAnnealing\n"
    "      init_args:\n"
    f"          decay_rate: {DECAY}\n"
)
NO_EVAL = ("--trainer.check_val_every_n_epoch", "null")


def fit(config: str, epochs: int, *extra: str) -> None:
    run_cli(["fit", "--config", config, "--trainer.max_epochs", str(epochs), *extra])


def run_dir(root: Path, version: int = 0) -> Path:
    return root / "runs" / "smoke" / f"version_{version}"


def metrics(run: Path) -> List[Dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_every_model_setting_is_in_exactly_one_resume_list() -> None:
    import inspect

    settings = set(inspect.signature(PHCModule.__init__).parameters) - {"self"}
    lists = (RESUME_CHANGEABLE, RESUME_FIXED, NOT_REPLAYED)
    assert sorted(k for keys in lists for k in keys) == sorted(settings)


@pytest.mark.slow
def test_a_resume_uses_and_names_the_settings_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    config = smoke_with_callbacks(tmp_path, CALLBACKS)
    fit(config, 1, *NO_EVAL, "--model.ent_coef", "0.001")
    capsys.readouterr()
    # target_kl 1e-12: every iteration stops after its 2nd minibatch (the 1st has KL 0), so it shows in the logs
    fit(config, 3, "--ckpt_path", "last", "--model.target_kl", "1e-12", "--model.learning_rate", "1e-3",
        "--data.task.w_pos", "0.6", "--trainer.check_val_every_n_epoch", "1")
    err = capsys.readouterr().err
    assert "phc: resuming with model.target_kl=1e-12 (the checkpoint trained with None)" in err
    assert "phc: resuming with model.learning_rate=0.001 (the checkpoint trained with 0.0003)" in err
    assert "phc: resuming with data.task.w_pos=0.6 (the checkpoint trained with 0.5)" in err
    # a setting the config leaves at its default goes on as the checkpoint had it, and says so
    assert "phc: resuming with the checkpoint's model.ent_coef=0.001 (the config does not set it; default 0.0)" in err
    rows = metrics(run_dir(tmp_path))
    fractions = {int(float(r["epoch"])): float(r["charts/update_fraction"]) for r in rows
                 if r.get("charts/update_fraction")}
    assert fractions == {0: 1.0, 1: 0.5, 2: 0.5}
    assert [int(r["step"]) for r in rows if r.get("eval/mpjpe_g")] == [256, 384]  # the new cadence: every epoch
    ckpt = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["target_kl"] == 1e-12 and ckpt["hyper_parameters"]["ent_coef"] == 0.001
    assert ckpt["datamodule_hyper_parameters"]["task"]["w_pos"] == 0.6
    # the new lr is the schedule's base (not the restored optimizer's 3e-4) for actor and critic alike
    for group in ckpt["optimizer_states"][0]["param_groups"]:
        assert group["initial_lr"] == 1e-3
        assert group["lr"] == pytest.approx(1e-3 * math.exp(-DECAY * 2), rel=1e-12)


@pytest.mark.slow
def test_a_resume_that_changes_the_network_is_refused_in_one_line_and_loses_nothing(tmp_path: Path) -> None:
    config = smoke_with_callbacks(tmp_path, CALLBACKS)
    first = phc("fit", "--config", config, "--trainer.max_epochs", "1", *NO_EVAL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    run = run_dir(tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = phc("fit", "--config", config, "--trainer.max_epochs", "2", "--ckpt_path", "last",
              "--model.actor_hidden", "[32, 32]", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "phc: error: --ckpt_path: the checkpoint's run was trained with model.actor_hidden=[64, 64], this config "
        "asks for [32, 32]; a resume keeps the network and the action interface: resume with "
        "model.actor_hidden=[64, 64], or warm-start a new run from that checkpoint with --model.init_from "
        "runs/smoke/version_0/checkpoints/last.ckpt"
    ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_warm_started_run_resumes_and_validates_after_its_source_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    config = smoke_with_callbacks(tmp_path, CALLBACKS)
    fit(config, 1, *NO_EVAL)
    source = tmp_path / "source.ckpt"
    (run_dir(tmp_path) / "checkpoints" / "last.ckpt").rename(source)
    fit(config, 1, *NO_EVAL, "--model.init_from", str(source))
    warm = Path("runs/smoke/version_1/checkpoints/last.ckpt")  # relative, as the run's own paths
    hparams = torch.load(warm, weights_only=True)["hyper_parameters"]
    assert hparams["warm_started_from"] == str(source) and "init_from" not in hparams
    source.unlink()
    capsys.readouterr()
    # the user repeats the warm start's command line with --ckpt_path: the source is neither read nor needed
    fit(config, 2, *NO_EVAL, "--model.init_from", str(source), "--ckpt_path", str(warm))
    assert f"phc: resuming: model.init_from={str(source)!r} is not read" in capsys.readouterr().err
    resumed = torch.load(warm, weights_only=True)
    assert resumed["epoch"] == 2 and resumed["hyper_parameters"]["warm_started_from"] == str(source)  # the record
    out = phc("validate", "--config", config, "--ckpt_path", str(warm), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "eval/success_rate" in out.stdout  # Lightning's table of the validation metrics
