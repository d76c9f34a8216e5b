"""Forward kinematics helpers of motion/fk.py."""

import torch

from phc_lightning.core.rotations import quat_from_euler_xyz, quat_normalize
from phc_lightning.motion import fk


def same_rotation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.minimum((p - q).abs().amax(-1), (p + q).abs().amax(-1)).max()


def test_hinge_angles_reproduce_random_local_rotations() -> None:
    local = fk.global_to_local(quat_normalize(torch.randn(64, 24, 4, generator=torch.Generator().manual_seed(0))))
    back = fk.dof_to_local(local[:, 0], fk.local_to_dof(local))
    assert same_rotation(local, back) < 1e-5


def test_a_knee_bending_past_90_degrees_keeps_continuous_hinge_angles() -> None:
    bend = torch.cat([torch.linspace(0, 2.5, 40), torch.linspace(2.5, 0, 40)])  # 0 -> 143 deg -> 0 about y
    local = torch.zeros(80, 24, 4)
    local[..., 3] = 1
    local[:, 2] = quat_from_euler_xyz(torch.stack([torch.zeros_like(bend), bend, torch.zeros_like(bend)], -1))
    starts = torch.zeros(80, dtype=torch.bool)
    starts[0] = True
    dof = fk.continuous_hinge_branch(fk.local_to_dof(local), starts)
    knee = dof[:, 3:6]
    torch.testing.assert_close(knee[:, 1], bend, atol=1e-5, rtol=0)  # a pure y bend all the way
    assert knee[:, [0, 2]].abs().max() < 1e-5
    assert (dof[1:] - dof[:-1]).abs().max() < 0.1  # no jumps
    assert same_rotation(local, fk.dof_to_local(local[:, 0], dof)) < 1e-5
