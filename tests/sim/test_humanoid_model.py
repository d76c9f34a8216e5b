"""The bundled SMPL humanoid MJCF agrees with skeleton.py and stands still with zero PD targets."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_mul, wxyz_to_xyzw
from phc_lightning.motion import fk
from phc_lightning.sim.mujoco_cpu import DEFAULT_XML, load_model

FOOT_NAMES = ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe")


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return load_model()


def test_bodies_follow_skeleton_names_order_and_offsets(model):
    assert model.body(0).name == "world"
    assert tuple(model.body(i).name for i in range(1, model.nbody)) == skeleton.BODY_NAMES
    parents = tuple(int(model.body_parentid[i]) - 1 for i in range(1, model.nbody))
    assert parents == skeleton.PARENTS
    np.testing.assert_allclose(model.body_pos[2:], np.array(skeleton.OFFSETS[1:]), atol=1e-12)
    np.testing.assert_allclose(model.body_quat[1:], np.tile([1.0, 0, 0, 0], (skeleton.NUM_BODIES, 1)))


def test_free_root_then_69_hinges_in_dof_order(model):
    assert model.njnt == 1 + skeleton.NUM_DOFS
    assert model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE and model.jnt_bodyid[0] == 1
    axes = np.eye(3)
    for j, name in enumerate(skeleton.DOF_NAMES):
        jnt = model.joint(j + 1)
        assert jnt.name == name
        assert jnt.type == mujoco.mjtJoint.mjJNT_HINGE
        assert jnt.qposadr[0] == 7 + j and jnt.dofadr[0] == 6 + j
        np.testing.assert_array_equal(jnt.axis, axes["xyz".index(name[-1])])
        assert model.body(int(jnt.bodyid[0])).name == name[:-2]
        assert jnt.limited[0] == 0
    np.testing.assert_allclose(model.dof_armature[6:], skeleton.ARMATURE)


def test_pd_actuators_carry_skeleton_gains_without_ctrl_limits(model):
    assert model.nu == skeleton.NUM_DOFS
    for a, name in enumerate(skeleton.DOF_NAMES):
        kp, kd = skeleton.PD_GAINS[name[:-2]]
        assert model.actuator_trnid[a, 0] == a + 1  # joint a + 1 = DoF a
        assert model.actuator_gainprm[a, 0] == kp
        np.testing.assert_array_equal(model.actuator_biasprm[a, :3], [0.0, -kp, -kd])
        assert not model.actuator_ctrllimited[a]


def test_options_mass_and_floor(model):
    assert model.opt.timestep == pytest.approx(skeleton.PHYSICS_DT)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    np.testing.assert_allclose(model.opt.gravity, [0.0, 0.0, -9.81])
    assert 65.0 <= model.body_mass.sum() <= 85.0
    floor = model.geom("floor")
    assert floor.type == mujoco.mjtGeom.mjGEOM_PLANE and floor.bodyid == 0
    friction = model.geom_friction[1:, 0]
    np.testing.assert_array_equal(friction, np.ones_like(friction))


def test_foot_box_soles_lie_sole_depth_below_body_origin(model):
    for name in FOOT_NAMES:
        body = model.body(name).id
        geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == body]
        assert len(geoms) == 1 and model.geom_type[geoms[0]] == mujoco.mjtGeom.mjGEOM_BOX
        g = geoms[0]
        np.testing.assert_allclose(model.geom_quat[g], [1.0, 0, 0, 0])
        sole = model.geom_pos[g, 2] - model.geom_size[g, 2]
        assert sole == pytest.approx(-skeleton.SOLE_DEPTH[name], abs=1e-9)


def test_rest_pose_touches_floor_with_lowest_sole_and_nothing_else(model):
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    soles = [data.xpos[model.body(n).id, 2] - skeleton.SOLE_DEPTH[n] for n in FOOT_NAMES]
    assert min(soles) == pytest.approx(0.0, abs=1e-9)
    floor = model.geom("floor").id
    touching = {model.geom_bodyid[c.geom2] for c in data.contact[: data.ncon] if c.geom1 == floor}
    assert data.ncon > 0 and all(floor in (c.geom1, c.geom2) for c in data.contact[: data.ncon])
    assert touching <= {model.body(n).id for n in FOOT_NAMES}


def test_hinges_compose_as_fk_dof_to_local(model):
    """MuJoCo's x, y, z hinges give the same global rotations and positions as fk (R_local = Rx Ry Rz)."""
    gen = torch.Generator().manual_seed(0)
    dof = (torch.rand(3, skeleton.NUM_DOFS, generator=gen, dtype=torch.float64) * 2 - 1) * np.pi
    root_rot = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen, dtype=torch.float64), dim=-1)
    root_pos = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    global_rot = fk.local_to_global(fk.dof_to_local(root_rot, dof))
    positions = fk.body_positions(root_pos, global_rot)
    data = mujoco.MjData(model)
    for i in range(3):
        data.qpos[:3] = root_pos[i].numpy()
        data.qpos[3:7] = root_rot[i, [3, 0, 1, 2]].numpy()
        data.qpos[7:] = dof[i].numpy()
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(data.xpos[1:], positions[i].numpy(), atol=1e-9)
        xquat = wxyz_to_xyzw(torch.from_numpy(data.xquat[1:].copy()))
        # same rotation up to the quaternion sign
        diff = quat_mul(xquat, global_rot[i] * torch.tensor([-1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
        np.testing.assert_allclose(diff[:, 3].abs().numpy(), 1.0, atol=1e-9)


def test_humanoid_stands_five_seconds_with_zero_targets(model):
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    start_height = data.qpos[2]
    heights = []
    for _ in range(int(round(5.0 / model.opt.timestep))):
        mujoco.mj_step(model, data)
        heights.append(data.qpos[2])
    assert np.all(np.abs(np.array(heights) - start_height) < 0.03)
    up = np.empty(9)
    mujoco.mju_quat2Mat(up, data.xquat[1])
    assert up[8] > 0.99  # pelvis z axis still points up
    assert not any(w.number for w in data.warning)


def test_default_xml_path_is_the_bundled_asset():
    assert DEFAULT_XML.name == "smpl_humanoid.xml" and DEFAULT_XML.is_file()
