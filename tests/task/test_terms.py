"""Pure task kernels: observations, reward terms, terminations, action mapping (no simulator needed)."""

from __future__ import annotations

import math

import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_from_axis_angle, quat_mul, quat_normalize, quat_rotate
from phc_lightning.motion import fk
from phc_lightning.sim.base import SimState
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.observations import OBS_DIM, SELF_OBS_DIM, compute_obs, compute_self_obs, compute_task_obs
from phc_lightning.task.rewards import (
    RewardManager,
    anchor_reference,
    body_pos_reward,
    body_rot_reward,
    power_penalty,
    reward_inputs,
)
from phc_lightning.task.terminations import eval_failure, motion_finished, train_failure

N = 5
B = skeleton.NUM_BODIES


def random_state(n: int = N, seed: int = 0) -> SimState:
    """A kinematically consistent random pose (FK of random local rotations) with random velocities."""
    g = torch.Generator().manual_seed(seed)
    local = quat_normalize(torch.randn(n, B, 4, generator=g) * torch.tensor([0.3, 0.3, 0.3, 1.0]))
    body_rot = fk.local_to_global(local)
    root_pos = torch.randn(n, 3, generator=g) + torch.tensor([0.0, 0.0, 1.0])
    return SimState(
        body_pos=fk.body_positions(root_pos, body_rot),
        body_rot=body_rot,
        body_vel=torch.randn(n, B, 3, generator=g),
        body_angvel=torch.randn(n, B, 3, generator=g),
        dof_pos=torch.randn(n, skeleton.NUM_DOFS, generator=g),
        dof_vel=torch.randn(n, skeleton.NUM_DOFS, generator=g),
    )


def yaw_world(state: SimState, angle: float, shift_xy: tuple) -> SimState:
    """The same state seen after turning the whole world about +z and sliding it on the ground."""
    q = quat_from_axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(angle)).expand(state.body_rot.shape)
    shift = torch.tensor([shift_xy[0], shift_xy[1], 0.0])
    return SimState(
        body_pos=quat_rotate(q, state.body_pos) + shift,
        body_rot=quat_mul(q, state.body_rot),
        body_vel=quat_rotate(q, state.body_vel),
        body_angvel=quat_rotate(q, state.body_angvel),
        dof_pos=state.dof_pos,
        dof_vel=state.dof_vel,
    )


def test_observation_has_934_finite_dims():
    obs = compute_obs(random_state(), random_state(seed=1))
    assert obs.shape == (N, OBS_DIM) == (N, 934)
    assert torch.isfinite(obs).all()


def test_observation_is_invariant_to_turning_and_sliding_the_world():
    sim, ref = random_state(), random_state(seed=1)
    obs = compute_obs(sim, ref)
    moved = compute_obs(yaw_world(sim, 2.1, (3.0, -1.5)), yaw_world(ref, 2.1, (3.0, -1.5)))
    torch.testing.assert_close(moved, obs, atol=2e-5, rtol=0)


def test_self_obs_reads_root_height_and_rest_offsets_in_heading_frame():
    rot = fk.local_to_global(torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(1, B, 4))
    yaw = quat_from_axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(0.7)).expand(1, B, 4)
    rot = quat_mul(yaw, rot)  # rest pose turned to face yaw 0.7
    pos = fk.body_positions(torch.tensor([[1.0, 2.0, 0.9]]), rot)
    zeros = torch.zeros(1, B, 3)
    obs = compute_self_obs(pos, rot, zeros, zeros)
    assert obs.shape == (1, SELF_OBS_DIM)
    assert obs[0, 0].item() == pytest.approx(0.9)
    rest = fk.body_positions(torch.zeros(1, 3), torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(1, B, 4))
    torch.testing.assert_close(obs[0, 1:70], rest[0, 1:].reshape(-1), atol=1e-6, rtol=0)
    identity_tan_norm = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0]).repeat(B)
    torch.testing.assert_close(obs[0, 70:214], identity_tan_norm, atol=1e-6, rtol=0)


def test_task_obs_is_zero_difference_when_sim_equals_reference():
    sim = random_state()
    task = compute_task_obs(sim, sim)
    diff_pos, diff_rot, diff_vel, diff_angvel = task[:, :72], task[:, 72:216], task[:, 216:288], task[:, 288:360]
    assert diff_pos.abs().max() < 1e-6 and diff_vel.abs().max() < 1e-6 and diff_angvel.abs().max() < 1e-6
    identity_tan_norm = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0]).repeat(B).expand(N, -1)
    torch.testing.assert_close(diff_rot, identity_tan_norm, atol=1e-5, rtol=0)
    # Reference positions relative to the sim root equal the self obs' local positions when sim == ref.
    self_obs = compute_self_obs(sim.body_pos, sim.body_rot, sim.body_vel, sim.body_angvel)
    torch.testing.assert_close(task[:, 360 + 3 : 432], self_obs[:, 1:70], atol=1e-5, rtol=0)
    torch.testing.assert_close(task[:, 432:], self_obs[:, 70:214], atol=1e-5, rtol=0)


def test_reward_is_one_and_power_free_when_sim_equals_reference():
    sim = random_state()
    manager = RewardManager(TaskConfig().reward_terms())
    torques = torch.randn(N, skeleton.NUM_DOFS)
    total, terms = manager.compute(reward_inputs(sim, sim, torques, torch.full((N,), 3)))
    torch.testing.assert_close(total, torch.ones(N), atol=1e-5, rtol=0)
    assert set(terms) == {"body_pos", "body_rot", "body_vel", "body_angvel", "power"}
    assert (terms["power"] == 0).all()
    torch.testing.assert_close(terms["body_pos"], torch.full((N,), 0.5), atol=1e-6, rtol=0)


def test_position_and_rotation_rewards_follow_phc_formulas():
    sim = random_state()
    shifted = sim.body_pos + torch.tensor([0.1, 0.0, 0.0])  # Δp² = 0.01 on x only -> mean over xyz = 0.01/3
    torch.testing.assert_close(body_pos_reward(sim.body_pos, shifted, k=100.0), torch.full((N,), math.exp(-1 / 3)))
    turn = quat_from_axis_angle(torch.tensor([0.0, 1.0, 0.0]), torch.tensor(0.2)).expand(sim.body_rot.shape)
    turned = quat_mul(turn, sim.body_rot)
    expected = torch.full((N,), math.exp(-10.0 * 0.04))
    torch.testing.assert_close(body_rot_reward(sim.body_rot, turned, k=10.0), expected, atol=1e-5, rtol=0)


def test_anchor_relative_pose_terms_ignore_root_drift_on_the_ground_but_not_pose_or_height_errors():
    ref = random_state(seed=1)
    drifted = yaw_world(ref, 0.7, (0.4, -0.3))  # the same pose, turned and slid on the ground: drift only
    inputs = reward_inputs(drifted, ref, torch.zeros(N, skeleton.NUM_DOFS), torch.full((N,), 10), anchored=True)
    world = RewardManager(TaskConfig().reward_terms()).compute(inputs)[1]
    anchored = RewardManager(TaskConfig(anchor_relative=True).reward_terms()).compute(inputs)[1]
    torch.testing.assert_close(anchored["body_pos"], torch.full((N,), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(anchored["body_rot"], torch.full((N,), 0.3), atol=1e-4, rtol=0)
    assert (world["body_pos"] < 0.1).all() and (world["body_rot"] < 0.3).all()
    # the re-anchored reference is the drifted pose itself
    pos, _ = anchor_reference(drifted.body_pos, drifted.body_rot, ref.body_pos, ref.body_rot)
    torch.testing.assert_close(pos, drifted.body_pos, atol=1e-5, rtol=0)
    # a pose error with no drift scores the same in both frames (the root on the reference) ...
    arm = ref.body_pos.clone()
    arm[:, skeleton.BODY_INDEX["L_Hand"]] += torch.tensor([0.0, 0.0, 0.2])
    anchored_arm = anchor_reference(arm, ref.body_rot, ref.body_pos, ref.body_rot)[0]
    arm_reward = body_pos_reward(arm, anchored_arm, k=100.0)
    torch.testing.assert_close(arm_reward, body_pos_reward(arm, ref.body_pos, k=100.0))
    torch.testing.assert_close(arm_reward, torch.full((N,), math.exp(-100 * 0.04 / (B * 3))))
    # ... and the root height is not forgiven: a body lifted 0.1 m is 0.1 m off in every body
    lifted = ref.body_pos + torch.tensor([0.0, 0.0, 0.1])
    torch.testing.assert_close(body_pos_reward(lifted, anchor_reference(lifted, ref.body_rot, ref.body_pos,
                                                                        ref.body_rot)[0], k=100.0),
                               torch.full((N,), math.exp(-100.0 * 0.01 / 3)))


def test_power_penalty_is_zero_for_first_three_steps_then_negative_power():
    torques = torch.tensor([[2.0, -3.0], [1.0, 1.0]])
    dof_vel = torch.tensor([[1.0, 1.0], [-4.0, 0.5]])
    out = power_penalty(torques, dof_vel, torch.tensor([3, 4]))
    torch.testing.assert_close(out, torch.tensor([0.0, -4.5]))


def test_reward_weights_are_a_config_edit_and_terms_sum_to_total():
    sim, ref = random_state(), random_state(seed=1)
    inputs = reward_inputs(sim, ref, torch.randn(N, skeleton.NUM_DOFS), torch.full((N,), 10))
    total, terms = RewardManager(TaskConfig().reward_terms()).compute(inputs)
    torch.testing.assert_close(total, sum(terms.values()))
    assert (terms["power"] < 0).all()
    doubled, doubled_terms = RewardManager(TaskConfig(w_pos=1.0, power_coef=0.0).reward_terms()).compute(inputs)
    assert "power" not in doubled_terms
    torch.testing.assert_close(doubled_terms["body_pos"], 2 * terms["body_pos"])


def test_task_config_rejects_negative_or_non_finite_values():
    with pytest.raises(ValueError, match="data.task.k_pos"):
        TaskConfig(k_pos=-1.0)
    with pytest.raises(ValueError, match="data.task.termination_distance"):
        TaskConfig(termination_distance=0.0)
    with pytest.raises(ValueError, match="data.task.w_rot"):
        TaskConfig(w_rot=float("nan"))
    with pytest.raises(ValueError, match=r"data.task.start_init_prob: must be in \[0, 1\]"):
        TaskConfig(start_init_prob=1.5)


def test_train_failure_triggers_on_any_single_body_beyond_threshold():
    ref = random_state().body_pos
    sim = ref.clone()
    sim[0, 13, 2] += 0.3  # head 30 cm off
    sim[1, 13, 2] += 0.2
    assert train_failure(sim, ref, 0.25).tolist() == [True, False, False, False, False]


def test_eval_failure_uses_mean_over_twenty_bodies():
    ref = random_state().body_pos
    sim = ref.clone()
    sim[0, 13] += 0.6  # one body far: mean over 20 is 3 cm -> not a failure, but a training failure
    sim[1, list(skeleton.EVAL_BODIES)] += torch.tensor([0.0, 0.6, 0.0])  # all 20 far -> failure
    hands = [skeleton.BODY_INDEX[n] for n in skeleton.FROZEN_BODIES]
    sim[2, hands] += 5.0  # hands and toes are not counted
    assert len(skeleton.EVAL_BODIES) == 20
    assert eval_failure(sim, ref).tolist() == [False, True, False, False, False]
    assert train_failure(sim, ref)[0]


def test_motion_finished_at_length_with_rounding_slack():
    lengths = torch.tensor([1.0, 1.0, 7.3666666])
    times = torch.tensor([0.99, 1.0, 221 * (1.0 / 30.0) - 1e-6])
    assert motion_finished(times, lengths).tolist() == [False, True, True]
