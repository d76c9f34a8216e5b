"""Left-right mirroring: the observation of a mirrored state is the mirrored observation, hinge angles mirror as
the local rotations they encode, and mirroring twice is the identity."""

from __future__ import annotations

import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_mul
from phc_lightning.motion import fk
from phc_lightning.task.actions import ActionInterface
from phc_lightning.task.mirror import BODY_MIRROR, Mirror, mirror_state
from phc_lightning.task.observations import OBS_DIM, TASK_OBS_DIM, compute_obs, compute_task_obs
from tests.task.test_terms import random_state


def test_every_body_has_its_twin_across_the_midline() -> None:
    names = [skeleton.BODY_NAMES[i] for i in BODY_MIRROR]
    assert names[skeleton.BODY_INDEX["L_Knee"]] == "R_Knee" and names[skeleton.BODY_INDEX["Head"]] == "Head"
    assert sorted(BODY_MIRROR) == list(range(skeleton.NUM_BODIES))


def test_the_observation_of_the_mirrored_states_is_the_mirrored_observation() -> None:
    sim, ref = random_state(seed=1), random_state(seed=2)
    mirror = Mirror(ActionInterface().controlled)
    obs = compute_obs(sim, ref)
    mirrored = compute_obs(mirror_state(sim), mirror_state(ref))
    assert obs.shape[-1] == OBS_DIM
    torch.testing.assert_close(mirror.obs(obs), mirrored, atol=1e-5, rtol=1e-5)
    # a non-trivial map: most entries change under it
    assert (mirror.obs(obs) - obs).abs().gt(1e-3).float().mean() > 0.5


def test_with_a_look_ahead_every_reference_frame_mirrors_alike() -> None:
    sim, near, far = random_state(seed=6), random_state(seed=7), random_state(seed=8)
    mirror = Mirror(ActionInterface().controlled, obs_dim=OBS_DIM + TASK_OBS_DIM)

    def observe(s, r1, r2):
        return torch.cat([compute_obs(s, r1), compute_task_obs(s, r2)], dim=-1)

    torch.testing.assert_close(mirror.obs(observe(sim, near, far)),
                               observe(*(mirror_state(x) for x in (sim, near, far))), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no observation layout has 1000 features"):
        Mirror(ActionInterface().controlled, obs_dim=1000)


def test_mirrored_hinge_angles_encode_the_mirrored_local_rotations() -> None:
    g = torch.Generator().manual_seed(3)
    dof = (torch.rand(4, skeleton.NUM_DOFS, generator=g) - 0.5) * 1.6
    root = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(4, 4)
    full = Mirror(torch.arange(skeleton.NUM_DOFS))
    local = fk.dof_to_local(root, dof)
    # M R M as a quaternion is (-x, y, -z, w); the twin body carries it
    expected = local[:, list(BODY_MIRROR)] * torch.tensor([-1.0, 1.0, -1.0, 1.0])
    got = fk.dof_to_local(root, full.actions(dof))
    dot = (expected * got).sum(-1).abs()  # q and -q are the same rotation
    torch.testing.assert_close(dot, torch.ones_like(dot), atol=1e-5, rtol=0)


def test_the_mirrored_pose_has_mirrored_body_positions() -> None:
    state = random_state(seed=4)
    mirrored = mirror_state(state)
    torch.testing.assert_close(fk.body_positions(mirrored.body_pos[:, 0], mirrored.body_rot),
                               fk.body_positions(state.body_pos[:, 0], state.body_rot)[:, list(BODY_MIRROR)]
                               * torch.tensor([1.0, -1.0, 1.0]), atol=0.02, rtol=0)  # SMPL is symmetric to ~1 cm


@pytest.mark.parametrize("frozen", [skeleton.FROZEN_BODIES, ()])
def test_mirroring_twice_is_the_identity(frozen: tuple) -> None:
    mirror = Mirror(ActionInterface(frozen_bodies=frozen).controlled)
    obs = torch.randn(3, OBS_DIM)
    actions = torch.randn(3, mirror.action_index.numel())
    torch.testing.assert_close(mirror.obs(mirror.obs(obs)), obs)
    torch.testing.assert_close(mirror.actions(mirror.actions(actions)), actions)
    state = random_state(seed=5)
    twice = mirror_state(mirror_state(state))
    torch.testing.assert_close(twice.body_rot, state.body_rot)
    torch.testing.assert_close(twice.dof_pos, state.dof_pos)


def test_controlled_hinges_without_their_twins_cannot_be_mirrored() -> None:
    with pytest.raises(ValueError, match="missing twins"):
        Mirror(ActionInterface(frozen_bodies=("L_Hand",)).controlled)


def test_a_yaw_mirror_is_a_rotation_of_the_mirror() -> None:
    # the heading of a mirrored root is minus the heading: check on a pure yaw
    q = torch.tensor([[0.0, 0.0, 0.3826834, 0.9238795]])  # 45 degrees about z
    mirrored = q * torch.tensor([-1.0, 1.0, -1.0, 1.0])
    torch.testing.assert_close(quat_mul(q, mirrored), torch.tensor([[0.0, 0.0, 0.0, 1.0]]), atol=1e-6, rtol=0)
