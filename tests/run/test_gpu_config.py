"""configs/phc_gpu.yaml's code path in CI: the GPU config at toy sizes on MuJoCo Warp's CPU device, through a
motion resampling, checkpoints, a bit-exact resume and a validation, with one process and with two (DDP, gloo).

Only sizes change (envs, networks, horizon, intervals, run length, a 1-second version of the bundled clips); the
backend, the puffer-phc PPO settings, the callbacks and their order stay the config's. What CPU CI cannot show is
left to scripts/gpu_check.sh: CUDA itself, host syncs under torch's sync debug mode, speed and memory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml

from phc_lightning.run.directory import LAYOUT_ENV
from tests.helpers import CONFIGS, checkout_env

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mujoco_warp") is None, reason="needs phc-lightning[warp]")
DDP2 = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def toy_gpu_config(tmp_path: Path) -> Path:
    """configs/phc_gpu.yaml at toy sizes, Warp on its CPU device; the motions: the bundled clips cut to 1 s."""
    from phc_lightning.motion import BUNDLED_MOTIONS
    from phc_lightning.motion.formats import load_motion_file, save_motions_npz
    from phc_lightning.motion.raw_motion import RawMotion

    clips = tmp_path / "clips_1s.npz"
    save_motions_npz(clips, [RawMotion(m.key, m.fps, m.root_pos[:31], m.global_rot[:31])
                             for m in load_motion_file(BUNDLED_MOTIONS)])
    config = yaml.safe_load((CONFIGS / "phc_gpu.yaml").read_text())
    assert config["data"]["backend"] == "mujoco_warp" and config["trainer"]["accelerator"] == "gpu"
    config["trainer"].update(accelerator="cpu", max_epochs=4, check_val_every_n_epoch=2, logger=False)
    intervals = {"callbacks.PHCCheckpoint": {"every_n_epochs": 1, "last_every_n_epochs": 1, "save_top_k": -1},
                 "callbacks.MotionResampling": {"every_n_epochs": 2}}
    for callback in config["trainer"]["callbacks"]:
        callback.setdefault("init_args", {}).update(intervals.get(callback["class_path"], {}))
    config["model"].update(actor_hidden=[32, 32], critic_hidden=[32, 32])
    config["data"].update(device="cpu", num_envs=4, num_threads=1, horizon=8, num_minibatches=2, update_epochs=2,
                          motion_file=str(clips))
    path = tmp_path / "phc_gpu_toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def phc(cwd: Path, processes: int, *args: str) -> None:
    """``phc ARGS`` in ``cwd``: in this process (no start-up cost) for one process; a subprocess for two, whose
    launcher re-runs the command line for the second rank."""
    if processes == 1:
        from phc_lightning.run.lightning_cli import run_cli

        here = os.getcwd()
        os.chdir(cwd)
        try:
            run_cli(list(args))
        finally:
            os.chdir(here)
            os.environ.pop(LAYOUT_ENV, None)
        return
    env = checkout_env({k: v for k, v in os.environ.items() if k != LAYOUT_ENV})
    proc = subprocess.run([sys.executable, "-m", "phc_lightning.cli", *args, *DDP2], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def resampling_state(ckpt: Dict) -> Dict:
    return next(value for key, value in ckpt["callbacks"].items() if key.startswith("MotionResampling"))


def data_states(ckpt: Dict) -> List[Dict]:
    state = ckpt["PHCDataModule"]
    return state["ranks"] if "ranks" in state else [state]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_the_gpu_config_resamples_checkpoints_resumes_exactly_and_validates(tmp_path: Path, processes: int) -> None:
    config = str(toy_gpu_config(tmp_path))
    phc(tmp_path, processes, "fit", "--config", config)  # 4 iterations: evaluations and resamplings after 2 and 4
    run = tmp_path / "runs" / "phc_gpu" / "version_0"
    straight = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    first = torch.load(run / "checkpoints" / "epoch00000.ckpt", weights_only=True)
    assert int(straight["state_dict"]["env_steps"]) == 4 * processes * 4 * 8
    resampling = resampling_state(straight)
    assert resampling["sampler"]["num_updates"] >= 2  # the evaluations during fit fed the failure history
    assert not torch.equal(resampling["generator"], resampling_state(first)["generator"])  # and motions were drawn
    # continue from the checkpoint after 2 iterations (after the first evaluation and resampling): bit for bit
    phc(tmp_path, processes, "fit", "--config", config, "--ckpt_path", str(run / "checkpoints" / "epoch00001.ckpt"))
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # the resume wrote into the same run
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert len(data_states(resumed)) == processes
    for a, b in zip(data_states(straight), data_states(resumed)):
        for key in ("obs", "motion_ids", "motion_times", "progress"):
            torch.testing.assert_close(b["env"][key], a["env"][key], rtol=0, atol=0, msg=key)
        for key, value in a["env"]["physics"].items():
            torch.testing.assert_close(b["env"]["physics"][key], value, rtol=0, atol=0, msg=key)
        assert torch.equal(b["env"]["rng"], a["env"]["rng"]) and torch.equal(b["motion_weights"], a["motion_weights"])
    assert torch.equal(resampling_state(resumed)["generator"], resampling["generator"])
    phc(tmp_path, processes, "validate", "--config", config, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    summary = json.loads((run / "eval" / "validate_summary.json").read_text())
    assert summary["num_motions"] == 7
