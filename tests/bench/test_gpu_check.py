"""scripts/gpu_check.sh and its helper scripts/gpu_check.py, rehearsed on MuJoCo Warp's CPU device: the device
run should only have to confirm (the whole shell script at toy sizes: ``scripts/gpu_check.sh rehearse``)."""

from __future__ import annotations

import importlib.util
import subprocess
from types import ModuleType

import pytest
import torch
import yaml

from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mujoco_warp") is None, reason="needs phc-lightning[warp]")
TOY = ["--device", "cpu", "--num_envs", "4", "--horizon", "4", "--small", "--steps", "4"]


def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shell_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")]).returncode == 0


def test_the_sync_check_passes_on_the_gpu_config_at_toy_size(capsys: pytest.CaptureFixture) -> None:
    assert gpu_check().main(["sync", *TOY]) == 0
    out = capsys.readouterr().out
    assert "mujoco_warp on cpu" in out and out.rstrip().endswith("PASS")


def test_the_sync_check_fails_on_a_read_in_the_step(capsys: pytest.CaptureFixture) -> None:
    """What a regression looks like: one ``bool()`` of a device tensor per env step."""
    script = gpu_check()
    dm, module = script.build(script.GPU_CONFIG, 4, "cpu", 4, small=True)
    real_step = dm.env.step

    def step_that_reads(targets: torch.Tensor):  # noqa: ANN202
        result = real_step(targets)
        bool(result.terminated.any())
        return result

    dm.env.step = step_that_reads
    dm.rollout.collect(module)
    short, long = (script.syncs_of_collection(dm, module, horizon, cuda=False) for horizon in (4, 8))
    grown = long - short
    assert sum(grown.values()) == 4, grown  # the 4 more steps' reads: the check reports them as per step
    dm.env.close()


def test_the_fit_config_resamples_evaluates_and_checkpoints_every_few_iterations(tmp_path) -> None:
    out = tmp_path / "fit.yaml"
    assert gpu_check().main(["fit-config", str(out), "--every", "5"]) == 0
    config = yaml.safe_load(out.read_text())
    original = yaml.safe_load((ROOT / "configs" / "phc_gpu.yaml").read_text())
    assert config["trainer"]["check_val_every_n_epoch"] == 5
    args = {c["class_path"]: c.get("init_args", {}) for c in config["trainer"]["callbacks"]}
    assert args["callbacks.MotionResampling"]["every_n_epochs"] == 5
    assert args["callbacks.PHCCheckpoint"]["every_n_epochs"] == args["callbacks.PHCCheckpoint"]["last_every_n_epochs"]
    assert [c["class_path"] for c in config["trainer"]["callbacks"]] == [
        c["class_path"] for c in original["trainer"]["callbacks"]]
    assert config["model"] == original["model"] and config["data"] == original["data"]
