"""The contract every physics backend fulfils.

A backend only simulates N copies of the SMPL humanoid (``assets/smpl_humanoid.xml``): it sets full
states, applies PD targets, steps ``substeps`` physics steps per control step and exposes the state as
torch tensors on ``device``. It knows nothing about motions, observations or rewards.

Conventions (all tensors ``float32`` on ``device``):

====================  ==============  ==========================================================
field                 shape           meaning
====================  ==============  ==========================================================
``body_pos``          (N, 24, 3)      world position of each body origin, metres, z up
``body_rot``          (N, 24, 4)      world orientation, quaternion **xyzw**, relative to T-pose
``body_vel``          (N, 24, 3)      world linear velocity of each body origin, m/s
``body_angvel``       (N, 24, 3)      world angular velocity, rad/s
``dof_pos``           (N, 69)         hinge angles, body order, x/y/z per body, radians
``dof_vel``           (N, 69)         hinge velocities, rad/s
====================  ==============  ==========================================================

Body order is :data:`phc_lightning.core.skeleton.BODY_NAMES`. The state read after :meth:`step` or
:meth:`set_state` is consistent with the current generalized coordinates (no one-step lag).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from phc_lightning.core import skeleton

Tensor = torch.Tensor


def check_state_shapes(
    num: int, root_pos: Tensor, root_rot: Tensor, root_vel: Tensor, root_angvel: Tensor, dof_pos: Tensor,
    dof_vel: Tensor,
) -> None:
    """Raise ValueError unless the :meth:`PhysicsBackend.set_state` arguments have ``num`` rows of their widths."""
    expected = {
        "root_pos": (root_pos, 3), "root_rot": (root_rot, 4), "root_vel": (root_vel, 3),
        "root_angvel": (root_angvel, 3), "dof_pos": (dof_pos, skeleton.NUM_DOFS),
        "dof_vel": (dof_vel, skeleton.NUM_DOFS),
    }  # fmt: skip
    for name, (value, width) in expected.items():
        if tuple(value.shape) != (num, width):
            raise ValueError(f"set_state: {name} must have shape ({num}, {width}), got {tuple(value.shape)}")


@dataclass
class SimState:
    """Full rigid-body state of N humanoids; shapes in the module docstring."""

    body_pos: Tensor
    body_rot: Tensor
    body_vel: Tensor
    body_angvel: Tensor
    dof_pos: Tensor
    dof_vel: Tensor

    def rows(self, index: Tensor) -> SimState:
        """The rows ``index`` (indices or a mask) of every field."""
        return SimState(**{name: getattr(self, name)[index] for name in SimState.__dataclass_fields__})


class PhysicsBackend(abc.ABC):
    """N simulated humanoids with PD control at 30 Hz."""

    num_envs: int
    device: torch.device
    substeps: int
    control_dt: float

    @abc.abstractmethod
    def set_state(
        self,
        env_ids: Tensor,
        root_pos: Tensor,
        root_rot: Tensor,
        root_vel: Tensor,
        root_angvel: Tensor,
        dof_pos: Tensor,
        dof_vel: Tensor,
    ) -> None:
        """Overwrite the full state of envs ``env_ids [M]`` (long).

        Args:
            env_ids: which envs to set, ``(M,)``.
            root_pos: pelvis world position ``(M, 3)``.
            root_rot: pelvis world orientation, xyzw ``(M, 4)``.
            root_vel: pelvis world linear velocity ``(M, 3)``.
            root_angvel: pelvis world angular velocity ``(M, 3)``.
            dof_pos: hinge angles ``(M, 69)``.
            dof_vel: hinge velocities ``(M, 69)``.
        """

    def set_state_from(self, env_ids: Tensor, state: SimState) -> None:
        """Put envs ``env_ids`` on ``state`` (``M`` rows, e.g. a motion library lookup): root from body 0."""
        self.set_state(
            env_ids,
            state.body_pos[:, 0],
            state.body_rot[:, 0],
            state.body_vel[:, 0],
            state.body_angvel[:, 0],
            state.dof_pos,
            state.dof_vel,
        )

    def set_state_where(self, mask: Tensor, state: SimState) -> None:
        """Put the envs where ``mask (N,)`` bool is set on the matching rows of ``state`` (N rows, root from body 0);
        the others keep their state. Shapes stay fixed, so a device-resident backend overrides this without reading
        ``mask`` on the host; this default selects the rows by index (one host read)."""
        ids = mask.nonzero().squeeze(-1)
        self.set_state_from(ids, state.rows(ids))

    def host_indices(self, mask: Tensor) -> Optional[Tensor]:
        """The envs selected by ``mask (N,)`` bool as indices ``(K,)`` where this backend reads masks on the host
        anyway (MuJoCo on the CPU exchanges its state through numpy every step), so a caller can work on just those
        rows; None where it does not (a device-resident backend): the caller then keeps fixed shapes, masked ops
        over all N envs, and never reads the mask on the host."""
        return None

    def check_errors(self) -> None:  # noqa: B027 - optional hook, a no-op for backends whose errors are immediate
        """Raise an error the backend noticed on the device but did not read back during :meth:`step` (which never
        waits for the device): call it once per batch of steps, e.g. per rollout."""

    @abc.abstractmethod
    def step(self, pd_targets: Tensor) -> None:
        """Hold PD targets ``(N, 69)`` (radians) for ``substeps`` physics steps.

        Envs whose state became non-finite or exploded are flagged in :meth:`unstable` and restored to a
        finite state by the backend itself, so one bad env never stops the run.
        """

    @abc.abstractmethod
    def state(self) -> SimState:
        """The current state of all envs (see the module table)."""

    @abc.abstractmethod
    def actuator_forces(self) -> Tensor:
        """Joint torques applied by the PD actuators in the last physics step, ``(N, 69)``, N·m."""

    @abc.abstractmethod
    def unstable(self) -> Tensor:
        """``(N,)`` bool: envs that went NaN or exploded in the last :meth:`step` (the caller resets them)."""

    @abc.abstractmethod
    def get_physics_state(self) -> Dict[str, Tensor]:
        """Everything that determines the next steps of all envs (positions, velocities, solver warm start, last
        torques), as CPU tensors, so a checkpoint can continue the simulation bit for bit."""

    @abc.abstractmethod
    def set_physics_state(self, state: Dict[str, Tensor]) -> None:
        """Restore what :meth:`get_physics_state` returned (same number of envs)."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for backends with nothing to release
        """Release threads and native memory."""
