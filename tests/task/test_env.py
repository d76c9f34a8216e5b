"""HumanoidTracking on the real MuJoCo backend and motion library, with small motions built in the test."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import List

import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.rotations import quat_from_axis_angle, quat_mul
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.sim.mujoco_cpu import MujocoCPUBackend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking
from phc_lightning.task.observations import compute_obs
from phc_lightning.task.rewards import reward_inputs
from phc_lightning.task.terminations import train_failure

FPS = 30.0
NUM_ENVS = 4
SLOW, SHORT = 0, 1  # motion ids


def standing_motion(key: str, seconds: float, speed: float, yaw: float, wave: float) -> RawMotion:
    """T-pose facing ``yaw`` drifting forward at ``speed`` m/s, the left arm waving by ``wave`` rad."""
    t = torch.arange(int(round(seconds * FPS)) + 1, dtype=torch.float32) / FPS
    z = torch.tensor([0.0, 0.0, 1.0])
    heading = quat_from_axis_angle(z, torch.full_like(t, yaw))  # [T, 4]
    rot = heading[:, None, :].repeat(1, skeleton.NUM_BODIES, 1)
    arm = quat_from_axis_angle(torch.tensor([1.0, 0.0, 0.0]), wave * torch.sin(2.0 * t))
    for name in ("L_Shoulder", "L_Elbow", "L_Wrist", "L_Hand"):  # a whole subtree turns with the shoulder
        rot[:, skeleton.BODY_INDEX[name]] = quat_mul(heading, arm)
    forward = torch.stack([torch.full_like(t, math.cos(yaw)), torch.full_like(t, math.sin(yaw)), 0 * t], -1)
    root = speed * t[:, None] * forward + torch.tensor([0.0, 0.0, 0.95])
    return RawMotion(key, FPS, root.numpy().astype(np.float32), rot.numpy().astype(np.float32))


@pytest.fixture(scope="module")
def motions() -> MotionLibrary:
    clips: List[RawMotion] = [
        standing_motion("slow", seconds=2.0, speed=0.1, yaw=0.0, wave=0.3),
        standing_motion("short", seconds=0.5, speed=0.05, yaw=1.2, wave=0.2),
    ]
    return MotionLibrary(clips)


def make_env(motions: MotionLibrary, seed: int = 0, **config) -> HumanoidTracking:
    return HumanoidTracking(MujocoCPUBackend(NUM_ENVS, num_threads=1), motions, TaskConfig(**config), seed=seed)


def zero_actions() -> torch.Tensor:
    """Zero actions hold the T-pose, which the test motions also are (but for the waving arm)."""
    return torch.zeros(NUM_ENVS, skeleton.NUM_DOFS)


def test_rsi_reset_places_bodies_on_reference_at_env_time(motions):
    env = make_env(motions)
    obs = env.reset()
    assert obs.shape == (NUM_ENVS, env.obs_dim) == (NUM_ENVS, 934) and torch.isfinite(obs).all()
    assert (env.motion_times > 0).all()  # random start times, not frame 0
    ref = motions.get_state(env.motion_ids, env.motion_times)
    sim = env.backend.state()
    assert (sim.body_pos - ref.body_pos).norm(dim=-1).max() < 1e-3
    # The observation targets the next reference frame, one control step ahead.
    ref_next = motions.get_state(env.motion_ids, env.motion_times + env.control_dt)
    torch.testing.assert_close(obs, compute_obs(sim, ref_next))
    env.close()


def test_reward_is_one_without_termination_when_sim_matches_reference(motions):
    env = make_env(motions)
    env.reset()
    sim = env.backend.state()
    ref = motions.get_state(env.motion_ids, env.motion_times)  # same time: the sim sits on the reference
    inputs = reward_inputs(sim, ref, env.backend.actuator_forces(), torch.ones(NUM_ENVS, dtype=torch.long))
    reward, terms = env.reward_manager.compute(inputs)
    assert terms["power"].abs().max() == 0  # first steps are exempt
    torch.testing.assert_close(reward, torch.ones(NUM_ENVS), atol=2e-3, rtol=0)
    assert not train_failure(sim.body_pos, ref.body_pos).any()
    env.close()


def test_step_reports_terms_and_advances_reference_time(motions):
    env = make_env(motions)
    env.assign_motions(torch.full((NUM_ENVS,), SLOW))
    start = env.motion_times.clone()
    result = env.step(zero_actions())
    torch.testing.assert_close(env.motion_times, start + env.control_dt)
    assert (env.progress == 1).all()
    assert result.obs.shape == result.final_obs.shape == (NUM_ENVS, 934)
    terms = [k for k in result.info if k.startswith("rewards/")]
    assert sorted(terms) == ["rewards/body_angvel", "rewards/body_pos", "rewards/body_rot", "rewards/body_vel",
                             "rewards/power"]  # fmt: skip
    torch.testing.assert_close(result.reward, sum(result.info[k] for k in terms))
    assert (result.reward > 0.5).all() and not result.terminated.any() and not result.truncated.any()
    assert result.info["body_pos"].shape == result.info["ref_body_pos"].shape == (NUM_ENVS, 24, 3)
    assert result.info["done_env_ids"].numel() == 0
    torch.testing.assert_close(result.obs, result.final_obs)
    env.close()


def test_motion_end_truncates_without_termination_and_resets(motions):
    env = make_env(motions)
    env.set_eval(True)  # eval starts at t = 0 (so the 0.5 s motion ends after exactly 15 steps), fails at 0.5 m
    env.assign_motions(torch.full((NUM_ENVS,), SHORT))
    rewards = []
    for step in range(1, 16):
        result = env.step(zero_actions())
        rewards.append(result.reward)
        assert not result.terminated.any()
        assert bool(result.truncated.all()) == (step == 15)
    assert result.info["done_env_ids"].tolist() == list(range(NUM_ENVS))
    assert (result.info["episode_length"] == 15).all()
    torch.testing.assert_close(result.info["episode_return"], torch.stack(rewards).sum(0))
    assert not torch.equal(result.obs, result.final_obs)  # obs is the fresh episode's
    assert (env.progress == 0).all() and (env.motion_times == 0).all()
    env.close()


def test_random_start_truncates_when_time_reaches_length(motions):
    env = make_env(motions, seed=3, termination_distance=1.0)  # only the time limit may end these episodes
    env.assign_motions(torch.full((NUM_ENVS,), SHORT))
    start, length = env.motion_times.clone(), float(motions.lengths[SHORT])
    expected_steps = torch.ceil((length - start) / env.control_dt - 1e-3).long()
    ended_at = torch.zeros(NUM_ENVS, dtype=torch.long)
    for step in range(1, 17):
        result = env.step(zero_actions())
        assert not result.terminated.any()
        ended_at[result.truncated & (ended_at == 0)] = step
    assert torch.equal(ended_at, expected_steps)
    env.close()


def test_unstable_env_is_reset_without_touching_the_others(motions, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its instability warning to ./MUJOCO_LOG.TXT
    envs = [make_env(motions), make_env(motions)]
    for env in envs:
        env.assign_motions(torch.full((NUM_ENVS,), SLOW))
        env.step(zero_actions())
    inject_nan_qvel(envs[1].backend, env_id=2)
    clean, broken = (env.step(zero_actions()) for env in envs)
    assert broken.info["unstable"].tolist() == [False, False, True, False]
    assert broken.truncated.tolist() == [False, False, True, False] and not broken.terminated.any()
    assert torch.isfinite(broken.reward).all() and torch.isfinite(broken.obs).all()
    assert torch.isfinite(broken.final_obs).all()
    assert broken.info["done_env_ids"].tolist() == [2]
    others = [0, 1, 3]
    torch.testing.assert_close(broken.info["body_pos"][others], clean.info["body_pos"][others], atol=0, rtol=0)
    torch.testing.assert_close(broken.obs[others], clean.obs[others], atol=0, rtol=0)
    assert envs[1].progress.tolist() == [2, 2, 0, 2]
    for env in envs:
        env.close()


def inject_nan_qvel(backend: MujocoCPUBackend, env_id: int) -> None:
    """Poison one env's MuJoCo velocities, as an exploding simulation would (through the public state API:
    the backend does not expose its ``MjData``)."""
    state = backend.state()
    ids = torch.tensor([env_id])
    dof_vel = torch.full((1, skeleton.NUM_DOFS), float("nan"))
    backend.set_state(
        ids, state.body_pos[ids, 0], state.body_rot[ids, 0], state.body_vel[ids, 0], state.body_angvel[ids, 0],
        state.dof_pos[ids], dof_vel,
    )  # fmt: skip


def test_eval_plays_from_start_and_fails_by_twenty_body_mean(motions):
    env = make_env(motions)
    env.set_eval(True)
    env.assign_motions(torch.full((NUM_ENVS,), SLOW))
    assert (env.motion_times == 0).all()
    ref = motions.get_state(env.motion_ids, env.motion_times)
    # Slide env 1 by 0.6 m (mean over 20 bodies > 0.5: failure) and env 2 by 0.3 m (a training failure,
    # but within the evaluation rule).
    shift = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])
    env.backend.set_state_from(torch.arange(NUM_ENVS), replace(ref, body_pos=ref.body_pos + shift[:, None]))
    first = env.step(zero_actions())
    assert not first.terminated.any()  # failure is not tested on the first step
    second = env.step(zero_actions())
    assert second.terminated.tolist() == [False, True, False, False]
    assert not second.truncated.any()
    assert env.motion_times[1] == 0 and env.progress[1] == 0  # the failed env restarted at t = 0
    env.set_eval(False)
    env.close()


def test_training_failure_needs_any_body_beyond_quarter_metre_after_first_step(motions):
    env = make_env(motions)
    env.assign_motions(torch.full((NUM_ENVS,), SLOW))
    ref = motions.get_state(env.motion_ids, env.motion_times)
    shift = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    env.backend.set_state_from(torch.arange(NUM_ENVS), replace(ref, body_pos=ref.body_pos + shift[:, None]))
    assert not env.step(zero_actions()).terminated.any()
    assert env.step(zero_actions()).terminated.tolist() == [False, True, False, False]
    env.close()


@pytest.mark.parametrize("body_mean", [False, True])
def test_mean_body_termination_lets_one_far_arm_through_but_not_a_far_pose(motions, body_mean: bool):
    env = make_env(motions, termination_body_mean=body_mean, termination_distance=0.25)
    env.assign_motions(torch.full((NUM_ENVS,), SLOW))
    ref = motions.get_state(env.motion_ids, env.motion_times)
    dof = ref.dof_pos.clone()
    dof[0, skeleton.body_dofs("L_Shoulder")[2]] += 1.5  # env 0: the left arm swung ~0.5 m off, the rest on it
    shift = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # env 1: all off
    env.backend.set_state_from(torch.arange(NUM_ENVS), replace(ref, body_pos=ref.body_pos + shift[:, None],
                                                               dof_pos=dof))
    env.step(zero_actions())
    # any-body (PHC): both fail; the mean of the 20 evaluation bodies: only the pose that is off as a whole
    expected = [False, True, False, False] if body_mean else [True, True, False, False]
    assert env.step(zero_actions()).terminated.tolist() == expected
    env.close()


def test_the_root_term_is_off_by_default_and_rewards_closeness_of_the_root(motions):
    assert "root_pos" not in TaskConfig().reward_terms()
    env = make_env(motions, w_root_pos=0.2, k_root_pos=10.0)
    env.assign_motions(torch.full((NUM_ENVS,), SLOW))
    ref = motions.get_state(env.motion_ids, env.motion_times)
    shift = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    env.backend.set_state_from(torch.arange(NUM_ENVS), replace(ref, body_pos=ref.body_pos + shift[:, None]))
    info = env.step(zero_actions()).info
    # the root term is 0.2 * exp(-10 * d^2) of the root's distance d after the step: close to 0.2 when on the
    # reference, 0.2 * exp(-0.4) when 0.2 m off (the step moves it by millimetres)
    assert info["rewards/root_pos"][0] == pytest.approx(0.2, abs=0.01)
    assert info["rewards/root_pos"][1] == pytest.approx(0.2 * math.exp(-0.4), abs=0.01)
    env.close()


def test_future_steps_append_the_task_features_of_each_later_reference_frame(motions):
    from phc_lightning.task.observations import OBS_DIM, TASK_OBS_DIM, compute_task_obs

    assert make_env(motions).obs_dim == OBS_DIM
    env = make_env(motions, future_steps=(1, 5))
    assert env.obs_dim == OBS_DIM + TASK_OBS_DIM
    obs = env.reset()
    sim = env.backend.state()
    ahead = motions.get_state(env.motion_ids, env.motion_times + 5 * env.control_dt)
    torch.testing.assert_close(obs[:, OBS_DIM:], compute_task_obs(sim, ahead))
    # the first 934 features are exactly the one-frame observation
    torch.testing.assert_close(obs[:, :OBS_DIM], compute_obs(sim, motions.get_state(env.motion_ids,
                                                                                    env.motion_times + env.control_dt)))
    result = env.step(zero_actions())
    assert result.obs.shape == result.final_obs.shape == (NUM_ENVS, OBS_DIM + TASK_OBS_DIM)
    env.close()


@pytest.mark.parametrize("steps", [(), (2,), (1, 1), (1, 4, 3), (1, 2.5)])
def test_future_steps_must_start_at_the_next_frame_and_increase(steps):
    with pytest.raises(ConfigError, match="data.task.future_steps"):
        TaskConfig(future_steps=steps)


def test_same_seed_reproduces_motions_and_start_times_and_rng_state_restores(motions):
    a, b = make_env(motions, seed=7), make_env(motions, seed=7)
    a.reset()
    b.reset()
    assert torch.equal(a.motion_ids, b.motion_ids) and torch.equal(a.motion_times, b.motion_times)
    state = a.rng_state()
    a.reset()
    first = a.motion_times.clone()
    a.set_rng_state(state)
    a.reset()
    assert torch.equal(a.motion_times, first)
    a.close()
    b.close()


def test_start_init_prob_starts_that_share_of_training_resets_at_frame_zero(motions):
    everyone = make_env(motions, start_init_prob=1.0)
    everyone.reset()
    assert (everyone.motion_times == 0).all()
    sim = everyone.backend.state()
    ref = motions.get_state(everyone.motion_ids, torch.zeros(NUM_ENVS))
    assert (sim.body_pos - ref.body_pos).norm(dim=-1).max() < 1e-3
    everyone.close()
    # 0 is PHC's uniform reference state init: starts anywhere in the clip, (almost surely) never at frame 0.
    phc, half = make_env(motions, seed=3), make_env(motions, seed=3, start_init_prob=0.5)
    starts_phc, starts_half = [], []
    for _ in range(50):
        phc.reset()
        starts_phc.append(phc.motion_times.clone())
        half.reset()
        starts_half.append(half.motion_times.clone())
    phc_zero = (torch.cat(starts_phc) == 0).float().mean()
    half_zero = (torch.cat(starts_half) == 0).float().mean()
    assert phc_zero == 0 and 0.35 < half_zero < 0.65
    phc.close()
    half.close()


def test_bad_pd_targets_and_motion_ids_raise_one_line_errors(motions):
    env = make_env(motions)
    env.reset()
    with pytest.raises(ValueError, match=r"PD targets must have shape \(4, 69\)"):
        env.step(torch.zeros(NUM_ENVS, 57))
    with pytest.raises(ValueError, match="motion ids must be in"):
        env.assign_motions(torch.full((NUM_ENVS,), 5))
    env.close()


class MaskedResetsCPU(MujocoCPUBackend):
    """The CPU backend with its host indices withheld: the env then resets finished envs with fixed-shape masks over
    all envs, the path it takes on MuJoCo Warp (and on any accelerator)."""

    def host_indices(self, mask: torch.Tensor) -> None:
        return None


@pytest.mark.parametrize("eval_mode", [True, False], ids=["eval", "train_at_frame_0"])
def test_masked_resets_give_the_states_of_indexed_resets(motions, tmp_path, monkeypatch, eval_mode: bool) -> None:
    """Every step of a play with failures, motion ends and a rescued env at different steps, bit for bit. Start
    times are 0 in both modes here (evaluation; training with start_init_prob 1), so the two paths' different
    numbers of draws (the masked path draws for every env) cannot show; everything else must be equal."""
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its instability warning to ./MUJOCO_LOG.TXT
    config = TaskConfig(start_init_prob=1.0)
    envs = [HumanoidTracking(backend(NUM_ENVS, num_threads=1), motions, config, seed=5)
            for backend in (MujocoCPUBackend, MaskedResetsCPU)]
    gen = torch.Generator().manual_seed(11)
    for env in envs:
        env.set_eval(eval_mode)
        env.assign_motions(torch.tensor([SLOW, SHORT, SLOW, SHORT]))
    ends, fails, motion_ends = torch.zeros(NUM_ENVS), 0, 0
    for step in range(40):
        # envs 0 and 2 flail and fail; 1 and 3 hold the T-pose and reach their motion's end (3 is rescued once)
        targets = torch.tensor([0.8, 0.0, 0.8, 0.0])[:, None] * torch.randn(NUM_ENVS, skeleton.NUM_DOFS,
                                                                             generator=gen)
        if step == 7:
            for env in envs:
                inject_nan_qvel(env.backend, env_id=3)
        indexed, masked = (env.step(targets) for env in envs)
        assert "done_env_ids" in indexed.info and "done_env_ids" not in masked.info
        for name in ("obs", "reward", "terminated", "truncated", "final_obs"):
            torch.testing.assert_close(getattr(masked, name), getattr(indexed, name), rtol=0, atol=0, msg=name)
        done = indexed.info["done"]
        assert torch.equal(masked.info["done"], done) and torch.equal(done.nonzero().squeeze(-1),
                                                                      indexed.info["done_env_ids"])
        for key in ("episode_return", "episode_length", "unstable", "body_pos", "ref_body_pos"):
            torch.testing.assert_close(masked.info[key], indexed.info[key], rtol=0, atol=0, msg=key)
        a, b = envs[0].state_dict(), envs[1].state_dict()
        for name in HumanoidTracking._STATE_FIELDS:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
        for key, value in a["physics"].items():
            torch.testing.assert_close(b["physics"][key], value, rtol=0, atol=0, msg=key)
        ends += done
        fails += int(indexed.terminated.sum())
        motion_ends += int((indexed.truncated & ~indexed.info["unstable"]).sum())
    assert (ends >= 2).all() and fails > 0 and motion_ends > 0  # every env ended twice or more, both ways
    for env in envs:
        env.close()
