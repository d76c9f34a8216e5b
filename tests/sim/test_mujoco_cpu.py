"""MujocoCPUBackend: state in/out conventions, PD stepping, stepper parity, instability handling, factory."""

from __future__ import annotations

import math
from typing import Dict

import mujoco
import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_conjugate, quat_mul
from phc_lightning.motion import fk
from phc_lightning.sim.base import SimState
from phc_lightning.sim.factory import make_backend
from phc_lightning.sim.mujoco_cpu import MujocoCPUBackend, load_model, mj_batch

STEPPERS = [
    pytest.param("batch", marks=pytest.mark.skipif(mj_batch is None, reason="needs mujoco.batch (MuJoCo >= 4.0)")),
    "threads",
]
FIELDS = ("body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel")


def random_state(n: int, seed: int, height: float = 1.5, speed: float = 1.0) -> Dict[str, torch.Tensor]:
    """A random airborne state of ``n`` humanoids (float64)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    root_pos = torch.cat([randn(n, 2), torch.full((n, 1), height, dtype=torch.float64)], dim=1)
    return {
        "root_pos": root_pos,
        "root_rot": torch.nn.functional.normalize(randn(n, 4), dim=1),
        "root_vel": speed * randn(n, 3),
        "root_angvel": speed * randn(n, 3),
        "dof_pos": 0.5 * randn(n, skeleton.NUM_DOFS),
        "dof_vel": speed * randn(n, skeleton.NUM_DOFS),
    }


def same_rotation(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    """Whether xyzw quaternions ``a`` and ``b`` describe the same rotations (up to sign)."""
    w = quat_mul(quat_conjugate(a.double()), b.double())[..., 3].abs()
    return bool(torch.all(w > 1.0 - atol))


def mujoco_data_from_state(model: mujoco.MjModel, s: SimState, env: int) -> mujoco.MjData:
    """An MjData at the generalized state that ``s`` reports for ``env``, with mj_forward done."""
    data = mujoco.MjData(model)
    rot = s.body_rot[env, 0].double().numpy()
    data.qpos[:3] = s.body_pos[env, 0].numpy()
    data.qpos[3:7] = [rot[3], rot[0], rot[1], rot[2]]
    data.qpos[7:] = s.dof_pos[env].numpy()
    local_angvel = np.empty(3)
    mujoco.mju_rotVecQuat(local_angvel, s.body_angvel[env, 0].double().numpy(), [rot[3], -rot[0], -rot[1], -rot[2]])
    data.qvel[:3] = s.body_vel[env, 0].numpy()
    data.qvel[3:6] = local_angvel
    data.qvel[6:] = s.dof_vel[env].numpy()
    mujoco.mj_forward(model, data)
    return data


@pytest.mark.parametrize("stepper", STEPPERS)
def test_set_state_round_trips_with_world_frame_root_angvel(stepper):
    backend = MujocoCPUBackend(4, stepper=stepper, num_threads=2)
    standing = backend.state().body_pos.clone()
    ids = torch.tensor([2, 0])  # unsorted on purpose
    st = random_state(2, seed=1)
    backend.set_state(ids, **st)
    s = backend.state()
    torch.testing.assert_close(s.body_pos[ids, 0].double(), st["root_pos"], atol=1e-6, rtol=0)
    assert same_rotation(s.body_rot[ids, 0], st["root_rot"])
    torch.testing.assert_close(s.body_vel[ids, 0].double(), st["root_vel"], atol=1e-6, rtol=0)
    torch.testing.assert_close(s.body_angvel[ids, 0].double(), st["root_angvel"], atol=1e-6, rtol=0)
    torch.testing.assert_close(s.dof_pos[ids].double(), st["dof_pos"], atol=1e-6, rtol=0)
    torch.testing.assert_close(s.dof_vel[ids].double(), st["dof_vel"], atol=1e-6, rtol=0)
    # every body where forward kinematics puts it
    global_rot = fk.local_to_global(fk.dof_to_local(st["root_rot"], st["dof_pos"]))
    positions = fk.body_positions(st["root_pos"], global_rot)
    torch.testing.assert_close(s.body_pos[ids].double(), positions, atol=1e-5, rtol=0)
    assert same_rotation(s.body_rot[ids], global_rot)
    # untouched envs keep standing; shapes and dtypes per the contract
    torch.testing.assert_close(s.body_pos[[1, 3]], standing[[1, 3]])
    assert s.body_rot.shape == (4, 24, 4) and s.dof_vel.shape == (4, 69) and s.body_vel.dtype == torch.float32
    assert torch.all(backend.actuator_forces()[ids] == 0)
    backend.close()


def test_body_state_is_current_after_step_and_matches_mujoco_object_velocity():
    backend = MujocoCPUBackend(3, num_threads=2)
    backend.set_state(torch.arange(3), **random_state(3, seed=2, height=1.0, speed=2.0))
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        backend.step(torch.randn(3, skeleton.NUM_DOFS, generator=gen))
    s = backend.state()
    res = np.empty(6)
    for env in range(3):
        data = mujoco_data_from_state(backend.model, s, env)
        # positions recomputed from the reported qpos agree: no one-substep lag
        np.testing.assert_allclose(s.body_pos[env].numpy(), data.xpos[1:], atol=1e-5)
        for name in ("Pelvis", "L_Toe", "Head", "R_Hand", "L_Elbow"):
            body = skeleton.BODY_INDEX[name]
            # XBODY: the body frame's origin (mjOBJ_BODY would be its centre of mass)
            mujoco.mj_objectVelocity(backend.model, data, mujoco.mjtObj.mjOBJ_XBODY, body + 1, res, 0)
            np.testing.assert_allclose(s.body_angvel[env, body].numpy(), res[:3], atol=1e-4)
            np.testing.assert_allclose(s.body_vel[env, body].numpy(), res[3:], atol=1e-4)
    backend.close()


def test_body_velocities_match_finite_differences_of_poses():
    backend = MujocoCPUBackend(2, num_threads=1, substeps=1)
    st = random_state(2, seed=4, height=3.0, speed=0.5)
    backend.set_state(torch.arange(2), **st)
    s0 = backend.state()
    backend.step(st["dof_pos"].float())  # hold the pose
    s1 = backend.state()
    dt = backend.control_dt
    # semi-implicit Euler moves q by dt * (new qvel): the pose change over one step follows the new velocities
    assert s1.body_vel.abs().max() > 0.5 and s1.body_angvel.abs().max() > 0.5
    fd_vel = (s1.body_pos.double() - s0.body_pos.double()) / dt
    torch.testing.assert_close(fd_vel, s1.body_vel.double(), atol=0.03, rtol=0.02)
    dq = quat_mul(s1.body_rot.double(), quat_conjugate(s0.body_rot.double()))
    dq = torch.where(dq[..., 3:4] < 0, -dq, dq)
    fd_angvel = 2.0 * dq[..., :3] / dt  # small rotations: angle * axis ~ 2 * xyz
    torch.testing.assert_close(fd_angvel, s1.body_angvel.double(), atol=0.01, rtol=0.01)
    backend.close()


def test_actuator_forces_are_pd_torques_in_dof_order():
    backend = MujocoCPUBackend(2, num_threads=1, substeps=1)
    st = random_state(2, seed=5)
    backend.set_state(torch.arange(2), **st)
    targets = torch.randn(2, skeleton.NUM_DOFS, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    backend.step(targets.float())
    kp = torch.tensor([skeleton.PD_GAINS[n[:-2]][0] for n in skeleton.DOF_NAMES], dtype=torch.float64)
    kd = torch.tensor([skeleton.PD_GAINS[n[:-2]][1] for n in skeleton.DOF_NAMES], dtype=torch.float64)
    expected = kp * (targets.float().double() - st["dof_pos"]) - kd * st["dof_vel"]
    torch.testing.assert_close(backend.actuator_forces().double(), expected, atol=1e-2, rtol=1e-5)
    backend.close()


def test_step_moves_one_hinge_toward_its_target():
    backend = MujocoCPUBackend(2, num_threads=1)
    before = backend.state().body_pos.clone()
    dof = skeleton.DOF_NAMES.index("R_Shoulder_x")
    targets = torch.zeros(2, skeleton.NUM_DOFS)
    targets[0, dof] = 0.6
    backend.step(targets)
    assert backend.actuator_forces()[0, dof] > 0
    for _ in range(14):  # 0.5 s in all
        backend.step(targets)
    s = backend.state()
    assert abs(float(s.dof_pos[0, dof]) - 0.6) < 0.1
    assert abs(float(s.dof_pos[1, dof])) < 0.05
    assert not torch.equal(s.body_pos, before)
    assert backend.control_dt == pytest.approx(skeleton.CONTROL_DT) and backend.substeps == skeleton.SUBSTEPS
    backend.close()


@pytest.mark.skipif(mj_batch is None, reason="needs mujoco.batch (MuJoCo >= 4.0)")
def test_batch_and_thread_steppers_give_identical_results():
    backends = [MujocoCPUBackend(5, stepper=name, num_threads=2) for name in ("batch", "threads")]
    gen = torch.Generator().manual_seed(7)
    for k in range(6):
        if k == 2:
            st = random_state(2, seed=8, height=1.0)
            for b in backends:
                b.set_state(torch.tensor([3, 1]), **st)
        targets = 0.5 * torch.randn(5, skeleton.NUM_DOFS, generator=gen)
        for b in backends:
            b.step(targets)
    states = [b.state() for b in backends]
    for field in FIELDS:
        assert torch.equal(getattr(states[0], field), getattr(states[1], field)), field
    assert torch.equal(backends[0].actuator_forces(), backends[1].actuator_forces())
    for b in backends:
        b.close()


@pytest.mark.parametrize("stepper", STEPPERS)
@pytest.mark.parametrize("bad", ["nan_dof_vel", "huge_root_vel", "root_far_away"])
def test_unstable_env_is_flagged_and_reset_without_touching_others(stepper, bad):
    clean, broken = (MujocoCPUBackend(3, stepper=stepper, num_threads=2) for _ in range(2))
    st = random_state(3, seed=9, height=1.0)
    for b in (clean, broken):
        b.set_state(torch.arange(3), **st)
    st1 = {k: v[1:2].clone() for k, v in st.items()}
    if bad == "nan_dof_vel":
        st1["dof_vel"][0, 10] = math.nan
    elif bad == "huge_root_vel":
        st1["root_vel"][0, 0] = 2e4
    else:
        st1["root_pos"][0, 0] = 2e3
    broken.set_state(torch.tensor([1]), **st1)
    targets = 0.3 * torch.randn(3, skeleton.NUM_DOFS, generator=torch.Generator().manual_seed(10))
    for b in (clean, broken):
        b.step(targets)
    assert broken.unstable().tolist() == [False, True, False]
    assert not clean.unstable().any()
    s, ref = broken.state(), clean.state()
    for field in FIELDS:
        assert torch.isfinite(getattr(s, field)).all(), field
        assert torch.equal(getattr(s, field)[[0, 2]], getattr(ref, field)[[0, 2]]), field
    # the flagged env stands in the rest pose
    assert torch.equal(s.dof_pos[1], torch.zeros(skeleton.NUM_DOFS))
    torch.testing.assert_close(s.body_pos[1, 0], torch.tensor(broken.model.qpos0[:3], dtype=torch.float32))
    broken.step(targets)
    assert not broken.unstable().any()
    # and again: a second blow-up of the same env is caught too
    broken.set_state(torch.tensor([1]), **st1)
    broken.step(targets)
    assert broken.unstable().tolist() == [False, True, False]
    for b in (clean, broken):
        b.close()


def test_bad_inputs_raise_clear_errors(tmp_path):
    backend = MujocoCPUBackend(2, num_threads=1)
    with pytest.raises(ValueError, match=r"pd_targets must have shape \(2, 69\)"):
        backend.step(torch.zeros(3, 69))
    st = random_state(1, seed=11)
    with pytest.raises(ValueError, match="dof_pos must have shape"):
        backend.set_state(torch.tensor([0]), **{**st, "dof_pos": torch.zeros(1, 68)})
    with pytest.raises(ValueError, match="env_ids must lie in"):
        backend.set_state(torch.tensor([2]), **st)
    st2 = random_state(2, seed=11)
    with pytest.raises(ValueError, match="duplicates"):
        backend.set_state(torch.tensor([1, 1]), **st2)
    backend.close()
    with pytest.raises(ValueError, match="stepper must be"):
        MujocoCPUBackend(1, stepper="gpu")
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        load_model(tmp_path / "missing.xml")
    tiny = tmp_path / "tiny.xml"
    tiny.write_text("<mujoco><worldbody><body name='Pelvis'><freejoint/><geom size='0.1'/></body></worldbody></mujoco>")
    with pytest.raises(ValueError, match="tiny.xml: bodies"):
        MujocoCPUBackend(1, xml_path=str(tiny))


def test_factory_builds_mujoco_and_rejects_other_names():
    backend = make_backend("mujoco", 2, num_threads=1)
    assert isinstance(backend, MujocoCPUBackend) and backend.num_envs == 2
    assert backend.device == torch.device("cpu")
    backend.close()
    with pytest.raises(ValueError, match="backend 'isaacgym' is not available in this build"):
        make_backend("isaacgym", 2)
    with pytest.raises(ValueError, match="known backends: mujoco, mujoco_warp, isaacgym"):
        make_backend("bullet", 2)
