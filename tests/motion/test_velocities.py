"""Reference velocities of the motion library: PHC's central differences + Gaussian smoothing, hinge-speed clamp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.rotations import quat_from_axis_angle, quat_mul
from phc_lightning.motion import BUNDLED_MOTIONS, fk
from phc_lightning.motion.info import motion_info
from phc_lightning.motion.library import DEFAULT_MAX_DOF_VEL, MotionLibrary
from phc_lightning.motion.raw_motion import RawMotion
from tests.helpers import CMU_PKL as SAMPLE_PKL

RAW = dict(velocity_smoothing=0.0, max_dof_vel=None)
IDENTITY = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
ELBOW_Z = skeleton.body_dofs("L_Elbow")[2]
HIP = skeleton.BODY_INDEX["L_Hip"]


def motion_from(root_pos: torch.Tensor, root_yaw: torch.Tensor, dof: torch.Tensor, fps: float, key: str = "m"):
    """RawMotion from float64 root positions ``[T, 3]``, root yaw ``[T]`` and hinge angles ``[T, 69]``."""
    root_rot = quat_from_axis_angle(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), root_yaw)
    global_rot = fk.local_to_global(fk.dof_to_local(root_rot, dof))
    return RawMotion(key, fps, root_pos.float().numpy(), global_rot.float().numpy())


def hip_flexion_through_90_degrees(num_frames: int = 61, fps: float = 30.0, tilt: float = 0.05) -> RawMotion:
    """Left hip flexing about y from 0 to 150 degrees and back, after a small constant turn about the pelvis z.

    The joint turns at most 4.2 rad/s, but near 90 degrees of flexion its x and z hinge angles swing fast.
    """
    t = torch.arange(num_frames, dtype=torch.float64) / fps
    flexion = math.radians(150.0) * torch.sin(math.pi * t / t[-1])
    axis = torch.eye(3, dtype=torch.float64)
    local = IDENTITY.repeat(num_frames, skeleton.NUM_BODIES, 1)
    tilted = quat_from_axis_angle(axis[2], torch.full_like(t, tilt))
    local[:, HIP] = quat_mul(tilted, quat_from_axis_angle(axis[1], flexion))
    root_pos = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (num_frames, 1))
    return RawMotion("sit", fps, root_pos, fk.local_to_global(local).float().numpy())


def test_constant_velocities_are_kept_by_the_smoothing():
    n, fps = 40, 30.0
    t = torch.arange(n, dtype=torch.float64) / fps
    root = torch.stack([0.5 * t, -0.2 * t, torch.ones_like(t)], dim=-1)
    dof = torch.zeros(n, skeleton.NUM_DOFS, dtype=torch.float64)
    dof[:, ELBOW_Z] = 0.3 + 2.0 * t
    lib = MotionLibrary([motion_from(root, 1.5 * t, dof, fps)], fix_height=False)
    assert lib.velocity_smoothing == 2.0 and lib.max_dof_vel == DEFAULT_MAX_DOF_VEL
    torch.testing.assert_close(lib.body_vel[:, 0], torch.tensor([0.5, -0.2, 0.0]).expand(n, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(lib.body_angvel[:, 0], torch.tensor([0.0, 0.0, 1.5]).expand(n, 3), atol=1e-3, rtol=0)
    torch.testing.assert_close(lib.dof_vel[:, ELBOW_Z], torch.full((n,), 2.0), atol=1e-3, rtol=0)
    others = [i for i in range(skeleton.NUM_DOFS) if i != ELBOW_Z]
    assert float(lib.dof_vel[:, others].abs().max()) < 1e-3


def test_central_differences_are_on_time_where_forward_differences_lag_half_a_frame():
    n, fps, accel = 50, 30.0, 3.0
    t = torch.arange(n, dtype=torch.float64) / fps
    root = torch.stack([0.5 * accel * t**2, torch.zeros_like(t), torch.ones_like(t)], dim=-1)
    motion = motion_from(root, torch.zeros_like(t), torch.zeros(n, skeleton.NUM_DOFS, dtype=torch.float64), fps)
    smooth, raw = MotionLibrary([motion], fix_height=False), MotionLibrary([motion], fix_height=False, **RAW)
    inner = slice(10, n - 10)  # farther from the ends than the filter's 8 taps: a linear ramp passes unchanged
    exact = (accel * t[inner]).float()
    torch.testing.assert_close(smooth.body_vel[inner, 0, 0], exact, atol=2e-3, rtol=0)
    torch.testing.assert_close(raw.body_vel[inner, 0, 0], exact + 0.5 * accel / fps, atol=2e-3, rtol=0)


def test_smoothing_damps_a_single_frame_spike():
    n, fps, spike = 60, 30.0, 30
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n, dtype=torch.float64) / fps
    root = torch.stack([1.2 * t, torch.zeros_like(t), torch.ones_like(t)], dim=-1)
    root = root + 0.002 * torch.randn(n, 3, generator=g, dtype=torch.float64)  # mocap-like jitter
    root[spike, 0] += 0.05  # one bad frame, 5 cm off
    motion = motion_from(root, torch.zeros_like(t), torch.zeros(n, skeleton.NUM_DOFS, dtype=torch.float64), fps)
    true = torch.tensor([1.2, 0.0, 0.0])
    raw_err = (MotionLibrary([motion], **RAW).body_vel[:, 0] - true).norm(dim=-1)
    smooth_err = (MotionLibrary([motion]).body_vel[:, 0] - true).norm(dim=-1)
    assert float(raw_err.max()) > 1.4  # 5 cm in one frame at 30 fps
    assert float(smooth_err.max()) < 0.2 * float(raw_err.max())
    assert float(smooth_err.mean()) < 0.5 * float(raw_err.mean())


def test_smoothing_stays_within_each_motion():
    """Two motions back to back in the buffers: each is filtered as if alone (edge frames repeated)."""
    n, fps = 20, 30.0
    t = torch.arange(n, dtype=torch.float64) / fps
    zeros = torch.zeros(n, skeleton.NUM_DOFS, dtype=torch.float64)
    still = motion_from(torch.tensor([0.0, 0.0, 1.0]).expand(n, 3).double(), torch.zeros_like(t), zeros, fps, "still")
    moving = torch.stack([3.0 * t, torch.zeros_like(t), torch.ones_like(t)], dim=-1)
    moving = motion_from(moving, torch.zeros_like(t), zeros, fps, "moving")
    both = MotionLibrary([still, moving], fix_height=False)
    alone = MotionLibrary([moving], fix_height=False)
    assert float(both.body_vel[:n].abs().max()) < 1e-5
    torch.testing.assert_close(both.body_vel[n:], alone.body_vel, atol=1e-5, rtol=0)


def test_hinge_speeds_near_90_degree_flexion_are_clamped():
    motion = hip_flexion_through_90_degrees()
    raw = MotionLibrary([motion], fix_height=False, **RAW)
    assert int(fk.near_singular_hinges(raw.dof_pos)[:, HIP - 1].sum()) > 0
    turn = (raw.body_angvel[:, HIP] - raw.body_angvel[:, 0]).norm(dim=-1)  # the joint itself turns slowly ...
    assert float(turn.max()) < 5.0
    assert float(raw.dof_vel.abs().max()) > 30.0  # ... while its Euler x and z rates blow up
    clamped = MotionLibrary([motion], fix_height=False, velocity_smoothing=0.0, max_dof_vel=20.0)
    assert float(clamped.dof_vel.abs().max()) <= 20.0
    below = raw.dof_vel.abs() < 20.0
    torch.testing.assert_close(clamped.dof_vel[below], raw.dof_vel[below], atol=0.0, rtol=0.0)
    assert bool((torch.sign(clamped.dof_vel) == torch.sign(raw.dof_vel)).all())
    torch.testing.assert_close(clamped.dof_pos, raw.dof_pos, atol=0.0, rtol=0.0)  # positions untouched
    assert float(MotionLibrary([motion], fix_height=False).dof_vel.abs().max()) <= DEFAULT_MAX_DOF_VEL


def test_invalid_velocity_options_are_rejected():
    motion = hip_flexion_through_90_degrees(num_frames=5)
    with pytest.raises(ValueError, match="velocity_smoothing"):
        MotionLibrary([motion], velocity_smoothing=-1.0)
    with pytest.raises(ValueError, match="velocity_smoothing"):
        MotionLibrary([motion], velocity_smoothing=float("nan"))
    with pytest.raises(ValueError, match="max_dof_vel"):
        MotionLibrary([motion], max_dof_vel=0.0)


def test_motion_info_reports_hinge_speeds_and_near_singular_frames():
    plain = motion_info(BUNDLED_MOTIONS)
    assert "max_dof_vel" not in plain[0]
    rows = {row["key"]: row for row in motion_info(BUNDLED_MOTIONS, hinge_speeds=True)}
    assert all(0.0 <= row["max_dof_vel"] < DEFAULT_MAX_DOF_VEL for row in rows.values())
    assert rows["walk"]["max_dof_vel"] > 1.0 and rows["stand"]["max_dof_vel"] < 0.5
    assert rows["squat"]["near_singular_frames"] > 0  # deep knee bends (the knees only flex: harmless)
    assert rows["walk"]["near_singular_frames"] == 0


def test_data_module_passes_the_velocity_options_to_its_library():
    from phc_lightning.rollout.datamodule import PHCDataModule

    small = dict(num_envs=1, num_threads=1, horizon=2, num_minibatches=1)
    dm = PHCDataModule(**small, velocity_smoothing=0.0, max_dof_vel=None)
    dm.setup("fit")
    try:
        assert dm.motions.velocity_smoothing == 0.0 and dm.motions.max_dof_vel is None
    finally:
        dm.teardown("fit")
    with pytest.raises(ConfigError, match="max_dof_vel"):
        PHCDataModule(**small, max_dof_vel=-1.0).setup("fit")


def test_real_cmu_clip_has_bounded_smooth_velocities():
    if not SAMPLE_PKL.exists():
        pytest.skip(f"{SAMPLE_PKL} not available")
    raw = MotionLibrary(SAMPLE_PKL, **RAW)
    unclamped = MotionLibrary(SAMPLE_PKL, max_dof_vel=None)
    default = MotionLibrary(SAMPLE_PKL)
    # measured: max |dof_vel| 26.9 rad/s raw (a knee's x and z hinges at 77 degrees flexion), 14.4 smoothed
    assert float(raw.dof_vel.abs().max()) > 20.0
    assert float(unclamped.dof_vel.abs().max()) < 17.0
    assert float(default.dof_vel.abs().max()) <= DEFAULT_MAX_DOF_VEL
    # body speeds: 9.8 m/s and 36 rad/s raw (hands and wrists), 6.4 and 23 smoothed
    assert float(default.body_vel.norm(dim=-1).max()) < 0.8 * float(raw.body_vel.norm(dim=-1).max())
    assert float(default.body_angvel.norm(dim=-1).max()) < 0.8 * float(raw.body_angvel.norm(dim=-1).max())
    torch.testing.assert_close(default.body_pos, raw.body_pos, atol=0.0, rtol=0.0)
