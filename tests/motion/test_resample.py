"""Resampling to 30 fps: new frames land exactly on k / 30 s, rotations stay unit, a round trip is lossless."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_from_axis_angle
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.formats import load_motion_file
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.motion.resample import resample_motion, resample_times

SPEED = np.array([1.3, -0.4, 0.05])  # m/s, root moves linearly
TURN = 2.0  # rad/s about a fixed axis: slerp between frames is then exact


def analytic(times: np.ndarray) -> tuple:
    """Root position and global rotations (every body turning about one axis) at ``times``."""
    root = np.array([0.2, 0.1, 0.9]) + times[:, None] * SPEED
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    axis = axis / axis.norm()
    angle = torch.from_numpy(TURN * times)[:, None] + torch.linspace(0, 1, skeleton.NUM_BODIES, dtype=torch.float64)
    rot = quat_from_axis_angle(axis.expand(*angle.shape, 3), angle)
    return root, rot.numpy()


def make_motion(fps: float, num_frames: int) -> RawMotion:
    root, rot = analytic(np.arange(num_frames) / fps)
    return RawMotion("m", fps, root.astype(np.float32), rot.astype(np.float32))


def same_rotation(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``1 - |<a, b>|`` (0 for equal rotations, either sign)."""
    return float((1.0 - np.abs((a.astype(np.float64) * b).sum(-1))).max())


@pytest.mark.parametrize("fps, num_frames", [(60.0, 121), (120.0, 241), (120.0, 250), (50.0, 101), (59.94, 130)])
def test_resampled_frames_land_exactly_on_the_new_frame_times(fps: float, num_frames: int) -> None:
    out = resample_motion(make_motion(fps, num_frames), 30.0)
    times = resample_times(num_frames, fps, 30.0)
    assert out.fps == 30.0
    assert out.num_frames == len(times) == math.floor((num_frames - 1) / fps * 30 + 1e-6) + 1
    np.testing.assert_allclose(times, np.arange(out.num_frames) / 30.0)
    assert times[-1] <= (num_frames - 1) / fps + 1e-9  # never beyond the last source frame
    root, rot = analytic(times)
    np.testing.assert_allclose(out.root_pos, root, atol=2e-6)
    assert same_rotation(out.global_rot, rot) < 1e-6
    np.testing.assert_allclose(np.linalg.norm(out.global_rot, axis=-1), 1.0, atol=1e-6)


def test_integer_ratios_reproduce_source_frames() -> None:
    source = make_motion(120.0, 241)
    out = resample_motion(source, 30.0)
    np.testing.assert_array_equal(out.root_pos, source.root_pos[::4])
    assert same_rotation(out.global_rot, source.global_rot[::4]) < 1e-7


def test_same_rate_is_returned_unchanged() -> None:
    motion = make_motion(30.0, 10)
    assert resample_motion(motion, 30.0) is motion


def test_up_then_down_sampling_gives_back_the_motion() -> None:
    for motion in load_motion_file(BUNDLED_MOTIONS)[:3]:
        back = resample_motion(resample_motion(motion, 120.0), 30.0)
        assert back.num_frames == motion.num_frames
        np.testing.assert_allclose(back.root_pos, motion.root_pos, atol=1e-5)
        assert same_rotation(back.global_rot, motion.global_rot) < 1e-6
