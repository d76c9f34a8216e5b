"""AMP with real components: observations of sim and library agree, the discriminator learns and is regularized, the
reward is monotone, the replay buffer resumes exactly, the data side mixes rewards before GAE, and AMP off changes
nothing."""

from __future__ import annotations

import math
from typing import Tuple

import pytest
import torch

from phc_lightning.amp.collection import MINIBATCH_KEYS, AMPCollector
from phc_lightning.amp.config import AMPConfig
from phc_lightning.amp.discriminator import disc_reward, gradient_penalty
from phc_lightning.amp.observations import AMP_OBS_STEP_DIM, amp_step_features, demo_amp_obs
from phc_lightning.amp.replay import ReplayBuffer
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.skeleton import CONTROL_DT, NUM_DOFS
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.rollout.dataset import ITERATION_KEY, RolloutDataset
from phc_lightning.sim.base import SimState
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.env import HumanoidTracking

SMALL = AMPConfig(enabled=True, disc_hidden=(64, 32), replay_size=64, replay_keep_prob=0.5)


@pytest.fixture(scope="module")
def motions() -> MotionLibrary:
    return MotionLibrary(BUNDLED_MOTIONS)


def random_times(motions: MotionLibrary, n: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = motions.sample_motions(n, generator=gen)
    return ids, motions.sample_times(ids, generator=gen)


def test_amp_obs_is_196_per_step_stacked_over_10_steps_newest_first(motions: MotionLibrary) -> None:
    assert AMP_OBS_STEP_DIM == 1 + 6 + 3 + 3 + 19 * 6 + 19 * 3 + 4 * 3 == 196
    ids, times = random_times(motions, 5)
    times = times + 0.5  # at least 10 steps into the motion: no clamping at the start
    obs = demo_amp_obs(motions, ids, times, history=10, dt=CONTROL_DT)
    assert obs.shape == (5, 1960)
    steps = obs.view(5, 10, 196)
    for k in (0, 3, 9):
        expected = amp_step_features(motions.get_state(ids, times - k * CONTROL_DT))
        torch.testing.assert_close(steps[:, k], expected)


def test_demo_history_is_clamped_at_the_motion_start(motions: MotionLibrary) -> None:
    ids = torch.tensor([0, 1])
    obs = demo_amp_obs(motions, ids, torch.tensor([0.0, CONTROL_DT]), history=10, dt=CONTROL_DT).view(2, 10, 196)
    first = amp_step_features(motions.get_state(ids, torch.zeros(2)))
    for k in range(10):  # every step at or before t = 0 is the first frame
        torch.testing.assert_close(obs[0, k], first[0])
    for k in range(1, 10):
        torch.testing.assert_close(obs[1, k], first[1])


def test_sim_and_library_give_the_same_amp_obs_for_the_same_state(motions: MotionLibrary) -> None:
    backend = make_backend("mujoco", 6, num_threads=1)
    try:
        ids, times = random_times(motions, 6, seed=4)
        # whole frames: between frames the library interpolates positions linearly, the sim does FK of the blend
        times = torch.floor(times * motions.fps[ids]) / motions.fps[ids]
        ref = motions.get_state(ids, times)
        backend.set_state_from(torch.arange(6), ref)
        sim_obs, ref_obs = amp_step_features(backend.state()), amp_step_features(ref)
        torch.testing.assert_close(sim_obs, ref_obs, atol=2e-4, rtol=0)
        # and the features are not trivially equal: they differ between frames
        assert (ref_obs[0] - ref_obs[1]).abs().max() > 0.1
    finally:
        backend.close()


def test_amp_features_are_invariant_to_the_heading_and_ground_position(motions: MotionLibrary) -> None:
    from phc_lightning.core.rotations import quat_from_axis_angle, quat_mul, quat_rotate

    ids, times = random_times(motions, 4, seed=1)
    state = motions.get_state(ids, times)
    yaw = quat_from_axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(1.1)).expand(4, 24, 4)
    shift = torch.tensor([3.0, -2.0, 0.0])
    turned = SimState(quat_rotate(yaw, state.body_pos) + shift, quat_mul(yaw, state.body_rot),
                      quat_rotate(yaw, state.body_vel), quat_rotate(yaw, state.body_angvel), state.dof_pos,
                      state.dof_vel)
    torch.testing.assert_close(amp_step_features(turned), amp_step_features(state), atol=1e-5, rtol=0)


def amp_module(**amp) -> PHCModule:
    config = AMPConfig(**{**SMALL.as_dict(), **amp})
    return PHCModule(actor_hidden=[16], critic_hidden=[16], amp=config)


def random_pose_obs(motions: MotionLibrary, n: int, gen: torch.Generator) -> torch.Tensor:
    """AMP obs of random hinge angles and velocities on library root states: poses no motion has."""
    ids, times = random_times(motions, n * 10, seed=7)
    state = motions.get_state(ids, times)
    state.dof_pos = (torch.rand(n * 10, NUM_DOFS, generator=gen) * 2 - 1) * 1.5
    state.dof_vel = torch.randn(n * 10, NUM_DOFS, generator=gen) * 3
    return amp_step_features(state).view(n, 10 * 196)


def test_the_discriminator_separates_demos_from_random_poses_on_a_fixed_batch(motions: MotionLibrary) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    module = amp_module()
    ids, times = random_times(motions, 128, seed=2)
    batch = {
        "amp_obs": random_pose_obs(motions, 64, gen),
        "amp_obs_replay": random_pose_obs(motions, 64, gen),
        "amp_obs_demo": demo_amp_obs(motions, ids, times, 10, CONTROL_DT),
    }
    opt = module.disc_optimizer()
    for step in range(100):
        losses = module.amp_losses(batch)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        if step == 0:
            first = float(losses["disc"])
    assert float(losses["accuracy_agent"]) > 0.95 and float(losses["accuracy_demo"]) > 0.95
    assert float(losses["disc"]) < 0.5 * first
    # and the reward follows: demos earn more than random poses
    assert module.disc_reward(batch["amp_obs_demo"]).mean() > module.disc_reward(batch["amp_obs"]).mean() + 1.0


def test_the_gradient_penalty_is_positive_and_differentiable(motions: MotionLibrary) -> None:
    torch.manual_seed(0)
    module = amp_module()
    ids, times = random_times(motions, 32)
    demo = module.amp_norm(demo_amp_obs(motions, ids, times, 10, CONTROL_DT)).requires_grad_(True)
    penalty = gradient_penalty(module.discriminator(demo), demo)
    assert float(penalty.detach()) > 0 and penalty.requires_grad
    penalty.backward()
    grads = [p.grad for p in module.discriminator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    # and it is part of the logged minibatch loss
    gen = torch.Generator().manual_seed(1)
    losses = module.amp_losses({"amp_obs": random_pose_obs(motions, 8, gen), "amp_obs_replay": torch.zeros(0, 1960),
                                "amp_obs_demo": demo.detach()})
    assert float(losses["disc_grad_penalty"]) > 0


def test_the_reward_is_monotone_in_the_discriminator_output() -> None:
    logits = torch.linspace(-20, 20, 401)
    reward = disc_reward(logits, scale=2.0)
    assert bool((reward[1:] >= reward[:-1]).all()) and bool((reward >= 0).all())
    assert bool((reward[1:] > reward[:-1])[logits[1:] < 9].all())  # strictly below the 1e-4 floor
    assert float(reward.max()) == pytest.approx(-math.log(1e-4) * 2.0, rel=1e-5)
    assert float(disc_reward(torch.tensor([0.0]), 2.0)) == pytest.approx(2.0 * math.log(2.0), rel=1e-6)
    # the formula as written, where float32 resolves it
    mid = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(disc_reward(mid, 2.0), -torch.log(torch.clamp_min(1 - torch.sigmoid(mid), 1e-4)) * 2.0)


def test_the_replay_buffer_keeps_a_share_rings_at_capacity_and_resumes_exactly() -> None:
    buf = ReplayBuffer(capacity=50, dim=3, keep_prob=0.5, device=torch.device("cpu"), seed=0)
    assert buf.sample(4).shape == (0, 3)
    kept = buf.add(torch.arange(60.0).repeat_interleave(3).view(60, 3))
    assert 15 < kept < 45 and buf.size == kept
    for i in range(5):
        buf.add(torch.full((40, 3), 100.0 + i))
    assert buf.size == 50 and buf.data.shape == (50, 3)
    assert float(buf.data.max()) == 104.0  # the newest rows are in
    state = buf.state_dict()
    other = ReplayBuffer(capacity=50, dim=3, keep_prob=0.5, device=torch.device("cpu"), seed=9)
    other.load_state_dict(state)
    torch.testing.assert_close(other.sample(16), buf.sample(16), rtol=0, atol=0)
    rows = torch.randn(30, 3)
    assert other.add(rows) == buf.add(rows)
    torch.testing.assert_close(other.data, buf.data, rtol=0, atol=0)


def test_bad_amp_values_are_config_errors_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="model.amp.history"):
        AMPConfig(enabled=True, history=0)
    with pytest.raises(ConfigError, match="model.amp.replay_keep_prob"):
        AMPConfig(replay_keep_prob=1.5)
    with pytest.raises(ConfigError, match="model.amp.disc_hidden"):
        AMPConfig(disc_hidden=())


def test_amp_off_adds_nothing_and_the_policy_starts_the_same_with_amp_on() -> None:
    torch.manual_seed(3)
    off = PHCModule(actor_hidden=[16], critic_hidden=[16])
    torch.manual_seed(3)
    on = amp_module()
    assert not any(k.startswith(("discriminator.", "amp_norm.")) for k in off.state_dict())
    assert isinstance(off.configure_optimizers(), torch.optim.Adam)
    for key, value in off.state_dict().items():
        torch.testing.assert_close(on.state_dict()[key], value, rtol=0, atol=0)
    policy_opt, disc_opt = on.configure_optimizers()
    disc_params = {id(p) for p in on.discriminator.parameters()}
    assert {id(p) for g in disc_opt.param_groups for p in g["params"]} == disc_params
    assert not disc_params & {id(p) for g in policy_opt.param_groups for p in g["params"]}


def make_amp_dataset(motions: MotionLibrary, num_envs: int = 4, horizon: int = 12) -> Tuple[RolloutDataset, PHCModule]:
    env = HumanoidTracking(make_backend("mujoco", num_envs, num_threads=1), motions, seed=3,
                           state_features=amp_step_features)
    module = amp_module()
    amp = AMPCollector(SMALL, motions, env.control_dt, num_minibatch_rows=horizon * num_envs // 3, seed=5)
    dataset = RolloutDataset(env, get_policy=lambda: module, horizon=horizon, update_epochs=2, num_minibatches=3,
                             gamma=0.9, gae_lambda=0.8, amp=amp)
    return dataset, module


def test_collection_stacks_the_agent_history_and_restarts_it_at_resets(motions: MotionLibrary) -> None:
    dataset, module = make_amp_dataset(motions)
    env, amp = dataset.env, dataset.amp
    dataset.next_obs = env.reset()
    steps = []
    real_step = env.step

    def recording_step(targets: torch.Tensor):
        result = real_step(targets)
        steps.append((result.info["state_features"].clone(), result.info["done_env_ids"].clone(),
                      env.motion_ids.clone(), env.motion_times.clone()))
        return result

    env.step = recording_step
    dataset.collect(module)
    obs = amp.obs.view(dataset.horizon, env.num_envs, 10, 196)
    assert any(done.numel() for _, done, _, _ in steps), "expected an episode to end inside the horizon"
    for t, (features, _, _, _) in enumerate(steps):
        torch.testing.assert_close(obs[t, :, 0], features)  # newest first: the state this step reached
        if t > 0:
            prev_done = steps[t - 1][1]
            keep = torch.ones(env.num_envs, dtype=torch.bool)
            keep[prev_done] = False
            torch.testing.assert_close(obs[t, keep, 1:], obs[t - 1, keep, :-1])  # the history shifts by one
            if prev_done.numel():  # a reset env restarts on its reference, at its new start time
                p_ids, p_times = steps[t - 1][2][prev_done], steps[t - 1][3][prev_done]
                ref = demo_amp_obs(motions, p_ids, p_times, 10, CONTROL_DT).view(-1, 10, 196)
                torch.testing.assert_close(obs[t, prev_done, 1:], ref[:, :-1])
    dataset.env.close()


def test_the_iteration_mixes_the_disc_reward_in_before_gae_and_minibatches_carry_demos(motions: MotionLibrary) -> None:
    dataset, module = make_amp_dataset(motions)
    # the rewards GAE sees: capture them where the rollout computes advantages
    import phc_lightning.rollout.dataset as rollout_module

    seen = {}
    real_gae = rollout_module.compute_gae

    def spy(rewards, *args):
        seen["rewards"] = rewards.clone()
        return real_gae(rewards, *args)

    rollout_module.compute_gae, saved = spy, rollout_module.compute_gae
    real_collect = dataset.collect

    def collect(policy):
        buf = real_collect(policy)
        seen["task"] = buf.rewards.clone()
        return buf

    dataset.collect = collect
    try:
        batches = list(iter(dataset))
    finally:
        rollout_module.compute_gae = saved
    disc = module.disc_reward(dataset.amp.obs.flatten(0, 1)).view_as(seen["task"])
    torch.testing.assert_close(seen["rewards"], 0.5 * seen["task"] + 0.5 * disc)
    stats = batches[0][ITERATION_KEY]["stats"]
    assert stats["rewards/task"] == pytest.approx(float(seen["task"].mean()), rel=1e-5)
    assert stats["rewards/disc"] == pytest.approx(float(disc.mean()), rel=1e-5)
    assert len(batches) == 6
    for batch in batches:
        assert set(MINIBATCH_KEYS) <= set(batch)
        assert batch["amp_obs"].shape == batch["amp_obs_demo"].shape == (16, 1960)
        assert batch["amp_obs_replay"].shape[0] in (0, 16)
    assert dataset.amp.replay.size == 0 and dataset.amp.pending.shape[0] > 0  # half of 48 samples, stored next
    # the module trains on them: one step changes the discriminator and logs its terms
    losses = module.amp_losses(batches[1])
    assert {"loss", "disc", "disc_grad_penalty", "accuracy_agent", "accuracy_demo"} <= set(losses)
    dataset.env.close()


def test_replay_samples_never_come_from_their_own_iteration_and_each_iteration_replays_the_last_ones(
    motions: MotionLibrary,
) -> None:
    dataset, _ = make_amp_dataset(motions)
    amp = dataset.amp
    amp.replay.keep_prob = 1.0  # every sample is kept: any replay of the own rollout would show
    amp.replay.capacity = 10_000

    def contains(rows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """``[len(rows)]``: which rows equal one of ``pool``."""
        return (rows[:, None, :] == pool[None, :, :]).all(-1).any(-1)

    previous = None
    for iteration in range(3):
        batches = list(iter(dataset))
        own = amp.obs.flatten(0, 1).clone()
        replayed = torch.cat([b["amp_obs_replay"] for b in batches])
        assert not contains(replayed, own).any(), f"iteration {iteration} replays its own rollout"
        if previous is None:
            assert replayed.shape[0] == 0  # nothing from before the first iteration
        else:  # the last iteration's rows are in the buffer now (after its update)
            assert replayed.shape[0] > 0 and contains(previous, amp.replay.data[: amp.replay.size]).all()
        previous = own
    dataset.env.close()


def test_the_replay_keeps_the_same_rows_from_the_same_draws_as_storing_at_once() -> None:
    now = ReplayBuffer(capacity=20, dim=2, keep_prob=0.5, device=torch.device("cpu"), seed=4)
    later = ReplayBuffer(capacity=20, dim=2, keep_prob=0.5, device=torch.device("cpu"), seed=4)
    for i in range(4):
        rows = torch.arange(30.0).view(15, 2) + 100 * i
        now.add(rows)
        later.insert(later.select(rows))
        torch.testing.assert_close(later.data, now.data, rtol=0, atol=0)
        assert torch.equal(later.generator.get_state(), now.generator.get_state())


def test_amp_agent_samples_follow_the_rows_of_recurrent_segment_minibatches(motions: MotionLibrary) -> None:
    # With an LSTM, minibatches are whole segments; the discriminator's agent samples must still be the AMP
    # observations of the minibatch's own transitions (its first batch_rows rows).
    env = HumanoidTracking(make_backend("mujoco", 4, num_threads=1), motions, seed=3,
                           state_features=amp_step_features)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], amp=SMALL, recurrent="both", lstm_hidden=8)
    amp = AMPCollector(SMALL, motions, env.control_dt, num_minibatch_rows=12 * 4 // 3, seed=5)
    dataset = RolloutDataset(env, get_policy=lambda: module, horizon=12, update_epochs=2, num_minibatches=3,
                             gamma=0.9, gae_lambda=0.8, amp=amp, bptt_horizon=4)
    collected = {}
    real_collect = dataset.collect

    def collect(policy):
        collected["buf"] = real_collect(policy)
        return collected["buf"]

    dataset.collect = collect
    batches = list(iter(dataset))
    assert len(batches) == 6
    flat_policy_obs = collected["buf"].obs.flatten(0, 1)  # [T * N, 934], the order of amp.obs.flatten(0, 1)
    flat_amp_obs = dataset.amp.obs.flatten(0, 1)
    for batch in batches:
        assert batch["recurrent_state"].shape[-1] == module.recurrent_state_size
        agent = batch["amp_obs"]
        own = batch["obs"][: agent.shape[0]]
        rows = (own[:, None, :] == flat_policy_obs[None, :, :]).all(-1).float().argmax(1)
        torch.testing.assert_close(agent, flat_amp_obs[rows], rtol=0, atol=0)
    env.close()
