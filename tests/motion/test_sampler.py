"""PMCP motion sampler: weights after known failure patterns, and exact state round-trip."""

from __future__ import annotations

import pytest
import torch

from phc_lightning.motion.sampler import MotionSampler


def failed(*flags: int) -> torch.Tensor:
    return torch.tensor([bool(f) for f in flags])


def test_every_mode_starts_uniform():
    for mode in ("soft", "hard", "decay"):
        torch.testing.assert_close(MotionSampler(4, mode=mode).weights(), torch.full((4,), 0.25))


def test_soft_weights_follow_cumulative_failure_counts():
    sampler = MotionSampler(4, mode="soft")
    sampler.update(failed(0, 0, 0, 0))
    torch.testing.assert_close(sampler.weights(), torch.full((4,), 0.25))  # nothing ever failed
    sampler.update(failed(1, 0, 1, 0))
    sampler.update(failed(1, 0, 0, 0))
    torch.testing.assert_close(sampler.weights(), torch.tensor([2 / 3, 0.0, 1 / 3, 0.0]))
    sampler.update(failed(0, 0, 0, 0))  # a clean evaluation keeps the history
    torch.testing.assert_close(sampler.weights(), torch.tensor([2 / 3, 0.0, 1 / 3, 0.0]))
    assert sampler.failure_counts.tolist() == [2, 0, 1, 0]


def test_hard_weights_are_uniform_over_last_failures():
    sampler = MotionSampler(5, mode="hard")
    sampler.update(failed(1, 1, 0, 0, 1))
    sampler.update(failed(0, 1, 0, 1, 0))
    torch.testing.assert_close(sampler.weights(), torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0]))
    sampler.update(failed(0, 0, 0, 0, 0))
    torch.testing.assert_close(sampler.weights(), torch.full((5,), 0.2))


def test_decay_weights_reset_failures_to_one_and_decay_successes_to_a_floor():
    sampler = MotionSampler(4, mode="decay", decay=0.5)
    sampler.update(failed(1, 0, 0, 0))
    expected = torch.tensor([1.0, 0.25, 0.25, 0.25], dtype=torch.float64)  # 0.25 * 0.5 clipped at 1/4
    torch.testing.assert_close(sampler.decay_weights, expected)
    sampler.update(failed(0, 1, 0, 0))
    expected = torch.tensor([0.5, 1.0, 0.25, 0.25], dtype=torch.float64)
    torch.testing.assert_close(sampler.decay_weights, expected)
    sampler.update(failed(0, 0, 0, 0))
    expected = torch.tensor([0.25, 0.5, 0.25, 0.25], dtype=torch.float64)  # 0.5 * 0.5 = floor
    torch.testing.assert_close(sampler.decay_weights, expected)
    torch.testing.assert_close(sampler.weights(), (expected / expected.sum()).float())


def test_default_decay_is_puffer_rate():
    sampler = MotionSampler(10, mode="decay")
    sampler.update(failed(1, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    sampler.update(failed(0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert sampler.decay_weights[0].item() == pytest.approx(0.999)
    assert sampler.decay_weights[1].item() == pytest.approx(0.1)


def test_state_round_trips_through_weights_only_torch_load(tmp_path):
    original = MotionSampler(6, mode="decay", decay=0.9)
    for pattern in ((1, 0, 0, 1, 0, 0), (0, 1, 0, 1, 0, 0), (0, 0, 0, 0, 0, 1)):
        original.update(failed(*pattern))
    path = tmp_path / "sampler.pt"
    torch.save({"sampler": original.state_dict()}, path)
    state = torch.load(path, weights_only=True)["sampler"]

    restored = MotionSampler(6, mode="decay", decay=0.9)
    restored.load_state_dict(state)
    assert restored.num_updates == 3
    assert torch.equal(restored.failure_counts, original.failure_counts)
    assert torch.equal(restored.last_failed, original.last_failed)
    assert torch.equal(restored.decay_weights, original.decay_weights)
    assert torch.equal(restored.weights(), original.weights())
    # The same future evaluation leads to the same weights: resuming is exact.
    for sampler in (original, restored):
        sampler.update(failed(0, 0, 1, 0, 0, 0))
    assert torch.equal(restored.weights(), original.weights())


def test_bad_configuration_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="mode.*soft, hard, decay"):
        MotionSampler(3, mode="uniform")
    with pytest.raises(ValueError, match="num_motions"):
        MotionSampler(0)
    with pytest.raises(ValueError, match="decay"):
        MotionSampler(3, mode="decay", decay=1.5)
    sampler = MotionSampler(3)
    with pytest.raises(ValueError, match=r"failed: expected a bool tensor of shape \[3\]"):
        sampler.update(failed(1, 0))
    with pytest.raises(ValueError, match="failed"):
        sampler.update(torch.tensor([1, 0, 0]))
    with pytest.raises(ValueError, match="saved for 4 motions"):
        sampler.load_state_dict(MotionSampler(4).state_dict())


def test_uniform_mix_keeps_every_motion_in_training():
    pure = MotionSampler(4, mode="soft")
    mixed = MotionSampler(4, mode="soft", uniform_mix=0.5)
    for sampler in (pure, mixed):
        sampler.update(torch.tensor([True, False, False, True]))
        sampler.update(torch.tensor([True, False, False, False]))
    assert pure.weights().tolist() == pytest.approx([2 / 3, 0.0, 0.0, 1 / 3])  # PHC: tracked motions never drawn
    assert mixed.weights().tolist() == pytest.approx([0.5 * 2 / 3 + 0.125, 0.125, 0.125, 0.5 / 3 + 0.125])
    assert float(mixed.weights().sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="uniform_mix"):
        MotionSampler(4, uniform_mix=1.5)
