"""The data side on the backend's device, and checkpoints that cross backends.

MuJoCo Warp runs here on Warp's CPU device (as in CI); on a GPU the same code keeps every tensor of the data side
on CUDA. The Warp tests are skipped without the ``[warp]`` extra.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from phc_lightning.learner.module import PHCModule
from phc_lightning.rollout.datamodule import PHCDataModule
from phc_lightning.rollout.dataset import ITERATION_KEY
from tests.helpers import SMOKE, phc

HAS_WARP = importlib.util.find_spec("mujoco_warp") is not None
needs_warp = pytest.mark.skipif(not HAS_WARP, reason="needs phc-lightning[warp]")


@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mujoco_warp", marks=needs_warp)])
def test_motions_env_and_minibatches_live_on_the_backends_device(backend: str) -> None:
    dm = PHCDataModule(backend=backend, num_envs=2, num_threads=1, horizon=4, update_epochs=1, num_minibatches=2)
    dm.setup("fit")
    module = PHCModule(actor_hidden=[16], critic_hidden=[16])
    dm.rollout.get_policy = lambda: module
    try:
        device = dm.env.backend.device  # None asked for the backend's own default
        assert device == torch.device("cpu")  # no GPU here; a CUDA machine gives Warp's worlds the GPU
        assert dm.motions.device == dm.env.device == device
        batches = list(iter(dm.rollout))
        assert ITERATION_KEY in batches[0]
        assert all(value.device == device for batch in batches for value in batch.values() if torch.is_tensor(value))
    finally:
        dm.teardown("fit")


@pytest.mark.parametrize("device, precision", [("cpu", "highest"), ("cuda", "high")])
def test_networks_get_tf32_matmuls_only_when_the_trainer_runs_on_cuda(device: str, precision: str) -> None:
    dm = PHCDataModule(num_envs=1, num_threads=1, horizon=2, update_epochs=1, num_minibatches=1)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16])
    # only what setup reads
    strategy = SimpleNamespace(root_device=torch.device(device))
    dm.trainer = module.trainer = SimpleNamespace(strategy=strategy, global_rank=0, world_size=1)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        dm.setup("fit")  # Lightning's order: the data side first, then the module
        assert torch.get_float32_matmul_precision() == "highest"  # setting up the data changes no global setting
        module.setup("fit")
        assert torch.get_float32_matmul_precision() == precision
    finally:
        torch.set_float32_matmul_precision(before)
        dm.teardown("fit")


@pytest.mark.slow
@needs_warp
def test_a_checkpoint_trained_with_one_backend_validates_on_the_other(tmp_path: Path) -> None:
    # Warp (on its CPU device here) trains; CPU MuJoCo evaluates its checkpoint. Only fit's final evaluation runs.
    fit = phc("fit", "--config", SMOKE, "--data.backend", "mujoco_warp", "--trainer.max_epochs", "2",
              "--trainer.check_val_every_n_epoch", "null", "--run_name", "warp", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    warp_run = tmp_path / "runs" / "smoke" / "warp"
    val = phc("validate", "--config", SMOKE, "--ckpt_path", str(warp_run / "checkpoints" / "last.ckpt"),
              cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    summary = json.loads((warp_run / "eval" / "validate_summary.json").read_text())
    assert summary["num_motions"] == 7 and summary["env_steps"] == 2 * 8 * 16  # the checkpoint's policy and counter

    # And the other way: a CPU MuJoCo checkpoint evaluated with Warp.
    fit = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "1", "--run_name", "cpu", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    cpu_run = tmp_path / "runs" / "smoke" / "cpu"
    val = phc("validate", "--config", SMOKE, "--data.backend", "mujoco_warp",
              "--ckpt_path", str(cpu_run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    summary = json.loads((cpu_run / "eval" / "validate_summary.json").read_text())
    assert summary["num_motions"] == 7 and summary["env_steps"] == 8 * 16
