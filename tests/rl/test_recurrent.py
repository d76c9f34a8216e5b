"""Recurrent (LSTM) policies with the real MuJoCo env: state resets, segments, replay == collection, eval, export."""

from __future__ import annotations

from typing import Dict, List, Tuple

import lightning as L
import pytest
import torch

from phc_lightning.core.errors import ConfigError
from phc_lightning.evaluation.playback import play_motions
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.rl.recurrent import STARTS_KEY, STATE_KEY
from phc_lightning.rollout.datamodule import PHCDataModule
from phc_lightning.rollout.dataset import ITERATION_KEY, RolloutBuffer, RolloutDataset
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.env import HumanoidTracking

NUM_ENVS = 4
HORIZON = 12
BPTT = 4
LSTM_HIDDEN = 8


def short_motions(frames: int = 8) -> MotionLibrary:
    """The bundled motions cut to ``frames`` frames: every env ends an episode inside the horizon."""
    from phc_lightning.motion import BUNDLED_MOTIONS
    from phc_lightning.motion.formats import load_motion_file
    from phc_lightning.motion.raw_motion import RawMotion

    return MotionLibrary([RawMotion(m.key, m.fps, m.root_pos[:frames], m.global_rot[:frames])
                          for m in load_motion_file(BUNDLED_MOTIONS)])


def make_dataset(recurrent: str = "both", **kwargs) -> Tuple[RolloutDataset, PHCModule]:
    env = HumanoidTracking(make_backend("mujoco", NUM_ENVS, num_threads=1), short_motions(), seed=1)
    torch.manual_seed(0)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], recurrent=recurrent, lstm_hidden=LSTM_HIDDEN)
    args = dict(horizon=HORIZON, update_epochs=2, num_minibatches=3, gamma=0.9, gae_lambda=0.8, bptt_horizon=BPTT)
    args.update(kwargs)
    return RolloutDataset(env, get_policy=lambda: module, **args), module


def record_act_step(module: PHCModule) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Every ``act_step`` call's ``(state in, next state)``, from now on (an instance attribute: this module only)."""
    calls: List[Tuple[torch.Tensor, torch.Tensor]] = []
    real = module.act_step

    def recording(obs, state, deterministic=False, generator=None):  # noqa: ANN001, ANN202 - act_step's signature
        out = real(obs, state, deterministic, generator)
        calls.append((state.clone(), out[3].clone()))
        return out

    module.act_step = recording
    return calls


def iterate_with_buffer(dataset: RolloutDataset) -> Tuple[List[Dict[str, torch.Tensor]], RolloutBuffer]:
    """One pass; returns its minibatches (summary removed) and the buffer they were cut from."""
    bufs: List[RolloutBuffer] = []
    real = dataset.collect
    dataset.collect = lambda policy: bufs.append(real(policy)) or bufs[-1]
    batches = list(iter(dataset))
    batches[0].pop(ITERATION_KEY)
    dataset.collect = real
    return batches, bufs[0]


def test_hidden_states_are_zeroed_exactly_for_the_envs_that_ended_and_after_a_full_reset() -> None:
    dataset, module = make_dataset()
    calls = record_act_step(module)
    with torch.no_grad():
        buf = dataset.collect(module)
    done = buf.terminated | buf.truncated
    assert done.any() and (~done).any()
    assert torch.all(calls[0][0] == 0)  # a fresh start
    for t in range(1, HORIZON):
        state_in, previous_next = calls[t][0], calls[t - 1][1]
        for i in range(NUM_ENVS):
            if done[t - 1, i]:
                assert torch.all(state_in[i] == 0), (t, i)
            else:
                assert torch.all(previous_next[i] != 0), (t, i)  # a real memory, not zeros by accident
                assert torch.equal(state_in[i], previous_next[i]), (t, i)
    # the next iteration continues every env's memory, except those that ended on the last step
    carried = dataset.policy_state
    assert torch.equal(carried[~done[-1]], calls[-1][1][~done[-1]]) and torch.all(carried[done[-1]] == 0)
    with torch.no_grad():
        dataset.collect(module)
    assert torch.equal(calls[HORIZON][0], carried)
    # motion resampling (or any full reset) restarts the rollout from the reset envs: every env's memory starts over
    dataset.restart_from(dataset.env.reset())
    next(iter(dataset))
    assert torch.all(calls[2 * HORIZON][0] == 0)
    dataset.env.close()


def test_no_training_segment_crosses_an_episode_boundary_and_every_segment_is_used_once_per_epoch() -> None:
    dataset, module = make_dataset()
    batches, buf = iterate_with_buffer(dataset)
    done = buf.terminated | buf.truncated
    assert len(batches) == 2 * 3
    per_batch = HORIZON // BPTT * NUM_ENVS // 3
    seen = []
    for batch in batches:
        assert batch[STATE_KEY].shape == (per_batch, 4 * LSTM_HIDDEN)
        obs = batch["obs"].view(BPTT, per_batch, -1)
        starts = batch[STARTS_KEY].view(BPTT, per_batch)
        for m in range(per_batch):
            # which env's which segment: its first observation is one env's at one segment start
            k, n = [int(i[0]) for i in torch.nonzero((buf.obs[::BPTT] == obs[0, m]).all(-1), as_tuple=True)]
            seen.append((k, n))
            t0 = k * BPTT
            assert torch.equal(obs[:, m], buf.obs[t0 : t0 + BPTT, n])  # contiguous steps of one env
            assert torch.equal(batch[STATE_KEY][m], buf.segment_states[k, n])  # collection's state at the start
            assert not starts[0, m]
            assert torch.equal(starts[1:, m], done[t0 : t0 + BPTT - 1, n])  # reset right after every episode end
    segments = HORIZON // BPTT * NUM_ENVS
    for epoch in range(2):
        assert sorted(seen[epoch * segments : (epoch + 1) * segments]) == sorted(
            (k, n) for k in range(HORIZON // BPTT) for n in range(NUM_ENVS))
    assert any(bool(b[STARTS_KEY].any()) for b in batches), "expected an episode start inside a segment"

    # memory does not cross the start: what follows it does not depend on anything before it
    batch = next(b for b in batches if bool(b[STARTS_KEY].any()))
    starts = batch[STARTS_KEY].view(BPTT, per_batch)
    t, m = [int(i[0]) for i in torch.nonzero(starts, as_tuple=True)]
    obs = module.obs_norm(batch["obs"].view(BPTT, per_batch, -1)[:, m])
    with torch.no_grad():
        whole, _ = module.policy.unroll(obs, batch[STATE_KEY][m : m + 1], starts[:, m])
        tail, _ = module.policy.unroll(obs[t:], torch.zeros(1, 4 * LSTM_HIDDEN), torch.zeros(BPTT - t, dtype=bool))
        garbled = obs.clone()
        garbled[:t] = torch.randn_like(garbled[:t])
        changed, _ = module.policy.unroll(garbled, torch.randn(1, 4 * LSTM_HIDDEN), starts[:, m])
    torch.testing.assert_close(whole.mean[t:], tail.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(changed.mean[t:], whole.mean[t:], rtol=0, atol=1e-6)
    dataset.env.close()


@pytest.mark.parametrize("recurrent", ["actor", "critic", "both"])
def test_replaying_a_segment_gives_the_collected_logprobs_and_values(recurrent: str) -> None:
    dataset, module = make_dataset(recurrent)
    batches, _ = iterate_with_buffer(dataset)
    for batch in batches:
        with torch.no_grad():
            dist, values = module.policy.unroll(module.obs_norm(batch["obs"]), batch[STATE_KEY], batch[STARTS_KEY])
        logprobs = dist.log_prob(batch["actions"]).sum(-1)
        torch.testing.assert_close(logprobs, batch["logprobs"], rtol=0, atol=1e-5)
        torch.testing.assert_close(values, batch["values"], rtol=0, atol=1e-6)
        losses = module.compute_losses(batch)
        assert abs(float(losses["approx_kl"])) < 1e-6
    dataset.env.close()


def test_first_minibatch_of_every_iteration_has_zero_kl_with_the_real_trainer(tmp_path) -> None:
    kls = []

    class RecordKL(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            kls.append((batch_idx, pl_module.last_approx_kl))

    dm = PHCDataModule(num_envs=8, num_threads=1, horizon=8, bptt_horizon=4, update_epochs=2, num_minibatches=2)
    module = PHCModule(actor_hidden=[32], critic_hidden=[32], residual_actions=True, action_scale=0.5,
                       learning_rate=1e-3, recurrent="both", lstm_hidden=16)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[RecordKL()],
                        default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    firsts = [kl for idx, kl in kls if idx == 0]
    later = [kl for idx, kl in kls if idx > 0]
    assert len(firsts) == 3 and all(abs(kl) < 1e-7 for kl in firsts), firsts
    assert all(kl > 1e-7 for kl in later), later


def test_evaluation_carries_each_envs_state_and_resets_it_when_the_env_ends() -> None:
    env = HumanoidTracking(make_backend("mujoco", NUM_ENVS, num_threads=1), short_motions(12), seed=1)
    env.set_eval(True)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], recurrent="actor", lstm_hidden=LSTM_HIDDEN)
    calls: List[Tuple[torch.Tensor, torch.Tensor]] = []  # every act_deterministic call's (state in, next state)
    real_act = module.act_deterministic

    def recording_act(obs: torch.Tensor, state: torch.Tensor):  # noqa: ANN202
        out = real_act(obs, state)
        calls.append((state.clone(), out[1].clone()))
        return out

    module.act_deterministic = recording_act
    results = []
    real = env.step

    def recording_step(targets: torch.Tensor):  # noqa: ANN202
        result = real(targets)
        results.append((result.terminated | result.truncated).clone())
        return result

    env.step = recording_step
    out = play_motions(env, module, torch.arange(2))  # 2 motions on 4 envs: the spare envs replay them
    assert out["lengths"].shape == (2,)
    assert torch.all(calls[0][0] == 0)
    for t in range(1, len(calls)):
        ended = results[t - 1]
        assert torch.all(calls[t][0][ended] == 0)
        assert torch.equal(calls[t][0][~ended], calls[t - 1][1][~ended])
    # the same policy without its memory would act differently: the state is really used
    mean_with, _ = real_act(env.obs, calls[-1][1])
    mean_without, _ = real_act(env.obs, torch.zeros_like(calls[-1][1]))
    assert not torch.equal(mean_with, mean_without)
    # the deterministic means are act_step's, which also carries (and runs) the critic
    assert torch.equal(mean_with, module.act_step(env.obs, calls[-1][1], deterministic=True)[0])
    env.close()


def test_the_recurrent_api_refuses_what_it_cannot_mean() -> None:
    module = PHCModule(obs_dim=8, actor_hidden=[16], critic_hidden=[16], recurrent="critic", lstm_hidden=4)
    obs = torch.randn(3, 8)
    with pytest.raises(ValueError, match="act_step"):
        module.act(obs)
    with pytest.raises(ValueError, match=r"state of shape \[3, 8\]"):
        module.act_step(obs, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="state"):
        module.get_value(obs)
    with pytest.raises(KeyError, match="recurrent_state"):
        module.compute_losses({"obs": obs, "actions": torch.zeros(3, module.action_dim), "logprobs": torch.zeros(3),
                               "values": torch.zeros(3), "advantages": torch.zeros(3), "returns": torch.zeros(3)})
    with pytest.raises(ConfigError, match="bptt_horizon=3 must divide data.horizon=8"):
        PHCDataModule(horizon=8, bptt_horizon=3)
    dataset, _ = make_dataset(num_minibatches=8)  # 48 steps divide, 12 segments do not
    with pytest.raises(ConfigError, match="must divide the 12 segments"):
        next(iter(dataset))
    dataset.env.close()
    # without an LSTM, act_step is act with an empty state
    mlp = PHCModule(obs_dim=8, actor_hidden=[16], critic_hidden=[16])
    assert mlp.recurrent_state_size == 0
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = mlp.act(obs, generator=gen_a)
    b = mlp.act_step(obs, torch.zeros(3, 0), generator=gen_b)
    assert all(torch.equal(x, y) for x, y in zip(a, b[:3])) and b[3].shape == (3, 0)
