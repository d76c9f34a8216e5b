"""``phc export``: the ONNX policy (normalizer and action interface inside) equals the torch module.

Within 1e-5 on these inputs; the export itself checks 1e-4 on wider ones (reference angles up to pi)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from phc_lightning.cli import main
from phc_lightning.core import skeleton
from phc_lightning.learner.module import PHCModule

onnxruntime = pytest.importorskip("onnxruntime")


def trained_looking_checkpoint(path: Path, residual: bool, mlp_dtype: str = "float32") -> PHCModule:
    """A small module with non-trivial normalizer statistics and weights, saved like a Lightning checkpoint."""
    torch.manual_seed(0)
    module = PHCModule(actor_hidden=[64, 32], critic_hidden=[16], residual_actions=residual, mlp_dtype=mlp_dtype)
    module.obs_norm.update(torch.randn(500, 934) * 2.0 + 0.5)
    with torch.no_grad():
        for p in module.policy.actor.parameters():
            p.add_(0.2 * torch.randn_like(p))  # push the action head away from its 0.01 init: outputs reach the clip
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return module.eval()


@pytest.mark.parametrize("residual", [False, True])
def test_onnx_equals_torch_on_random_observations(tmp_path: Path, residual: bool) -> None:
    module = trained_looking_checkpoint(tmp_path / "m.ckpt", residual)
    out = tmp_path / "policy.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(out)])
    assert exit_info.value.code == 0

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == (["obs", "ref_dof_pos"] if residual else ["obs"])
    generator = torch.Generator().manual_seed(7)
    obs = torch.randn(33, 934, generator=generator) * 4.0
    ref = (torch.rand(33, skeleton.NUM_DOFS, generator=generator) * 2 - 1) * 3.0
    feed = {"obs": obs.numpy(), "ref_dof_pos": ref.numpy()} if residual else {"obs": obs.numpy()}
    pd_targets, actions = session.run(["pd_targets", "actions"], feed)
    with torch.no_grad():
        want_actions, _, _ = module.act(obs, deterministic=True)
        want = module.pd_targets(want_actions, ref)
    assert np.abs(actions - want_actions.numpy()).max() < 1e-5
    assert np.abs(pd_targets - want.numpy()).max() < 1e-5
    assert np.abs(want_actions.numpy()).max() > 1.0  # the check covers the action clip
    frozen = list(skeleton.FROZEN_DOFS)
    assert np.all(pd_targets[:, frozen] == 0.0)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["obs_dim"] == "934"
    assert json.loads(meta["action_interface"])["residual_actions"] is residual


def test_a_bfloat16_trained_policy_exports_as_the_float32_graph_of_its_weights(tmp_path: Path) -> None:
    module = trained_looking_checkpoint(tmp_path / "m.ckpt", residual=False, mlp_dtype="bfloat16")
    out = tmp_path / "policy.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(tmp_path / "m.ckpt"), "--out", str(out)])
    assert exit_info.value.code == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    obs = torch.randn(33, 934, generator=torch.Generator().manual_seed(7)) * 4.0
    (actions,) = session.run(["actions"], {"obs": obs.numpy()})
    with torch.no_grad():
        trained, _, _ = module.act(obs, deterministic=True)
        module.policy.actor.compute_dtype = None
        float32, _, _ = module.act(obs, deterministic=True)
    assert np.abs(actions - float32.numpy()).max() < 1e-5
    assert 0.0 < np.abs(actions - trained.numpy()).max() < 0.05  # training's bfloat16 rounding, nothing more
    assert session.get_modelmeta().custom_metadata_map["trained_mlp_dtype"] == "bfloat16"


def test_bad_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(bad), "--out", str(tmp_path / "p.onnx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("phc: error: --ckpt_path: ") and str(bad) in err and "\n" not in err
