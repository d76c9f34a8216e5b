"""MotionLibrary: FK and velocities per frame, height fix, interpolated lookup, weighted sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import (
    quat_angle,
    quat_conjugate,
    quat_from_axis_angle,
    quat_mul,
    quat_to_exp_map,
    wrap_angle,
)
from phc_lightning.motion import fk
from phc_lightning.motion.formats import save_motions_npz
from phc_lightning.motion.library import MotionLibrary, sole_heights
from phc_lightning.motion.pkl import load_pickle_restricted
from phc_lightning.motion.raw_motion import RawMotion
from tests.helpers import CMU_PKL as SAMPLE_PKL

Z = torch.tensor([0.0, 0.0, 1.0])


def rotating_motion(key: str, num_frames: int, fps: float, velocity, yaw_rate: float, z0: float = 1.0) -> RawMotion:
    """T-pose body translating at ``velocity`` and spinning about +z at ``yaw_rate`` (rad/s)."""
    t = torch.arange(num_frames, dtype=torch.float64) / fps
    root_pos = torch.tensor([0.0, 0.0, z0], dtype=torch.float64) + t[:, None] * torch.tensor(velocity).double()
    yaw = quat_from_axis_angle(Z.double(), yaw_rate * t)
    global_rot = yaw[:, None, :].expand(num_frames, skeleton.NUM_BODIES, 4)
    return RawMotion(key, fps, root_pos.float().numpy(), global_rot.float().numpy().copy())


def waving_motion(key: str, num_frames: int, fps: float, seed: int, z0: float = 1.0) -> RawMotion:
    """Smooth random joint motion: every hinge follows its own sine, the root drifts and turns."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_frames, dtype=torch.float64)[:, None] / fps
    amp, freq, phase = (torch.rand(3, skeleton.NUM_DOFS, generator=g, dtype=torch.float64) * 2).unbind(0)
    dof = 0.6 * amp * torch.sin(2 * math.pi * 0.5 * freq * t + 3 * phase)
    root_rot = quat_from_axis_angle(Z.double(), 0.8 * t[:, 0])
    global_rot = fk.local_to_global(fk.dof_to_local(root_rot, dof))
    root_pos = torch.cat([0.5 * t, 0.1 * torch.sin(t), z0 + 0.05 * torch.cos(3 * t)], dim=-1)
    return RawMotion(key, fps, root_pos.float().numpy(), global_rot.float().numpy())


@pytest.fixture(scope="module")
def library() -> MotionLibrary:
    return MotionLibrary([waving_motion("a", 12, 30.0, seed=1), waving_motion("b", 7, 20.0, seed=2, z0=3.0)])


def frame_ids(lib: MotionLibrary):
    """Motion id and frame index of every frame of the library."""
    ids = torch.repeat_interleave(torch.arange(lib.num_motions), lib.num_frames)
    frames = torch.arange(lib.total_frames) - lib.frame_start[ids]
    return ids, frames


def same_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest component error between quaternions, allowing q and -q."""
    return torch.minimum((a - b).abs().amax(-1), (a + b).abs().amax(-1)).max()


def test_library_shapes_and_lengths(library):
    assert library.num_motions == 2 and library.keys == ["a", "b"]
    assert library.num_frames.tolist() == [12, 7] and library.frame_start.tolist() == [0, 12]
    torch.testing.assert_close(library.lengths, torch.tensor([11 / 30, 6 / 20]))
    state = library.get_state(torch.tensor([0, 1, 1]), torch.tensor([0.0, 0.1, 0.2]))
    assert state.body_pos.shape == (3, 24, 3) and state.body_rot.shape == (3, 24, 4)
    assert state.body_vel.shape == state.body_angvel.shape == (3, 24, 3)
    assert state.dof_pos.shape == state.dof_vel.shape == (3, 69)
    assert all(x.dtype == torch.float32 for x in vars(state).values())


def test_state_at_exact_frame_times_is_that_frame(library):
    ids, frames = frame_ids(library)
    state = library.get_state(ids, frames.float() / library.fps[ids])
    torch.testing.assert_close(state.body_pos, library.body_pos, atol=1e-5, rtol=0)
    torch.testing.assert_close(state.body_rot, library.body_rot, atol=1e-5, rtol=0)
    torch.testing.assert_close(state.body_vel, library.body_vel, atol=1e-4, rtol=0)
    torch.testing.assert_close(state.body_angvel, library.body_angvel, atol=1e-4, rtol=0)
    torch.testing.assert_close(state.dof_pos, library.dof_pos, atol=1e-5, rtol=0)
    torch.testing.assert_close(state.dof_vel, library.dof_vel, atol=1e-4, rtol=0)


def test_state_halfway_between_frames_is_mean_and_slerp_midpoint(library):
    ids, frames = frame_ids(library)
    keep = frames < library.num_frames[ids] - 1
    ids, frames = ids[keep], frames[keep]
    g0 = library.frame_start[ids] + frames
    state = library.get_state(ids, (frames.float() + 0.5) / library.fps[ids])
    mean = lambda buf: 0.5 * (buf[g0] + buf[g0 + 1])  # noqa: E731
    torch.testing.assert_close(state.body_pos, mean(library.body_pos), atol=1e-5, rtol=0)
    torch.testing.assert_close(state.body_vel, mean(library.body_vel), atol=1e-4, rtol=0)
    torch.testing.assert_close(state.dof_vel, mean(library.dof_vel), atol=1e-4, rtol=0)
    torch.testing.assert_close(state.dof_pos, mean(library.dof_pos), atol=1e-5, rtol=0)  # no wraps in this motion
    # The slerp midpoint is equally far (half the angle) from both neighbouring frames.
    q0, q1 = library.body_rot[g0], library.body_rot[g0 + 1]
    half = 0.5 * quat_angle(quat_mul(quat_conjugate(q0), q1))
    torch.testing.assert_close(quat_angle(quat_mul(quat_conjugate(q0), state.body_rot)), half, atol=2e-4, rtol=0)
    torch.testing.assert_close(quat_angle(quat_mul(quat_conjugate(state.body_rot), q1)), half, atol=2e-4, rtol=0)


def test_times_outside_the_motion_are_clamped(library):
    state = library.get_state(torch.tensor([0, 0, 1]), torch.tensor([-1.0, 99.0, 99.0]))
    torch.testing.assert_close(state.body_pos[0], library.body_pos[0])
    torch.testing.assert_close(state.body_pos[1], library.body_pos[11])
    torch.testing.assert_close(state.body_pos[2], library.body_pos[18])


def test_unsmoothed_velocities_are_the_raw_forward_differences_and_the_last_frame_repeats():
    motions = [waving_motion("a", 12, 30.0, seed=1), waving_motion("b", 7, 20.0, seed=2, z0=3.0)]
    library = MotionLibrary(motions, velocity_smoothing=0.0, max_dof_vel=None)
    for m in range(library.num_motions):
        s, n, fps = int(library.frame_start[m]), int(library.num_frames[m]), float(library.fps[m])
        pairs = torch.cat([torch.arange(n - 1), torch.tensor([n - 2])]) + s  # frame t -> t + 1; the last repeats
        pos, rot, dof = library.body_pos, library.body_rot, library.dof_pos
        exact = dict(atol=0.0, rtol=0.0)
        torch.testing.assert_close(library.body_vel[s : s + n], (pos[pairs + 1] - pos[pairs]) * fps, **exact)
        angvel = quat_to_exp_map(quat_mul(rot[pairs + 1], quat_conjugate(rot[pairs]))) * fps
        torch.testing.assert_close(library.body_angvel[s : s + n], angvel, **exact)
        torch.testing.assert_close(library.dof_vel[s : s + n], wrap_angle(dof[pairs + 1] - dof[pairs]) * fps, **exact)


def test_rigid_spin_gives_constant_linear_and_angular_velocity():
    lib = MotionLibrary([rotating_motion("spin", 9, 30.0, velocity=[0.5, -0.2, 0.0], yaw_rate=1.5)], fix_height=False)
    torch.testing.assert_close(lib.body_vel[:, 0], torch.tensor([0.5, -0.2, 0.0]).expand(9, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(lib.body_angvel, torch.tensor([0.0, 0.0, 1.5]).expand(9, 24, 3), atol=1e-3, rtol=0)
    torch.testing.assert_close(lib.dof_vel, torch.zeros(9, 69), atol=1e-3, rtol=0)
    # Root-relative body offsets rotate with the body: velocity = ω × r.
    r = lib.body_pos[:, 13] - lib.body_pos[:, 0]
    omega = torch.tensor([0.0, 0.0, 1.5]).expand_as(r)
    torch.testing.assert_close(lib.body_vel[:-1, 13] - lib.body_vel[:-1, 0], torch.cross(omega, r, dim=-1)[:-1],
                               atol=2e-2, rtol=0)  # fmt: skip


def test_hinge_velocity_takes_the_short_way_across_pi():
    num_frames, fps = 5, 30.0
    angles = torch.tensor([2.9, 3.0, 3.1, 3.2, 3.3], dtype=torch.float64)  # crosses pi: stored as -3.08 ...
    dof = torch.zeros(num_frames, skeleton.NUM_DOFS, dtype=torch.float64)
    elbow_z = skeleton.body_dofs("L_Elbow")[2]
    dof[:, elbow_z] = angles
    global_rot = fk.local_to_global(fk.dof_to_local(torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(5, 4).double(), dof))
    motion = RawMotion("wrap", fps, np.zeros((5, 3), np.float32) + [0, 0, 1], global_rot.float().numpy())
    lib = MotionLibrary([motion], fix_height=False)
    torch.testing.assert_close(lib.dof_vel[:, elbow_z], torch.full((5,), 0.1 * fps), atol=1e-3, rtol=0)
    halfway = lib.get_state(torch.tensor([0]), torch.tensor([2.5 / fps]))  # between 3.1 and 3.2 (= -3.083)
    assert abs(math.remainder(float(halfway.dof_pos[0, elbow_z]) - 3.15, 2 * math.pi)) < 1e-3


def test_dof_pos_reproduces_the_global_rotations(library):
    local = fk.dof_to_local(library.body_rot[:, 0], library.dof_pos)
    assert same_rotation(fk.local_to_global(local), library.body_rot) < 1e-5


def test_height_fix_puts_each_motions_lowest_sole_on_the_floor():
    motions = [waving_motion("low", 15, 30.0, seed=3, z0=0.2), waving_motion("high", 10, 30.0, seed=4, z0=5.0)]
    fixed, raw = MotionLibrary(motions), MotionLibrary(motions, fix_height=False)
    for m in range(2):
        s, n = int(fixed.frame_start[m]), int(fixed.num_frames[m])
        assert abs(float(sole_heights(fixed.body_pos[s : s + n]).min())) < 1e-5
        shift = fixed.body_pos[s : s + n] - raw.body_pos[s : s + n]
        torch.testing.assert_close(shift[..., :2], torch.zeros_like(shift[..., :2]))
        assert float(shift[..., 2].max() - shift[..., 2].min()) < 1e-5  # one rigid vertical shift per motion
    torch.testing.assert_close(raw.body_pos[:, 0], torch.from_numpy(np.concatenate([m.root_pos for m in motions])))
    torch.testing.assert_close(fixed.body_vel, raw.body_vel, atol=1e-4, rtol=0)


def test_library_from_file_matches_library_from_motions(tmp_path):
    motions = [waving_motion("a", 6, 30.0, seed=5), waving_motion("b", 4, 25.0, seed=6)]
    save_motions_npz(tmp_path / "m.npz", motions)
    from_file, from_list = MotionLibrary(tmp_path / "m.npz"), MotionLibrary(motions)
    assert from_file.keys == from_list.keys
    for name in ("body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel"):
        torch.testing.assert_close(getattr(from_file, name), getattr(from_list, name), atol=1e-5, rtol=0)


def test_sampling_follows_the_weights():
    lib = MotionLibrary([waving_motion(str(i), 4, 30.0, seed=i) for i in range(3)])
    torch.testing.assert_close(lib.sampling_weights, torch.full((3,), 1 / 3))
    lib.set_sampling_weights(torch.tensor([0.0, 1.0, 3.0]))
    ids = lib.sample_motions(40000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=3)
    assert ids.dtype == torch.long and counts[0] == 0
    assert abs(float(counts[2]) / float(counts[1]) - 3.0) < 0.15


def test_sample_times_stay_inside_each_motion(library):
    ids = library.sample_motions(5000, generator=torch.Generator().manual_seed(1))
    times = library.sample_times(ids, generator=torch.Generator().manual_seed(2))
    assert bool((times >= 0).all()) and bool((times < library.lengths[ids]).all())
    assert float(times[ids == 0].max()) > 0.9 * float(library.lengths[0])


@pytest.mark.parametrize(
    "weights, message",
    [
        (torch.ones(3), "shape"),
        (torch.tensor([1.0, -1.0]), "non-negative"),
        (torch.tensor([1.0, float("nan")]), "finite"),
        (torch.zeros(2), "all be zero"),
    ],
)
def test_bad_sampling_weights_are_rejected(library, weights, message):
    with pytest.raises(ValueError, match=message):
        library.set_sampling_weights(weights)


def test_real_phc_sample_is_upright_on_the_floor_and_fk_consistent():
    if not SAMPLE_PKL.exists():
        pytest.skip(f"{SAMPLE_PKL} not available")
    lib = MotionLibrary(SAMPLE_PKL)
    assert lib.num_motions == 1 and int(lib.num_frames[0]) == 222 and float(lib.fps[0]) == 30.0
    assert float(lib.lengths[0]) == pytest.approx(221 / 30, abs=1e-4)
    # The T-pose head origin of this skeleton stands 1.516 m above the soles; a dancer with bent knees is a bit lower.
    head = float(lib.body_pos[:, skeleton.BODY_INDEX["Head"], 2].median())
    assert 1.45 < head < 1.8
    assert abs(float(sole_heights(lib.body_pos).min())) < 1e-4
    # dof -> local -> global reproduces the file's pose_quat_global (up to sign).
    data = load_pickle_restricted(SAMPLE_PKL)["0-cmu_mocap_05_06"]
    file_rot = torch.as_tensor(np.asarray(data["pose_quat_global"]), dtype=torch.float32)
    rebuilt = fk.local_to_global(fk.dof_to_local(lib.body_rot[:, 0], lib.dof_pos))
    assert same_rotation(rebuilt, file_rot) < 1e-4
