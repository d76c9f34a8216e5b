"""Left-right mirroring of the tracking task: observations, hinge vectors and simulator states.

The humanoid and the task are (nearly) symmetric about the sagittal plane, the x-z plane of the heading frame
(left = +y). Mirroring a state reflects every position and velocity through that plane (``y -> -y``), turns every
rotation ``R`` into ``M R M`` with ``M = diag(1, -1, 1)`` and swaps each left body with its right twin:

================  ==============================  ============================================================
quantity          kind                            mirrored
================  ==============================  ============================================================
position, vel.    polar vector                    ``(x, -y, z)``, bodies swapped
angular vel.      axial vector                    ``(-x, y, -z)``, bodies swapped
quaternion xyzw   rotation                        ``(-x, y, -z, w)``, bodies swapped
tan-norm 6D       two rotated axes (polar)        entries 1 and 4 negated, bodies swapped
hinge angles      ``_x, _y, _z`` hinges           ``(-x, y, -z)``, bodies swapped (each hinge axis maps to itself)
================  ==============================  ============================================================

Every observation vector is expressed in the simulated root's heading frame, which mirrors into the mirrored
root's heading frame, so the observation of a mirrored state is :func:`mirror_obs` of the observation. The SMPL
body's offsets are symmetric to a few millimetres, not exactly: a mirrored state is a state of a body a few
millimetres different, which is what makes mirroring a data augmentation and not an identity of the dynamics.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.sim.base import SimState
from phc_lightning.task.observations import OBS_DIM, SELF_OBS_DIM, TASK_OBS_DIM

Tensor = torch.Tensor


def _twin(name: str) -> str:
    if name.startswith("L_"):
        return "R_" + name[2:]
    if name.startswith("R_"):
        return "L_" + name[2:]
    return name


BODY_MIRROR: Tuple[int, ...] = tuple(skeleton.BODY_INDEX[_twin(name)] for name in skeleton.BODY_NAMES)
"""Index of each body's mirror twin (itself on the midline)."""

_POLAR = (1.0, -1.0, 1.0)
_AXIAL = (-1.0, 1.0, -1.0)
_TAN_NORM = (1.0, -1.0, 1.0, 1.0, -1.0, 1.0)


def _per_body(bodies: Sequence[int], signs: Sequence[float]) -> Tuple[list, list]:
    """Gather index and sign of a feature block holding ``len(signs)`` values for each body of ``bodies``."""
    width = len(signs)
    slot = {body: k for k, body in enumerate(bodies)}
    index, sign = [], []
    for body in bodies:
        twin = slot[BODY_MIRROR[body]]
        index += [twin * width + j for j in range(width)]
        sign += list(signs)
    return index, sign


def obs_mirror(obs_dim: int = OBS_DIM) -> Tuple[Tensor, Tensor]:
    """``(index, sign)`` with ``mirrored = obs[..., index] * sign`` for an observation of ``obs_dim`` features: the
    self features, then the task features of one or more reference frames (layout in
    :mod:`phc_lightning.task.observations`).

    Raises:
        ValueError: ``obs_dim`` is not the size of such an observation.
    """
    frames, rest = divmod(obs_dim - SELF_OBS_DIM, TASK_OBS_DIM)
    if frames < 1 or rest:
        raise ValueError(f"no observation layout has {obs_dim} features (934 + 576 per extra reference frame)")
    every = list(range(skeleton.NUM_BODIES))
    blocks = [
        ([0], [1.0]),                          # root height
        _per_body(every[1:], _POLAR),          # non-root positions relative to the root
        _per_body(every, _TAN_NORM),           # rotations
        _per_body(every, _POLAR),              # linear velocities
        _per_body(every, _AXIAL),              # angular velocities
    ]
    blocks += frames * [
        _per_body(every, _POLAR),              # Δpos
        _per_body(every, _TAN_NORM),           # Δrot
        _per_body(every, _POLAR),              # Δvel
        _per_body(every, _AXIAL),              # Δangvel
        _per_body(every, _POLAR),              # reference positions relative to the root
        _per_body(every, _TAN_NORM),           # reference rotations
    ]
    index, sign, start = [], [], 0
    for block_index, block_sign in blocks:
        index += [start + i for i in block_index]
        sign += block_sign
        start += len(block_index)
    assert start == obs_dim, start
    return torch.tensor(index, dtype=torch.long), torch.tensor(sign)


def _dof_mirror() -> Tuple[Tensor, Tensor]:
    """``(index, sign)`` over the 69 hinges (body order, ``x, y, z`` each)."""
    index, sign = _per_body(list(range(1, skeleton.NUM_BODIES)), _AXIAL)
    return torch.tensor(index, dtype=torch.long), torch.tensor(sign)


DOF_MIRROR_INDEX, DOF_MIRROR_SIGN = _dof_mirror()


class Mirror:
    """Mirrors observations ``(..., obs_dim)`` and actions ``(..., C)`` over the controlled hinges ``controlled``
    (``C`` indices into the 69 hinges, as :class:`~phc_lightning.task.actions.ActionInterface` keeps them).

    Raises:
        ValueError: the controlled hinges are not left-right symmetric (a body controlled without its twin).
    """

    def __init__(self, controlled: Tensor, obs_dim: int = OBS_DIM) -> None:
        controlled = controlled.long().cpu()
        position = {int(d): k for k, d in enumerate(controlled.tolist())}
        twins = DOF_MIRROR_INDEX[controlled].tolist()
        missing = [skeleton.DOF_NAMES[d] for d in twins if d not in position]
        if missing:
            raise ValueError(f"mirroring needs left-right symmetric controlled hinges; missing twins {missing}")
        self.action_index = torch.tensor([position[d] for d in twins], dtype=torch.long)
        self.action_sign = DOF_MIRROR_SIGN[controlled].clone()
        self.obs_index, self.obs_sign = obs_mirror(obs_dim)
        self._on_device: Dict[torch.device, Tuple[Tensor, ...]] = {}

    def _tables(self, device: torch.device) -> Tuple[Tensor, ...]:
        if device not in self._on_device:
            self._on_device[device] = tuple(
                t.to(device) for t in (self.obs_index, self.obs_sign, self.action_index, self.action_sign)
            )
        return self._on_device[device]

    def obs(self, obs: Tensor) -> Tensor:
        """The observation of the mirrored state, ``(..., obs_dim)``."""
        index, sign, _, _ = self._tables(obs.device)
        return obs[..., index] * sign.to(obs.dtype)

    def actions(self, actions: Tensor) -> Tensor:
        """The mirrored actions ``(..., C)``: hinge offsets for the mirrored state (the action scale is
        left-right symmetric, so scaled and unscaled actions mirror alike)."""
        _, _, index, sign = self._tables(actions.device)
        return actions[..., index] * sign.to(actions.dtype)


    def with_image(self, batch: Dict[str, Tensor], keys: Sequence[str]) -> Dict[str, Tensor]:
        """The rows of ``batch`` (its entries ``keys``) followed by their mirror image: mirrored ``obs`` and
        ``actions``, every other of ``keys`` repeated (a symmetric task gives the mirror image the same log-prob under
        the mirrored behaviour, the same value, advantage and return). Entries not in ``keys`` (AMP's samples) pass
        through as they are."""
        out = dict(batch)
        out.update({key: torch.cat([batch[key], batch[key]]) for key in keys})
        out["obs"] = torch.cat([batch["obs"], self.obs(batch["obs"])])
        out["actions"] = torch.cat([batch["actions"], self.actions(batch["actions"])])
        return out


def mirror_for_policy(enabled: bool, controlled: Tensor, recurrent: Optional[str], obs_dim: int = OBS_DIM
                      ) -> Optional[Mirror]:
    """The :class:`Mirror` of a policy trained with ``model.mirror_augment`` (None when off).

    Raises:
        ConfigError: a recurrent policy (its memory has no mirror image) or unpaired controlled hinges.
    """
    if not enabled:
        return None
    if recurrent:
        raise ConfigError("model.mirror_augment: a recurrent policy's memory cannot be mirrored; "
                          "set model.recurrent null or model.mirror_augment false")
    try:
        return Mirror(controlled, obs_dim)
    except ValueError as err:
        raise ConfigError(f"model.mirror_augment: {err}") from None


def mirror_state(state: SimState) -> SimState:
    """The mirror image of a state (every field ``(N, 24, *)``, ``dof_* (N, 69)``), in the same world frame
    reflected through its x-z plane."""
    bodies = torch.tensor(BODY_MIRROR, device=state.body_pos.device)
    polar = torch.tensor(_POLAR, device=state.body_pos.device)
    axial = torch.tensor(_AXIAL, device=state.body_pos.device)
    quat = torch.tensor(_AXIAL + (1.0,), device=state.body_pos.device)
    dofs, dof_sign = DOF_MIRROR_INDEX.to(state.dof_pos.device), DOF_MIRROR_SIGN.to(state.dof_pos.device)
    return SimState(
        body_pos=state.body_pos[:, bodies] * polar,
        body_rot=state.body_rot[:, bodies] * quat,
        body_vel=state.body_vel[:, bodies] * polar,
        body_angvel=state.body_angvel[:, bodies] * axial,
        dof_pos=state.dof_pos[:, dofs] * dof_sign,
        dof_vel=state.dof_vel[:, dofs] * dof_sign,
    )
