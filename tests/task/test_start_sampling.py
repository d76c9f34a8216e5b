"""Failure-weighted start times (AdaptiveStartSampler) alone and inside HumanoidTracking on the real MuJoCo backend."""

from __future__ import annotations

import pytest
import torch

from phc_lightning.core.errors import ConfigError
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.sim.mujoco_cpu import MujocoCPUBackend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking
from phc_lightning.task.start_sampling import AdaptiveStartSampler
from tests.task.test_env import NUM_ENVS, standing_motion

LENGTHS = torch.tensor([4.5, 1.2])  # 5 and 2 bins of about a second


def test_without_failures_every_bin_of_a_motion_is_equally_likely():
    sampler = AdaptiveStartSampler(LENGTHS, bin_seconds=1.0)
    assert sampler.num_bins.tolist() == [5, 2]
    probs = sampler.probabilities()
    assert torch.allclose(probs[0], torch.full((5,), 0.2))
    assert torch.allclose(probs[1], torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0]))  # no bins past the motion's end


def test_failures_make_their_bin_likelier_and_the_kernel_the_bins_before_it():
    sampler = AdaptiveStartSampler(LENGTHS, bin_seconds=1.0, alpha=0.5, kernel_size=2, kernel_decay=0.5)
    # two envs of motion 0 fail at 3.2 s (bin 3 of 0.9 s bins), one env of motion 1 runs on without failing
    ids, times = torch.tensor([0, 0, 1]), torch.tensor([3.2, 3.3, 0.1])
    sampler.record(ids, times, torch.tensor([True, True, False]))
    assert sampler.failures[0].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert sampler.failures[1].sum() == 0
    probs = sampler.probabilities()
    assert probs[0].argmax() == 3
    assert probs[0, 2] > probs[0, 1] == pytest.approx(probs[0, 0])  # the approach to the failing bin
    assert probs[0, 4] == pytest.approx(probs[0, 0])
    assert torch.allclose(probs[1, :2], torch.tensor([0.5, 0.5]))
    # a step without failures decays the average by (1 - alpha)
    sampler.record(ids, times, torch.zeros(3, dtype=torch.bool))
    assert sampler.failures[0, 3] == pytest.approx(0.5)


def test_samples_follow_the_bin_probabilities_and_stay_inside_the_motion():
    sampler = AdaptiveStartSampler(LENGTHS, bin_seconds=1.0, uniform_ratio=0.1, alpha=1.0)
    sampler.record(torch.tensor([0]), torch.tensor([2.0]), torch.tensor([True]))  # bin 2 of motion 0
    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros(20000, dtype=torch.long)
    times = sampler.sample(ids, generator=generator)
    assert times.min() >= 0 and times.max() < LENGTHS[0]
    share = torch.bincount(sampler.bin_of(ids, times), minlength=5).float() / ids.numel()
    assert torch.allclose(share, sampler.probabilities()[0], atol=0.01)
    assert share[2] > 0.9
    short = sampler.sample(torch.ones(500, dtype=torch.long), generator=generator)
    assert short.max() < LENGTHS[1]


def test_config_rejects_meaningless_adaptive_settings():
    for field, value in (("adaptive_bin_seconds", 0.0), ("adaptive_uniform_ratio", 0.0), ("adaptive_alpha", 1.5),
                         ("adaptive_kernel_size", 0), ("adaptive_kernel_size", 1.5)):
        with pytest.raises(ConfigError, match=f"data.task.{field}"):
            TaskConfig(**{field: value})


@pytest.fixture(scope="module")
def motions() -> MotionLibrary:
    return MotionLibrary([standing_motion("slow", seconds=3.0, speed=0.1, yaw=0.0, wave=0.3)])


def test_env_counts_training_failures_by_bin_and_keeps_them_in_its_state(motions):
    config = TaskConfig(adaptive_start=True, adaptive_alpha=0.5, termination_distance=0.01)
    env = HumanoidTracking(MujocoCPUBackend(NUM_ENVS, num_threads=1), motions, config, seed=0)
    env.reset()
    result = env.step(env.ref_next_dof_pos.clone())
    for _ in range(3):  # a 1 cm termination distance: everyone fails within a few steps
        if result.terminated.any():
            break
        result = env.step(env.ref_next_dof_pos.clone())
    assert result.terminated.any()
    # steps before the failures only decayed zeros: the average holds alpha x the failures of the last step
    assert env.start_sampler.failures.sum() == pytest.approx(0.5 * int(result.terminated.sum()))
    state = env.state_dict()
    assert torch.equal(state["start_bin_failures"], env.start_sampler.failures)
    other = HumanoidTracking(MujocoCPUBackend(NUM_ENVS, num_threads=1), motions, config, seed=1)
    other.load_state_dict(state)
    assert torch.equal(other.start_sampler.failures, env.start_sampler.failures)
    # evaluation neither counts failures nor draws from the bins: every motion starts at 0
    before = env.start_sampler.failures.clone()
    env.set_eval(True)
    env.reset()
    assert (env.motion_times == 0).all()
    env.step(env.ref_next_dof_pos.clone())
    assert torch.equal(env.start_sampler.failures, before)
    env.close()
    other.close()


def test_start_init_prob_applies_with_the_adaptive_sampler_too(motions):
    # every training reset at frame 0, the first one and those after failures alike
    config = TaskConfig(adaptive_start=True, start_init_prob=1.0, termination_distance=0.01)
    env = HumanoidTracking(MujocoCPUBackend(NUM_ENVS, num_threads=1), motions, config, seed=0)
    env.reset()
    assert (env.motion_start_times == 0).all()
    resets = 0
    for _ in range(6):  # a 1 cm termination distance: envs fail and are reset within a few steps
        result = env.step(env.ref_next_dof_pos.clone())
        resets += int(result.terminated.sum())
        assert (env.motion_start_times == 0).all()
    assert resets > 0
    env.close()
    # a share of 0.5 starts about half the resets at 0 and the others where the sampler draws them
    half = HumanoidTracking(MujocoCPUBackend(NUM_ENVS, num_threads=1), motions,
                            TaskConfig(adaptive_start=True, start_init_prob=0.5), seed=3)
    starts = []
    for _ in range(50):
        half.reset()
        starts.append(half.motion_start_times.clone())
    assert 0.35 < (torch.cat(starts) == 0).float().mean() < 0.65
    half.close()
