"""PHCModule: acting contract, losses, and manual optimization under a real lightning.Trainer."""

from __future__ import annotations

import math
from typing import Dict, List

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from phc_lightning.core import skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.module import BATCH_KEYS, LOSS_KEYS, PHCModule
from phc_lightning.rollout.dataset import ITERATION_KEY, iteration_summary

OBS_DIM, BATCH = 8, 32
ACTION_DIM = 57  # PHC's controlled hinges: 69 minus the frozen toes and hands


def tiny_module(**overrides) -> PHCModule:
    kwargs = dict(obs_dim=OBS_DIM, actor_hidden=(16, 16), critic_hidden=(16,), init_log_std=-1.0)
    kwargs.update(overrides)
    return PHCModule(**kwargs)


def make_minibatches(module: PHCModule, num: int = 4, seed: int = 0) -> List[Dict[str, torch.Tensor]]:
    """Rollout-like minibatches: built under inference_mode with the module's own act(), like the rollout does."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    with torch.inference_mode():
        for _ in range(num):
            obs = torch.randn(BATCH, module.hparams.obs_dim, generator=gen) * 3.0 + 1.0
            actions, logprobs, values = module.act(obs)
            advantages = torch.randn(BATCH, generator=gen)
            batches.append(
                {
                    "obs": obs,
                    "actions": actions,
                    "logprobs": logprobs,
                    "values": values,
                    "advantages": advantages,
                    "returns": values + advantages,
                }
            )
    # As the rollout does: the iteration's summary travels with its first minibatch.
    every_obs = torch.cat([b["obs"] for b in batches])
    every_return = torch.cat([b["returns"] for b in batches])
    batches[0][ITERATION_KEY] = iteration_summary(every_obs, every_return, 1000, None, {"perf/collect_time": 0.1})
    return batches


def make_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        **kwargs,
    )


def test_act_get_value_shapes_and_logprob():
    torch.manual_seed(0)
    module = tiny_module()
    obs = torch.randn(5, OBS_DIM)
    actions, logprob, value = module.act(obs)
    assert actions.shape == (5, ACTION_DIM) and logprob.shape == (5,) and value.shape == (5,)
    dist = torch.distributions.Normal(module(obs), math.exp(-1.0))
    torch.testing.assert_close(logprob, dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(module.get_value(obs), value)
    mean_actions, _, _ = module.act(obs, deterministic=True)
    torch.testing.assert_close(mean_actions, module(obs))
    with pytest.raises(ValueError, match=r"expected obs of shape \[N, 8\]"):
        module.act(torch.randn(5, OBS_DIM + 1))


def test_update_normalizers_changes_normalization_not_act():
    module = tiny_module()
    obs = torch.randn(64, OBS_DIM) * 5.0 + 3.0
    module.update_normalizers(obs, torch.zeros(64))
    assert module.obs_norm.count.item() == 64
    torch.testing.assert_close(module.obs_norm.mean, obs.mean(0))
    count = module.obs_norm.count.clone()
    module.act(obs)
    assert module.obs_norm.count == count  # acting never touches the statistics


def test_advantages_normalized_per_minibatch():
    torch.manual_seed(0)
    module = tiny_module()
    batch = make_minibatches(module, num=1)[0]
    shifted = dict(batch, advantages=batch["advantages"] * 100.0 + 7.0)
    with torch.no_grad():
        a, b = module.compute_losses(batch), module.compute_losses(shifted)
    torch.testing.assert_close(a["policy"], b["policy"])  # invariant to the advantages' scale and offset
    module.hparams.norm_adv = False
    with torch.no_grad():
        a, b = module.compute_losses(batch), module.compute_losses(shifted)
    assert not torch.allclose(a["policy"], b["policy"])


def test_compute_losses_reports_missing_batch_keys():
    module = tiny_module()
    batch = make_minibatches(module, num=1)[0]
    del batch["returns"]
    with pytest.raises(KeyError, match="missing \\['returns'\\]"):
        module.compute_losses(batch)


def test_trainer_fit_logs_every_loss_and_moves_away_from_l2_anchor():
    torch.manual_seed(0)
    module = tiny_module(l2_init_coef=1e-3)
    batches = make_minibatches(module)
    assert module.l2_init_distance().item() == 0.0
    assert module.compute_losses(batches[0])["l2_init"].item() == 0.0

    trainer = make_trainer()
    trainer.fit(module, DataLoader(batches, batch_size=None))

    for key in LOSS_KEYS + ("grad_norm",):
        assert f"losses/{key}" in trainer.callback_metrics, key
    assert trainer.callback_metrics["losses/l2_init"].item() > 0.0
    assert trainer.callback_metrics["losses/grad_norm"].item() > 0.0
    assert module.l2_init_distance().item() > 0.0
    assert math.isfinite(module.last_approx_kl)
    assert trainer.global_step == len(batches)  # one optimizer step per minibatch

    module.reset_l2_anchor()
    assert module.l2_init_distance().item() == 0.0


def test_at_l2_init_coef_0_no_anchor_is_kept_computed_or_logged(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(l2_init_coef=0.0)
    assert not any(key.startswith("l2_anchor.") for key in module.state_dict())
    batches = make_minibatches(module)
    assert "l2_init" not in module.compute_losses(batches[0])
    trainer = make_trainer()
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert "losses/l2_init" not in trainer.callback_metrics and "losses/policy" in trainer.callback_metrics
    with pytest.raises(ValueError, match="l2_init_coef is 0"):
        module.l2_init_distance()

    # checkpoints cross the setting: an anchor the module does not keep is dropped; a module that keeps one and
    # loads a checkpoint without it anchors at the checkpoint's weights
    path = tmp_path / "no_anchor.ckpt"
    trainer.save_checkpoint(path)
    anchored = PHCModule.load_from_checkpoint(path, l2_init_coef=0.1)
    assert anchored.l2_init_distance().item() == 0.0
    torch.testing.assert_close(anchored.state_dict()["policy.actor.0.weight"], module.policy.actor[0].weight)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"].update({f"l2_anchor.{k}": v for k, v in anchored.l2_anchor.state_dict().items()})
    torch.save(ckpt, path)  # as written before the anchor was skipped at 0
    plain = PHCModule.load_from_checkpoint(path)
    assert plain.l2_anchor is None
    from phc_lightning.learner.checkpoint import load_checkpoint_module

    assert load_checkpoint_module(str(path))[0].l2_anchor is None  # export and render read it too


class GradNormRecorder(L.Callback):
    """Records the global gradient norm the optimizer actually steps with (after clipping)."""

    def __init__(self) -> None:
        self.norms: List[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def hook(optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

        trainer.optimizers[0].register_step_pre_hook(hook)


def test_clip_gradients_in_manual_mode_and_pre_clip_norm_logged():
    torch.manual_seed(0)
    max_norm = 1e-3
    module = tiny_module(max_grad_norm=max_norm)
    recorder = GradNormRecorder()
    trainer = make_trainer(callbacks=[recorder])
    trainer.fit(module, DataLoader(make_minibatches(module), batch_size=None))
    assert len(recorder.norms) == 4
    assert max(recorder.norms) <= max_norm * (1 + 1e-4)
    assert trainer.callback_metrics["losses/grad_norm"].item() > 10 * max_norm  # logged before clipping


def test_checkpoint_loads_with_weights_only_and_restores_buffers(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(l2_init_coef=0.1)
    batches = make_minibatches(module)
    trainer = make_trainer()
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert int(module.obs_norm.count) == 4 * BATCH  # the summary's observations, merged at epoch end
    assert int(module.env_steps) == 1000  # the summary's env steps
    module.env_steps += 234
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["state_dict"]["env_steps"].item() == 1234
    assert checkpoint["state_dict"]["obs_norm.count"].item() == 4 * BATCH
    assert len(checkpoint["optimizer_states"]) == 1
    restored = PHCModule.load_from_checkpoint(path)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, msg=key)
    assert restored.l2_init_distance().item() > 0.0  # anchor = original init, not the trained weights


def test_learnable_log_std_is_optimized_and_fixed_is_not():
    learnable = tiny_module(learnable_log_std=True)
    fixed = tiny_module()
    params = {id(p) for group in learnable.configure_optimizers().param_groups for p in group["params"]}
    assert id(learnable.policy.log_std) in params
    assert "policy.log_std" in fixed.state_dict() and "policy.log_std" not in dict(fixed.named_parameters())


def test_signature_parses_with_jsonargparse():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(PHCModule, "model")
    args = [
        "--model.actor_hidden=[64, 32]",
        "--model.critic_hidden=[8]",
        "--model.value_clip=null",
        "--model.obs_dim=10",
    ]
    cfg = parser.parse_args(args)
    init = parser.instantiate_classes(cfg)
    module = init.model
    assert module.hparams.value_clip is None and list(module.hparams.actor_hidden) == [64, 32]
    assert set(BATCH_KEYS) == {"obs", "actions", "logprobs", "values", "advantages", "returns"}


def test_frozen_dofs_are_not_part_of_the_action_distribution():
    module = tiny_module()
    obs = torch.randn(5, OBS_DIM)
    actions, logprob, _ = module.act(obs)
    assert actions.shape == (5, 57) and module.policy.log_std.shape == (57,)
    targets = module.pd_targets(torch.ones(5, 57))
    assert targets.shape == (5, skeleton.NUM_DOFS)
    assert (targets[:, list(skeleton.FROZEN_DOFS)] == 0).all()
    # Freezing one more body removes its three hinges from the distribution (and from log-prob and entropy).
    fewer = tiny_module(frozen_bodies=["L_Toe", "R_Toe", "L_Hand", "R_Hand", "Head"])
    assert fewer.action_dim == 54
    batch = make_minibatches(fewer, num=1)[0]
    assert batch["actions"].shape == (BATCH, 54)
    with torch.no_grad():
        losses = fewer.compute_losses(batch)
    expected_entropy = 54 * (0.5 + 0.5 * math.log(2 * math.pi) - 1.0)  # log_std -1 on every controlled hinge
    assert losses["entropy"].item() == pytest.approx(expected_entropy, rel=1e-5)


def test_bound_loss_sees_only_controlled_actions():
    module = tiny_module()
    with torch.no_grad():
        module.policy.actor[-1].bias.fill_(2.0)  # every controlled mean at 2, soft bound 0.9
    batch = make_minibatches(module, num=1)[0]
    with torch.no_grad():
        bound = module.compute_losses(batch)["bound"].item()
    assert bound == pytest.approx(57 * 1.1**2, rel=1e-3)


def test_normalized_value_targets_round_trip():
    module = tiny_module(normalize_value=True)
    returns = torch.randn(256) * 20.0 + 35.0
    module.update_normalizers(torch.randn(256, OBS_DIM), returns)
    normalized = module.normalize_value(returns)
    assert abs(normalized.mean().item()) < 1e-4 and normalized.std(correction=0).item() == pytest.approx(1.0, rel=1e-3)
    torch.testing.assert_close(module._denormalize_value(normalized), returns, rtol=1e-5, atol=1e-4)
    # The critic works in normalized units; get_value and act answer in return units.
    obs = torch.randn(4, OBS_DIM)
    raw = module.policy.value(module.obs_norm(obs))
    expected = raw * module.value_norm.var.add(1e-5).sqrt() + module.value_norm.mean
    torch.testing.assert_close(module.get_value(obs), expected)
    # Without the option the values are left alone.
    plain = tiny_module()
    torch.testing.assert_close(plain.normalize_value(returns), returns)


def test_value_clip_is_scale_free_with_normalized_values():
    """The same relative error gives the same clipped value loss whatever the return scale."""
    losses = []
    for scale in (1.0, 100.0):
        torch.manual_seed(0)
        module = tiny_module(normalize_value=True, value_clip=0.2)
        returns = (torch.randn(512, generator=torch.Generator().manual_seed(0)) * 3.0 + 10.0) * scale
        module.update_normalizers(torch.randn(512, OBS_DIM), returns)
        batch = make_minibatches(module, num=1)[0]
        batch["returns"] = returns[:BATCH]
        batch["values"] = returns[:BATCH] * 0.9
        with torch.no_grad():
            losses.append(module.compute_losses(batch)["value"].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_critic_learning_rate_is_its_own_param_group():
    module = tiny_module(learning_rate=1e-4, critic_learning_rate=5e-4, learnable_log_std=True)
    actor_group, critic_group = module.configure_optimizers().param_groups
    assert actor_group["lr"] == 1e-4 and critic_group["lr"] == 5e-4
    assert {id(p) for p in critic_group["params"]} == {id(p) for p in module.policy.critic.parameters()}
    assert id(module.policy.log_std) in {id(p) for p in actor_group["params"]}


def test_checkpoint_with_another_action_interface_is_refused(tmp_path):
    module = tiny_module(residual_actions=True, action_scale=0.5, dof_action_scale={})
    trainer = make_trainer()
    trainer.fit(module, DataLoader(make_minibatches(module), batch_size=None))
    path = tmp_path / "residual.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    same = tiny_module(residual_actions=True, action_scale=0.5, dof_action_scale={})
    same.on_load_checkpoint(ckpt)  # accepted
    for other, key in ((dict(residual_actions=False, action_scale=0.5, dof_action_scale={}), "residual_actions"),
                       (dict(residual_actions=True, action_scale=3.14, dof_action_scale={}), "action_scale"),
                       (dict(residual_actions=True, action_scale=0.5), "dof_action_scale")):
        with pytest.raises(ConfigError, match=f"model.{key}="):
            tiny_module(**other).on_load_checkpoint(ckpt)
        with pytest.raises(ConfigError, match=f"model.init_from: .*model.{key}="):
            tiny_module(init_from=str(path), **other)
    warm = tiny_module(init_from=str(path), residual_actions=True, action_scale=0.5, dof_action_scale={})
    torch.testing.assert_close(warm.policy.actor[0].weight, module.policy.actor[0].weight)


def test_warm_start_copies_the_value_normalizer_and_refuses_another_normalize_value(tmp_path):
    module = tiny_module(normalize_value=True)
    trainer = make_trainer()
    trainer.fit(module, DataLoader(make_minibatches(module), batch_size=None))
    assert int(module.value_norm.count) > 0  # the returns of one iteration
    path = tmp_path / "normalized.ckpt"
    trainer.save_checkpoint(path)
    warm = tiny_module(normalize_value=True, init_from=str(path))
    for key in ("value_norm.mean", "value_norm.var", "value_norm.count", "obs_norm.mean", "policy.critic.0.weight"):
        torch.testing.assert_close(warm.state_dict()[key], module.state_dict()[key], rtol=0, atol=0)
    obs = torch.randn(5, OBS_DIM)
    torch.testing.assert_close(warm.get_value(obs), module.get_value(obs))  # the critic reads in the same units
    assert warm.hparams["warm_started_from"] == str(path) and "init_from" not in warm.hparams
    with pytest.raises(ConfigError, match="model.init_from: .*model.normalize_value=True, .*model.normalize_value="):
        tiny_module(normalize_value=False, init_from=str(path))
    plain_trainer = make_trainer()
    plain = tiny_module()
    plain_trainer.fit(plain, DataLoader(make_minibatches(plain), batch_size=None))
    plain_trainer.save_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(ConfigError, match="model.init_from: .*model.normalize_value=False"):
        tiny_module(normalize_value=True, init_from=str(tmp_path / "plain.ckpt"))


def test_training_without_a_rollout_summary_fails_loudly():
    module = tiny_module()
    batches = make_minibatches(module)
    del batches[0][ITERATION_KEY]  # a data source that never feeds the normalizer
    with pytest.raises(RuntimeError, match="carries no rollout summary"):
        make_trainer().fit(module, DataLoader(batches, batch_size=None))


class Forgetful(PHCModule):
    """Overrides a hook PHCModule trains with and forgets super(): the normalizers would never learn."""

    def on_train_batch_end(self, outputs, batch, batch_idx):  # noqa: ANN001, ANN201
        self.last_batch = batch_idx


class CountingMixin:
    def on_validation_epoch_start(self):  # noqa: ANN201 - stale metrics from one evaluation to the next
        self.evaluations = getattr(self, "evaluations", 0) + 1


class Careful(PHCModule):
    def on_train_batch_end(self, outputs, batch, batch_idx):  # noqa: ANN001, ANN201
        super().on_train_batch_end(outputs, batch, batch_idx)
        self.last_batch = batch_idx


def test_a_subclass_that_drops_a_learner_hook_is_refused_in_one_line_and_one_that_keeps_it_trains():
    with pytest.raises(TypeError, match=r"^Forgetful.on_train_batch_end overrides PHCModule.on_train_batch_end "
                                        r"without calling super\(\).on_train_batch_end\(...\): the normalizer"):
        Forgetful(obs_dim=OBS_DIM)
    mixed = type("Mixed", (CountingMixin, PHCModule), {})
    with pytest.raises(TypeError, match="CountingMixin.on_validation_epoch_start overrides"):
        mixed(obs_dim=OBS_DIM)
    module = Careful(obs_dim=OBS_DIM, actor_hidden=(16,), critic_hidden=(16,))
    make_trainer().fit(module, DataLoader(make_minibatches(module), batch_size=None))
    assert module.last_batch == 3 and int(module.obs_norm.count) == 4 * BATCH and int(module.env_steps) == 1000


def test_target_kl_skips_the_rest_of_the_iterations_steps_and_the_epoch_still_ends_normally():
    torch.manual_seed(0)
    module = tiny_module(target_kl=1e-12, learning_rate=1e-2)
    batches = make_minibatches(module, num=6)
    trainer = make_trainer()
    trainer.fit(module, DataLoader(batches, batch_size=None))
    # minibatch 0 has KL exactly 0 (not above the target), minibatch 1 exceeds it: two optimizer steps
    assert trainer.global_step == 2
    assert trainer.callback_metrics["charts/update_fraction"].item() == pytest.approx(2 / 6)
    assert int(module.obs_norm.count) == 6 * BATCH  # the iteration still closed: normalizers updated


def test_actions_follow_the_given_generator_not_the_global_rng():
    module = tiny_module()
    obs = torch.randn(5, OBS_DIM)
    a, _, _ = module.act(obs, generator=torch.Generator().manual_seed(7))
    state = torch.get_rng_state()
    b, _, _ = module.act(obs, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert torch.equal(torch.get_rng_state(), state)

