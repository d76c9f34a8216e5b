"""RunningNorm statistics and clipping, MLP layout and init, ActorCritic log-std modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from phc_lightning.rl.networks import MLP, ActorCritic, set_mlp_dtype
from phc_lightning.rl.normalization import RunningNorm


def test_running_norm_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    stream = rng.normal(loc=[5.0, -3.0, 0.0, 100.0], scale=[3.0, 0.1, 1.0, 20.0], size=(161, 4)).astype(np.float32)
    norm = RunningNorm(4)
    start = 0
    for size in (1, 7, 100, 3, 50):
        norm.update(torch.from_numpy(stream[start : start + size]))
        start += size
    assert start == len(stream)
    assert norm.count.item() == len(stream)
    np.testing.assert_allclose(norm.mean.numpy(), stream.mean(0, dtype=np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.var.numpy(), stream.var(0, dtype=np.float64), rtol=1e-4, atol=1e-6)


def test_running_norm_forward_normalizes_clips_and_never_updates():
    norm = RunningNorm(2, clip=10.0)
    norm.update(torch.tensor([[1.0, 10.0], [3.0, 10.0]]))  # mean [2, 10], var [1, 0]
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    out = norm(torch.tensor([[3.0, 10.0], [1000.0, -1000.0]]))
    eps = norm.eps
    torch.testing.assert_close(out[0], torch.tensor([1.0 / math.sqrt(1.0 + eps), 0.0]))
    torch.testing.assert_close(out[1], torch.tensor([10.0, -10.0]))  # clipped
    for key, value in norm.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_running_norm_identity_before_first_update_and_state_dict_keys():
    norm = RunningNorm(3)
    x = torch.tensor([[0.5, -1.0, 2.0]])
    torch.testing.assert_close(norm(x), x / math.sqrt(1.0 + norm.eps))
    assert set(norm.state_dict()) == {"mean", "var", "count"}
    assert norm.count.dtype == torch.long


def test_running_norm_update_under_inference_mode_keeps_ordinary_buffers():
    norm = RunningNorm(3)
    with torch.inference_mode():
        norm.update(torch.randn(10, 3))
    assert not norm.mean.is_inference() and not norm.var.is_inference() and not norm.count.is_inference()
    # A later update outside inference mode must still work on the same buffers.
    norm.update(torch.randn(5, 3))
    assert norm.count.item() == 15


def test_running_norm_rejects_bad_input():
    norm = RunningNorm(3)
    with pytest.raises(ValueError, match="last dim 3"):
        norm.update(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        norm.update(torch.tensor([[0.0, float("nan"), 1.0]]))
    assert norm.count.item() == 0


def test_mlp_layout_layer_norm_before_last_activation_and_init():
    mlp = MLP(10, [32, 16], 4, layer_norm=True, out_gain=0.01)
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, nn.SiLU, nn.Linear, nn.LayerNorm, nn.SiLU, nn.Linear]
    head = mlp[-1]
    # Orthogonal rows with gain g: W W^T = g^2 I (out_dim <= in_dim); biases start at zero.
    torch.testing.assert_close(head.weight @ head.weight.T, 0.01**2 * torch.eye(4), atol=1e-8, rtol=1e-5)
    first = mlp[0]
    torch.testing.assert_close(first.weight.T @ first.weight, 2.0 * torch.eye(10), atol=1e-5, rtol=1e-5)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in mlp if isinstance(m, nn.Linear))
    assert [type(m) for m in MLP(10, [8], 2, layer_norm=False)] == [nn.Linear, nn.SiLU, nn.Linear]


def test_actor_critic_fixed_and_learnable_log_std():
    fixed = ActorCritic(6, 3, [16, 16], [16], init_log_std=-2.9, learnable_log_std=False)
    learnable = ActorCritic(6, 3, [16, 16], [16], init_log_std=-2.9, learnable_log_std=True)
    assert "log_std" not in dict(fixed.named_parameters()) and "log_std" in dict(fixed.named_buffers())
    assert "log_std" in dict(learnable.named_parameters())
    assert set(fixed.state_dict()) == set(learnable.state_dict())  # checkpoints load across both modes

    obs = torch.randn(5, 6)
    dist = fixed.distribution(obs)
    assert dist.mean.shape == (5, 3)
    torch.testing.assert_close(dist.stddev, torch.full((5, 3), math.exp(-2.9)))
    assert fixed.value(obs).shape == (5,)
    # Head gain 0.01: initial means are tiny compared to the unit-scale input.
    assert dist.mean.abs().max() < 0.1

    dist = learnable.distribution(obs)
    dist.entropy().sum().backward()
    assert learnable.log_std.grad is not None and torch.all(learnable.log_std.grad > 0)


def test_bfloat16_mlp_rounds_its_products_but_keeps_float32_weights_outputs_and_grads():
    torch.manual_seed(0)
    mlp = MLP(934, [64, 32], 8, out_gain=1.0)
    x = torch.randn(256, 934)
    want = mlp(x)
    set_mlp_dtype(mlp, torch.bfloat16)
    got = mlp(x)
    assert got.dtype == torch.float32 and all(p.dtype == torch.float32 for p in mlp.parameters())
    error = (got - want).abs().max().item()
    assert 0.0 < error < 0.05 * want.abs().max().item()  # bfloat16 rounding: different, but only by rounding
    assert torch.equal(mlp(x[:7]), got[:7])  # a row's output does not depend on the batch it sits in
    got.square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in mlp.parameters())


def test_actor_critic_mlp_dtype_reaches_both_mlps_and_rejects_unknown_names():
    policy = ActorCritic(6, 3, [16], [16], mlp_dtype="bfloat16")
    assert policy.actor.compute_dtype == torch.bfloat16 and policy.critic.compute_dtype == torch.bfloat16
    assert ActorCritic(6, 3, [16], [16]).actor.compute_dtype is None
    with pytest.raises(ValueError, match="model.mlp_dtype"):
        ActorCritic(6, 3, [16], [16], mlp_dtype="float16")
