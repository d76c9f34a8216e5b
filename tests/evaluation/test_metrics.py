"""Tracking metrics on hand-made trajectories, checked against a numpy port of smpl_sim's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phc_lightning.evaluation.metrics import ERROR_NAMES, MotionTrackingMetrics, motion_errors, procrustes_align

NUM_BODIES = 24


def random_motion(num_frames: int, seed: int) -> torch.Tensor:
    """A smooth-ish random trajectory [T, 24, 3] in metres."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(NUM_BODIES, 3, generator=g, dtype=torch.float64) * 0.3
    drift = torch.randn(num_frames, NUM_BODIES, 3, generator=g, dtype=torch.float64).cumsum(0) * 0.01
    return base + drift


def rotation_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def numpy_p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """smpl_sim ``p_mpjpe``: per-frame Procrustes (scale, rotation, translation) of pred onto gt, [T, J]."""
    mu_x, mu_y = gt.mean(1, keepdims=True), pred.mean(1, keepdims=True)
    x0, y0 = gt - mu_x, pred - mu_y
    norm_x = np.sqrt((x0**2).sum((1, 2), keepdims=True))
    norm_y = np.sqrt((y0**2).sum((1, 2), keepdims=True))
    x0, y0 = x0 / norm_x, y0 / norm_y
    u, s, vt = np.linalg.svd(x0.transpose(0, 2, 1) @ y0)
    v = vt.transpose(0, 2, 1)
    r = v @ u.transpose(0, 2, 1)
    sign = np.sign(np.expand_dims(np.linalg.det(r), 1))
    v[:, :, -1] *= sign
    s[:, -1] *= sign.flatten()
    r = v @ u.transpose(0, 2, 1)
    scale = np.expand_dims(s.sum(1, keepdims=True), 2) * norm_x / norm_y
    trans = mu_x - scale * (mu_y @ r)
    return np.linalg.norm(scale * (pred @ r) + trans - gt, axis=-1)


def numpy_frame_errors(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Per-frame body-mean errors in mm, smpl_sim ``compute_metrics_lite`` style."""
    p_l, g_l = pred - pred[:, :1], gt - gt[:, :1]
    return {
        "mpjpe_g": np.linalg.norm(pred - gt, axis=-1).mean(-1) * 1000,
        "mpjpe_l": np.linalg.norm(p_l - g_l, axis=-1).mean(-1) * 1000,
        "mpjpe_pa": numpy_p_mpjpe(p_l, g_l).mean(-1) * 1000,
        "vel_dist": np.linalg.norm(np.diff(pred, axis=0) - np.diff(gt, axis=0), axis=-1).mean(-1) * 1000,
        "accel_dist": np.linalg.norm(np.diff(pred, 2, axis=0) - np.diff(gt, 2, axis=0), axis=-1).mean(-1) * 1000,
    }


def test_perfect_tracking_gives_zero_errors_and_full_success():
    gt = random_motion(20, seed=0)
    metrics = MotionTrackingMetrics()
    metrics.update(gt.clone(), gt, success=True)
    out = metrics.compute()
    assert out["success_rate"] == 1.0
    for name in ERROR_NAMES:
        assert out[name].item() == pytest.approx(0.0, abs=1e-4), name
        assert out[name + "_succ"].item() == pytest.approx(0.0, abs=1e-4), name


def test_constant_offset_is_global_error_only():
    gt = random_motion(15, seed=1)
    pred = gt + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)
    errors = motion_errors(pred, gt)
    assert errors["mpjpe_g"].shape == (15,)
    assert errors["vel_dist"].shape == (14,)
    assert errors["accel_dist"].shape == (13,)
    torch.testing.assert_close(errors["mpjpe_g"], torch.full((15,), 100.0, dtype=torch.float64))
    for name in ("mpjpe_l", "mpjpe_pa", "vel_dist", "accel_dist"):
        assert errors[name].abs().max().item() < 1e-6, name
    metrics = MotionTrackingMetrics()
    metrics.update(pred.float(), gt.float(), success=True)
    assert metrics.compute()["mpjpe_g"].item() == pytest.approx(100.0, abs=1e-3)


def test_similarity_transformed_copy_is_zero_after_procrustes_only():
    gt = random_motion(10, seed=2)
    # Per frame: rotate about the root, scale and translate (a different transform every frame).
    frames = []
    for t in range(10):
        rot, scale = rotation_z(0.3 + 0.1 * t), 1.2 - 0.02 * t
        frames.append(scale * gt[t] @ rot.T + torch.tensor([0.5, -0.2, 0.1 * t], dtype=torch.float64))
    pred = torch.stack(frames)
    errors = motion_errors(pred, gt)
    assert errors["mpjpe_pa"].abs().max().item() < 1e-6
    assert errors["mpjpe_l"].min().item() > 10.0


def test_procrustes_matches_smpl_sim_on_noisy_and_mirrored_sets():
    gt = random_motion(12, seed=3)
    g = torch.Generator().manual_seed(4)
    noisy = gt + 0.03 * torch.randn(gt.shape, generator=g, dtype=torch.float64)
    mirrored = gt * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)  # best fit would be a reflection
    for pred in (noisy, mirrored):
        p_l, g_l = pred - pred[:, :1], gt - gt[:, :1]
        ours = torch.linalg.vector_norm(procrustes_align(p_l, g_l) - g_l, dim=-1)
        np.testing.assert_allclose(ours.numpy(), numpy_p_mpjpe(p_l.numpy(), g_l.numpy()), atol=1e-9)
    assert motion_errors(mirrored, gt)["mpjpe_pa"].min().item() > 1.0  # reflections are not allowed


def test_failed_motion_lowers_success_and_is_excluded_from_succ_metrics():
    gt_a, gt_b = random_motion(10, seed=5), random_motion(10, seed=6)
    metrics = MotionTrackingMetrics()
    metrics.update(gt_a.clone(), gt_a, success=True)
    metrics.update(gt_b + torch.tensor([0.0, 0.2, 0.0], dtype=torch.float64), gt_b, success=False)
    out = metrics.compute()
    assert out["success_rate"].item() == pytest.approx(0.5)
    assert out["num_motions"].item() == 2 and out["num_failed"].item() == 1
    assert out["mpjpe_g"].item() == pytest.approx(100.0, abs=1e-3)  # (0 * 10 + 200 * 10) / 20 frames
    assert out["mpjpe_g_succ"].item() == pytest.approx(0.0, abs=1e-4)


def test_succ_metrics_are_nan_when_every_motion_failed():
    gt = random_motion(6, seed=7)
    metrics = MotionTrackingMetrics()
    metrics.update(gt + 0.01, gt, success=torch.tensor(False))
    out = metrics.compute()
    assert out["success_rate"].item() == 0.0
    assert out["mpjpe_g"].item() > 0
    for name in ERROR_NAMES:
        assert math.isnan(out[name + "_succ"].item()), name


def test_frames_are_weighted_across_motions_of_different_lengths():
    lengths, success = [4, 11, 30], [True, False, True]
    gts = [random_motion(n, seed=10 + i) for i, n in enumerate(lengths)]
    g = torch.Generator().manual_seed(20)
    preds = [gt + 0.02 * torch.randn(gt.shape, generator=g, dtype=torch.float64) for gt in gts]
    metrics = MotionTrackingMetrics()
    for pred, gt, ok in zip(preds, gts, success):
        metrics.update(pred, gt, success=ok)
    out = metrics.compute()

    per_motion = [numpy_frame_errors(p.numpy(), g_.numpy()) for p, g_ in zip(preds, gts)]
    for name in ERROR_NAMES:
        expected = np.concatenate([e[name] for e in per_motion]).mean()
        expected_succ = np.concatenate([e[name] for e, ok in zip(per_motion, success) if ok]).mean()
        assert out[name].item() == pytest.approx(expected, rel=1e-5), name
        assert out[name + "_succ"].item() == pytest.approx(expected_succ, rel=1e-5), name
    assert out["success_rate"].item() == pytest.approx(2 / 3)


def test_padded_batch_update_equals_one_update_per_motion():
    lengths = [3, 9, 6]
    horizon = max(lengths)
    g = torch.Generator().manual_seed(30)
    gts = [random_motion(n, seed=40 + i).float() for i, n in enumerate(lengths)]
    preds = [gt + 0.05 * torch.randn(gt.shape, generator=g) for gt in gts]
    # Padding is NaN on purpose: it must not leak into any sum.
    pred_b = torch.full((3, horizon, NUM_BODIES, 3), float("nan"))
    gt_b = torch.full((3, horizon, NUM_BODIES, 3), float("nan"))
    for i, n in enumerate(lengths):
        pred_b[i, :n], gt_b[i, :n] = preds[i], gts[i]
    success = torch.tensor([True, True, False])

    batched, single = MotionTrackingMetrics(), MotionTrackingMetrics()
    batched.update_batch(pred_b, gt_b, torch.tensor(lengths), success)
    for pred, gt, ok in zip(preds, gts, success.tolist()):
        single.update(pred, gt, success=ok)
    out_b, out_s = batched.compute(), single.compute()
    for key in out_s:
        assert not math.isnan(out_b[key].item()), key
        torch.testing.assert_close(out_b[key], out_s[key], rtol=1e-5, atol=1e-4)


def test_states_merge_by_summation_like_a_distributed_sync():
    gts = [random_motion(n, seed=50 + n) for n in (5, 8)]
    preds = [gt + 0.01 for gt in gts]
    part_a, part_b, whole = MotionTrackingMetrics(), MotionTrackingMetrics(), MotionTrackingMetrics()
    part_a.update(preds[0], gts[0], success=True)
    part_b.update(preds[1], gts[1], success=False)
    for pred, gt, ok in zip(preds, gts, (True, False)):
        whole.update(pred, gt, success=ok)
    assert all(fx is not None for fx in part_a._reductions.values())
    part_a.merge_state(part_b)  # uses the registered dist_reduce_fx, as sync() does across ranks
    out_m, out_w = part_a.compute(), whole.compute()
    for key in out_w:
        torch.testing.assert_close(out_m[key], out_w[key], equal_nan=True)


def test_bad_inputs_raise_one_line_errors():
    metrics = MotionTrackingMetrics()
    gt = random_motion(5, seed=60)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.update(gt[:4], gt, success=True)
    with pytest.raises(ValueError, match=r"\[\.\.\., T, J, 3\]"):
        motion_errors(gt[..., :2], gt[..., :2])
    with pytest.raises(ValueError, match="success"):
        metrics.update(gt, gt, success=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="lengths"):
        metrics.update_batch(gt[None], gt[None], torch.tensor([6]), torch.tensor([True]))


def test_streaming_sums_equal_the_whole_trajectory_errors() -> None:
    from phc_lightning.evaluation.metrics import ERROR_NAMES, StreamingErrors

    lengths = [7, 4, 1]  # env 2 plays a single frame: no velocity, no acceleration
    horizon = max(lengths)
    gts = [random_motion(horizon, seed=70 + i).float() for i in range(3)]
    preds = [gt + 0.03 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(i)) for i, gt in enumerate(gts)]
    stream = StreamingErrors(3, "cpu")
    for t in range(horizon):
        active = torch.tensor([t < n for n in lengths])
        # envs that finished keep producing unrelated frames (auto-reset): they must not count
        pred_t = torch.stack([p[t] if t < n else torch.full_like(p[t], float("nan")) for p, n in zip(preds, lengths)])
        stream.add(pred_t, torch.stack([g[t] for g in gts]), active)
    for i, n in enumerate(lengths):
        whole = motion_errors(preds[i][:n], gts[i][:n])
        for name in ERROR_NAMES:
            assert int(stream.frames[name][i]) == whole[name].numel(), (name, i)
            torch.testing.assert_close(stream.sums[name][i].float(), whole[name].sum(), rtol=1e-5, atol=1e-3)
    # the metric takes those sums and gives what it gives for the whole trajectories
    success = torch.tensor([True, False, True])
    from_sums, from_trajectories = MotionTrackingMetrics(), MotionTrackingMetrics()
    from_sums.update(None, None, success, sums=stream.sums, frames=stream.frames)
    for i, n in enumerate(lengths):
        from_trajectories.update(preds[i][:n], gts[i][:n], success=bool(success[i]))
    out_s, out_t = from_sums.compute(), from_trajectories.compute()
    for key in out_t:
        torch.testing.assert_close(out_s[key], out_t[key], rtol=1e-5, atol=1e-3, equal_nan=True)
