"""Recurrent policies end to end: exact resume, ``phc fit`` -> ``validate`` -> ``export``, and the ONNX state loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from phc_lightning.cli import main
from phc_lightning.learner.module import PHCModule
from tests.helpers import SMOKE, phc
from tests.run.test_resume import assert_same_state, fit, losses, smoke_with_callbacks

# smoke: 8 envs x 16 steps; 2 segments of 8 steps per env, 16 segments in 2 minibatches
LSTM_FLAGS = ("--model.recurrent", "both", "--model.lstm_hidden", "32", "--data.bptt_horizon", "8")


@pytest.mark.slow
def test_resume_from_epoch_2_equals_4_epochs_straight_with_an_lstm(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # resampling after epoch 3 (index 2): the resume point carries live memories, the run after it a full reset;
    # smoke evaluates after epochs 2 and 4, in between
    config = smoke_with_callbacks(tmp_path, (
        "    - class_path: callbacks.PHCCheckpoint\n"
        "      init_args:\n"
        "        every_n_epochs: 1\n"
        "    - class_path: callbacks.MotionResampling\n"
        "      init_args:\n"
        "        every_n_epochs: 3\n"
        "    - class_path: callbacks.LRAnnealing\n"
    ))
    straight = fit(tmp_path / "straight", 4, *LSTM_FLAGS, config=config)
    first = fit(tmp_path / "resumed", 2, *LSTM_FLAGS, config=config)
    saved = torch.load(first / "last.ckpt", weights_only=True)
    assert "policy.actor_memory.lstm.weight_hh_l0" in saved["state_dict"]
    memory = saved["PHCDataModule"]["rollout"]["policy_state"]
    assert memory.shape == (8, 4 * 32) and bool((memory != 0).any())
    resumed = fit(tmp_path / "resumed", 4, "--ckpt_path", "last", *LSTM_FLAGS, config=config)
    assert_same_state(straight, resumed)
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(la) == sorted(lb) == [0, 1, 2, 3]
    for epoch in (2, 3):
        assert la[epoch] == lb[epoch], f"losses of epoch {epoch} differ"


@pytest.mark.slow
def test_smoke_fit_with_an_lstm_then_validate_and_export_its_checkpoint(tmp_path: Path) -> None:
    fit_run = phc("fit", "--config", SMOKE, "--trainer.max_epochs", "2", *LSTM_FLAGS, cwd=tmp_path)
    assert fit_run.returncode == 0, fit_run.stderr[-3000:]
    assert "final eval | success" in fit_run.stdout
    last = tmp_path / "runs" / "smoke" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["hyper_parameters"]["recurrent"] == "both" and int(ckpt["state_dict"]["env_steps"]) == 2 * 8 * 16

    # the checkpoint's model settings win: validate needs no LSTM flags
    val = phc("validate", "--config", SMOKE, "--ckpt_path", str(last), cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    assert "PHC evaluation" in val.stdout and "mpjpe_g" in val.stdout

    out = tmp_path / "policy.onnx"
    exported = phc("export", "--ckpt_path", str(last), "--out", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert out.is_file()


def recurrent_checkpoint(path: Path, recurrent: str) -> PHCModule:
    """A small residual LSTM module with non-trivial normalizer and weights, saved like a Lightning checkpoint."""
    torch.manual_seed(0)
    module = PHCModule(actor_hidden=[32], critic_hidden=[16], residual_actions=True, recurrent=recurrent,
                       lstm_hidden=16)
    module.obs_norm.update(torch.randn(500, 934) * 2.0 + 0.5)
    with torch.no_grad():
        for p in module.policy.actor.parameters():
            p.add_(0.2 * torch.randn_like(p))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return module.eval()


@pytest.mark.parametrize("recurrent", ["actor", "critic"])
def test_onnx_carries_the_actor_state_like_act_step(tmp_path: Path, recurrent: str) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    module = recurrent_checkpoint(tmp_path / "m.ckpt", recurrent)
    out = tmp_path / "policy.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(out)])
    assert exit_info.value.code == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    meta = session.get_modelmeta().custom_metadata_map
    if recurrent == "critic":  # the deployed policy has no memory: a plain graph
        assert names == ["obs", "ref_dof_pos"] and "recurrent_state_dim" not in meta
        return
    assert names == ["obs", "ref_dof_pos", "state"] and meta["recurrent_state_dim"] == "32"
    generator = torch.Generator().manual_seed(7)
    state = torch.zeros(5, module.recurrent_state_size)
    onnx_state = np.zeros((5, 32), dtype=np.float32)  # zeros at the episode start
    for _ in range(4):
        obs = torch.randn(5, 934, generator=generator) * 3.0
        ref = torch.rand(5, 69, generator=generator) - 0.5
        pd_targets, actions, onnx_state = session.run(
            ["pd_targets", "actions", "next_state"],
            {"obs": obs.numpy(), "ref_dof_pos": ref.numpy(), "state": onnx_state})
        with torch.no_grad():
            want, _, _, state = module.act_step(obs, state, deterministic=True)
        assert np.abs(actions - want.numpy()).max() < 1e-5
        assert np.abs(pd_targets - module.pd_targets(want, ref).numpy()).max() < 1e-5
        assert np.abs(onnx_state - state.numpy()).max() < 1e-5
    assert np.abs(onnx_state).max() > 0.01
