"""Reward kernels of the tracking task and the small manager that weighs and sums them.

Each kernel is a pure tensor function returning an *unweighted* ``(N,)`` value; the weight lives in the
term table (:meth:`phc_lightning.task.config.TaskConfig.reward_terms`), so PHC's reward

    0.5·exp(−100·mean Δp²) + 0.3·exp(−10·mean θ²) + 0.1·exp(−0.1·mean Δv²) + 0.1·exp(−0.1·mean Δω²) − 0.0005·Σ|τ·q̇|

is the sum of ``weight * kernel`` over the table. Differences are world-frame, ``ref − sim``; quaternions xyzw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

import torch

from phc_lightning.core.rotations import (
    heading_quat,
    heading_quat_inv,
    quat_angle,
    quat_conjugate,
    quat_mul,
    quat_rotate,
)
from phc_lightning.sim.base import SimState

Tensor = torch.Tensor


def body_pos_reward(body_pos: Tensor, ref_body_pos: Tensor, k: float) -> Tensor:
    """``exp(−k · mean Δp²)`` with the mean over bodies *and* xyz components (as PHC).

    Args:
        body_pos: simulated body positions ``(N, B, 3)``.
        ref_body_pos: reference body positions ``(N, B, 3)``.
        k: sharpness (PHC ``k_pos`` = 100).
    """
    return torch.exp(-k * (ref_body_pos - body_pos).square().mean(dim=(-2, -1)))


def root_pos_reward(body_pos: Tensor, ref_body_pos: Tensor, k: float) -> Tensor:
    """``exp(−k · |Δp_root|²)``: how close the root (pelvis) is to the reference root, with a kernel wide enough
    (k = 10/m²: 0.37 at 0.32 m) to still point back to the reference where the sharp all-body term is ~0
    (BeyondMimic's anchor position term; not in PHC).

    Args:
        body_pos: simulated body positions ``(N, B, 3)``, body 0 the root.
        ref_body_pos: reference body positions ``(N, B, 3)``.
        k: sharpness, 1/m².
    """
    return torch.exp(-k * (ref_body_pos[:, 0] - body_pos[:, 0]).square().sum(dim=-1))


def anchor_reference(body_pos: Tensor, body_rot: Tensor, ref_body_pos: Tensor, ref_body_rot: Tensor
                     ) -> Tuple[Tensor, Tensor]:
    """The reference pose moved onto the simulated root: turned about +z so its root heading is the sim root's,
    shifted so its root stands over the sim root (the reference root height is kept), as BeyondMimic re-anchors
    its reference bodies. What is left between the two is the pose error without the root's drift.

    Args:
        body_pos: simulated body positions ``(N, B, 3)``, body 0 the root.
        body_rot: simulated body rotations, xyzw ``(N, B, 4)``.
        ref_body_pos: reference body positions ``(N, B, 3)``.
        ref_body_rot: reference body rotations, xyzw ``(N, B, 4)``.

    Returns:
        The re-anchored reference positions ``(N, B, 3)`` and rotations ``(N, B, 4)``.
    """
    # The yaw that turns the reference heading into the sim heading: heading(sim) · heading(ref)⁻¹.
    turn = quat_mul(heading_quat(body_rot[:, 0]), heading_quat_inv(ref_body_rot[:, 0]))
    turn = turn.unsqueeze(1).expand_as(ref_body_rot)
    anchor = torch.cat([body_pos[:, :1, :2], ref_body_pos[:, :1, 2:]], dim=-1)
    pos = anchor + quat_rotate(turn, ref_body_pos - ref_body_pos[:, :1])
    return pos, quat_mul(turn, ref_body_rot)


def body_rot_reward(body_rot: Tensor, ref_body_rot: Tensor, k: float) -> Tensor:
    """``exp(−k · mean θ²)`` where θ is the angle of ``ref · sim⁻¹`` per body, mean over bodies.

    Args:
        body_rot: simulated body rotations, xyzw ``(N, B, 4)``.
        ref_body_rot: reference body rotations, xyzw ``(N, B, 4)``.
        k: sharpness (PHC ``k_rot`` = 10).
    """
    angle = quat_angle(quat_mul(ref_body_rot, quat_conjugate(body_rot)))
    return torch.exp(-k * angle.square().mean(dim=-1))


def body_vel_reward(body_vel: Tensor, ref_body_vel: Tensor, k: float) -> Tensor:
    """``exp(−k · mean Δv²)`` over bodies and components; velocities ``(N, B, 3)`` m/s (PHC ``k_vel`` = 0.1)."""
    return torch.exp(-k * (ref_body_vel - body_vel).square().mean(dim=(-2, -1)))


def body_angvel_reward(body_angvel: Tensor, ref_body_angvel: Tensor, k: float) -> Tensor:
    """``exp(−k · mean Δω²)`` over bodies and components; ``(N, B, 3)`` rad/s (PHC ``k_ang_vel`` = 0.1)."""
    return torch.exp(-k * (ref_body_angvel - body_angvel).square().mean(dim=(-2, -1)))


def power_penalty(actuator_forces: Tensor, dof_vel: Tensor, progress: Tensor, free_steps: int = 3) -> Tensor:
    """Negative mechanical power ``−Σ|τ·q̇|`` (W), zero for the first ``free_steps`` steps of an episode.

    The first steps after a reset are exempt because the reset state can carry transient torques the policy
    did not cause (PHC: ``power_reward[progress_buf <= 3] = 0``).

    Args:
        actuator_forces: joint torques ``(N, 69)`` N·m.
        dof_vel: hinge velocities ``(N, 69)`` rad/s.
        progress: steps since reset including the current one ``(N,)`` long.
        free_steps: number of exempt steps.
    """
    power = (actuator_forces * dof_vel).abs().sum(dim=-1)
    return torch.where(progress <= free_steps, torch.zeros_like(power), -power)


def reward_inputs(sim: SimState, ref: SimState, actuator_forces: Tensor, progress: Tensor,
                  anchored: bool = False) -> Dict[str, Tensor]:
    """The named tensors reward terms may read: ``body_*``/``dof_*`` (sim), ``ref_body_*``/``ref_dof_*``
    (reference at the same time), ``actuator_forces`` ``(N, 69)`` and ``progress`` ``(N,)``; with ``anchored``
    also ``anchored_ref_body_pos``/``_rot``, the reference moved onto the sim root (:func:`anchor_reference`),
    computed once for every term that reads them."""
    inputs = {name: getattr(sim, name) for name in SimState.__dataclass_fields__}
    inputs.update({f"ref_{name}": getattr(ref, name) for name in SimState.__dataclass_fields__})
    if anchored:
        inputs["anchored_ref_body_pos"], inputs["anchored_ref_body_rot"] = anchor_reference(
            sim.body_pos, sim.body_rot, ref.body_pos, ref.body_rot)
    inputs["actuator_forces"] = actuator_forces
    inputs["progress"] = progress
    return inputs


@dataclass
class RewardTerm:
    """One row of the reward table: ``weight * fn(*[inputs[k] for k in inputs], **params)``.

    Attributes:
        fn: kernel returning ``(N,)``.
        weight: multiplier applied to the kernel; the weighted value is what gets summed and logged.
        inputs: names of the tensors (keys of :func:`reward_inputs`) passed positionally to ``fn``.
        params: keyword constants for ``fn`` (sharpness, exempt steps ...).
    """

    fn: Callable[..., Tensor]
    weight: float
    inputs: Tuple[str, ...]
    params: Dict[str, float] = field(default_factory=dict)


class RewardManager:
    """Evaluates a term table, returns the total and each weighted term (for ``rewards/<term>`` logging)."""

    def __init__(self, terms: Dict[str, RewardTerm]) -> None:
        """Store the term table ``{name: RewardTerm}``; names become the ``rewards/<name>`` log keys."""
        if not terms:
            raise ValueError("RewardManager: the reward term table is empty")
        self.terms = dict(terms)

    def compute(self, inputs: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Total reward ``(N,)`` and the weighted value of each term ``{name: (N,)}``."""
        per_term: Dict[str, Tensor] = {}
        for name, term in self.terms.items():
            missing = [k for k in term.inputs if k not in inputs]
            if missing:
                raise KeyError(f"reward term '{name}': unknown inputs {missing}; available: {sorted(inputs)}")
            per_term[name] = term.weight * term.fn(*[inputs[k] for k in term.inputs], **term.params)
        total = torch.stack(list(per_term.values())).sum(dim=0)
        return total, per_term
