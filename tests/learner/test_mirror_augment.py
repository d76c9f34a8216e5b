"""``model.mirror_augment``: each minibatch trains with its left-right mirror image, the normalizer sees both."""

from __future__ import annotations

from typing import Dict

import pytest
import torch

from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.module import BATCH_KEYS, PHCModule
from phc_lightning.task.observations import OBS_DIM

BATCH = 16


def module(mirror: bool) -> PHCModule:
    torch.manual_seed(0)
    return PHCModule(actor_hidden=(16,), critic_hidden=(16,), init_log_std=-1.0, mirror_augment=mirror)


def minibatch(policy: PHCModule, seed: int = 0) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(BATCH, OBS_DIM, generator=gen)
    with torch.inference_mode():
        actions, logprobs, values = policy.act(obs)
    advantages = torch.randn(BATCH, generator=gen)
    return {"obs": obs, "actions": actions.clone(), "logprobs": logprobs.clone(), "values": values.clone(),
            "advantages": advantages, "returns": values.clone() + advantages}


def test_off_is_the_default_and_changes_nothing() -> None:
    plain, off = PHCModule(actor_hidden=(16,), critic_hidden=(16,)), module(False)
    assert plain.mirror is None and off.mirror is None and off.hparams.mirror_augment is False


def test_the_loss_is_the_mean_of_the_batch_and_its_mirror_image() -> None:
    on, off = module(True), module(False)
    off.load_state_dict(on.state_dict())
    batch = minibatch(on)
    mirrored = {key: batch[key] for key in BATCH_KEYS}
    mirrored["obs"], mirrored["actions"] = on.mirror.obs(batch["obs"]), on.mirror.actions(batch["actions"])
    both = on.compute_losses(batch)
    halves = [off.compute_losses(b) for b in (batch, mirrored)]
    # advantages are normalized over the doubled batch: the same mean and std as over the batch alone
    for key in ("policy", "value", "entropy", "bound"):
        torch.testing.assert_close(both[key], 0.5 * (halves[0][key] + halves[1][key]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(halves[0]["policy"], halves[1]["policy"])  # the mirror image is other data


def test_the_normalizer_learns_mirror_symmetric_statistics_from_twice_the_rows() -> None:
    on = module(True)
    obs = torch.randn(64, OBS_DIM) * 2.0 + 0.5
    on.update_normalizers(obs, torch.randn(64))
    assert int(on.obs_norm.count) == 128
    torch.testing.assert_close(on.mirror.obs(on.obs_norm.mean), on.obs_norm.mean, atol=1e-6, rtol=0)


def test_a_recurrent_policy_or_unpaired_hinges_cannot_be_mirrored() -> None:
    with pytest.raises(ConfigError, match="model.mirror_augment: a recurrent"):
        PHCModule(actor_hidden=(8,), critic_hidden=(8,), recurrent="actor", lstm_hidden=8, mirror_augment=True)
    with pytest.raises(ConfigError, match="model.mirror_augment: .*missing twins"):
        PHCModule(actor_hidden=(8,), critic_hidden=(8,), frozen_bodies=("L_Hand",), mirror_augment=True)


def test_the_trust_region_is_measured_on_the_collected_rows_only() -> None:
    on, off = module(True), module(False)
    off.load_state_dict(on.state_dict())
    batch = minibatch(on)
    both, own = on.compute_losses(batch), off.compute_losses(batch)
    # the policy that collected the batch: no KL and nothing clipped, whatever its mirror image's log-probs say
    for key in ("approx_kl", "old_approx_kl", "clipfrac"):
        torch.testing.assert_close(both[key], own[key])
    assert float(both["approx_kl"]) < 1e-6
