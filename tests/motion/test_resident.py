"""A motion set larger than the resident budget streams: per-frame buffers of the resident motions only, metadata
and sampling over all motions, and the env tracking exactly the motions it was given (real MuJoCo)."""

from __future__ import annotations

from typing import List

import pytest
import torch

from phc_lightning.amp.observations import AMP_OBS_STEP_DIM, demo_amp_obs, sample_demo_amp_obs
from phc_lightning.core import skeleton
from phc_lightning.motion.frames import FRAME_FIELDS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.motion.variations import lognormal_lengths, varied_motions
from phc_lightning.sim.mujoco_cpu import MujocoCPUBackend
from phc_lightning.task.env import HumanoidTracking

NUM_MOTIONS, BUDGET = 40, 8
FRAME_BYTES = 4 * (skeleton.NUM_BODIES * (3 + 4 + 3 + 3) + 2 * skeleton.NUM_DOFS)  # 1,800


@pytest.fixture(scope="module")
def motions() -> List[RawMotion]:
    """40 short generated motions (0.5-2 s, 16-61 frames)."""
    lengths = lognormal_lengths(NUM_MOTIONS, hours=0.0, median_seconds=1.0, sigma=0.4, bounds=(0.5, 2.0), seed=0)
    return list(varied_motions(lengths, seed=0))


@pytest.fixture(scope="module")
def full(motions: List[RawMotion]) -> MotionLibrary:
    return MotionLibrary(motions)


def test_a_streaming_library_holds_the_buffers_of_its_resident_motions_only(motions, full) -> None:
    lib = MotionLibrary(motions, resident_motions=BUDGET)
    assert not lib.all_resident and full.all_resident
    assert lib.memory_bytes()["frames"] == lib.resident_frames == 0  # nothing is resident before make_resident
    assert lib.memory_bytes()["raw"] == sum(m.num_frames for m in motions) * (3 + 24 * 4) * 4

    lib.make_resident(torch.tensor([17, 3, 17, 39, 0, 3]))
    resident = [0, 3, 17, 39]
    assert lib.resident_ids.tolist() == resident
    frames = int(full.num_frames[resident].sum())
    assert lib.resident_frames == frames
    assert lib.memory_bytes()["frames"] == frames * FRAME_BYTES == sum(
        getattr(lib, name).nbytes for name in FRAME_FIELDS)
    assert full.memory_bytes()["frames"] == full.total_frames * FRAME_BYTES > 5 * lib.memory_bytes()["frames"]
    # metadata stays over all motions
    assert torch.equal(lib.num_frames, full.num_frames) and torch.equal(lib.lengths, full.lengths)

    ids = torch.tensor(resident * 8)
    times = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) * full.lengths[ids]
    got, want = lib.get_state(ids, times), full.get_state(ids, times)
    for name in ("body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), msg=name)
    with pytest.raises(IndexError):  # a motion that is not resident is never read from another's frames
        lib.get_state(torch.tensor([5]), torch.zeros(1))
    with pytest.raises(ValueError, match="more than resident_motions=8"):
        lib.make_resident(torch.arange(9))

    lib.make_resident(torch.tensor([5, 6]))  # another set replaces the old one
    assert lib.resident_ids.tolist() == [5, 6]
    assert lib.resident_frames == int(full.num_frames[[5, 6]].sum())


def test_draws_cover_every_motion_and_demos_come_from_the_resident_ones(motions) -> None:
    lib = MotionLibrary(motions, resident_motions=BUDGET)
    lib.make_resident(torch.tensor([1, 2, 30]))
    g = torch.Generator().manual_seed(0)
    assert set(lib.sample_motions(4000, generator=g).tolist()) == set(range(NUM_MOTIONS))
    assert set(lib.sample_resident_motions(500, generator=g).tolist()) == {1, 2, 30}
    demos = sample_demo_amp_obs(lib, 64, history=3, dt=1 / 30, generator=g)
    assert demos.shape == (64, 3 * AMP_OBS_STEP_DIM) and bool(torch.isfinite(demos).all())

    weights = torch.zeros(NUM_MOTIONS)
    weights[[2, 11]] = 1.0  # the failure-driven weights are over all motions
    lib.set_sampling_weights(weights)
    assert set(lib.sample_motions(500, generator=g).tolist()) == {2, 11}
    assert set(lib.sample_resident_motions(500, generator=g).tolist()) == {2}
    weights[2] = 0.0  # no resident motion has weight: demos fall back to uniform among the resident ones
    lib.set_sampling_weights(weights)
    assert set(lib.sample_resident_motions(500, generator=g).tolist()) == {1, 2, 30}


def test_a_set_within_the_budget_is_all_resident_with_the_same_bits(motions, full) -> None:
    lib = MotionLibrary(motions, resident_motions=NUM_MOTIONS)
    assert lib.all_resident and lib.resident_ids.tolist() == list(range(NUM_MOTIONS))
    for name in FRAME_FIELDS + ("frame_start",):
        assert torch.equal(getattr(lib, name), getattr(full, name)), name
    lib.make_resident(torch.tensor([0]))  # a no-op: all stay resident
    assert lib.resident_frames == full.total_frames
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(lib.sample_motions(50, a), full.sample_motions(50, b))
    assert torch.equal(lib.sample_resident_motions(50, a), full.sample_motions(50, b))


def test_a_resample_rebuilds_the_resident_set_and_the_env_tracks_the_motions_it_was_given(motions, full) -> None:
    num_envs = BUDGET
    lib = MotionLibrary(motions, resident_motions=BUDGET)
    streamed = HumanoidTracking(MujocoCPUBackend(num_envs, num_threads=1), lib, seed=5)
    whole = HumanoidTracking(MujocoCPUBackend(num_envs, num_threads=1), full, seed=5)
    try:
        # the same draw over all 40 motions; the streaming library built exactly the drawn motions
        assert torch.equal(streamed.motion_ids, whole.motion_ids)
        assert lib.resident_ids.tolist() == sorted(set(streamed.motion_ids.tolist()))
        torch.testing.assert_close(streamed.reset(), whole.reset(), atol=1e-4, rtol=0)

        before = set(lib.resident_ids.tolist())
        new_ids = torch.tensor([m for m in range(NUM_MOTIONS) if m not in before][:num_envs])
        torch.testing.assert_close(streamed.assign_motions(new_ids), whole.assign_motions(new_ids), atol=1e-4,
                                   rtol=0)
        assert lib.resident_ids.tolist() == sorted(new_ids.tolist())
        for _ in range(5):  # PD targets on the reference pose: both envs play the same motions
            a = streamed.step(streamed.ref_next_dof_pos.clone())
            b = whole.step(whole.ref_next_dof_pos.clone())
            torch.testing.assert_close(a.obs, b.obs, atol=1e-3, rtol=0)
            torch.testing.assert_close(a.info["ref_body_pos"], b.info["ref_body_pos"])
        # the reference the env compares against is the given motions' (not another's frames)
        ref = lib.get_state(streamed.motion_ids, streamed.motion_times).body_pos
        torch.testing.assert_close(ref, full.get_state(new_ids, streamed.motion_times).body_pos)

        # resuming the env's state rebuilds the saved motions' buffers
        saved = streamed.state_dict()
        streamed.assign_motions(torch.arange(num_envs))
        assert lib.resident_ids.tolist() == list(range(num_envs))
        streamed.load_state_dict(saved)
        assert lib.resident_ids.tolist() == sorted(new_ids.tolist())
        ref_again = lib.get_state(streamed.motion_ids, streamed.motion_times).body_pos
        assert torch.equal(ref_again, ref)  # bit for bit: the same motions build the same buffers
        # demos of the resident motions equal the full library's
        torch.testing.assert_close(demo_amp_obs(lib, new_ids, streamed.motion_times, 2, 1 / 30),
                                   demo_amp_obs(full, new_ids, streamed.motion_times, 2, 1 / 30))
    finally:
        streamed.close()
        whole.close()
