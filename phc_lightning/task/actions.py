"""The action interface: what a policy's output means as PD targets.

PHC: ``target = scale * clip(a, -1, 1)`` on 57 controlled hinges (scale pi, knee flexion 5), hands and toes frozen
at 0. Residual mode adds the next reference frame's hinge angles, so a zero action holds the reference pose.

The interface belongs to the policy (the network's output only means something under it), so
:class:`~phc_lightning.learner.module.PHCModule` builds it from its own hyperparameters and saves them in checkpoints;
the env takes PD targets and never interprets actions itself.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.errors import ConfigError

Tensor = torch.Tensor

PHC_DOF_ACTION_SCALE: Dict[str, float] = {
    "L_Knee_y": skeleton.KNEE_ACTION_SCALE,
    "R_Knee_y": skeleton.KNEE_ACTION_SCALE,
}
"""PHC's per-DoF exceptions to the common action scale: the knee flexion hinges."""

ACTION_INTERFACE_KEYS = ("residual_actions", "action_scale", "dof_action_scale", "frozen_bodies")
"""``PHCModule`` hyperparameters that define what the policy's output means; a checkpoint is only valid under its
own."""


class ActionInterface:
    """Maps policy actions ``(N, C)`` over the ``C`` controlled hinges to PD targets ``(N, 69)``.

    Args:
        residual: add the reference frame's hinge angles to the scaled action (PHC: False).
        scale: action scale of every controlled hinge, radians per unit action (PHC: pi).
        dof_scale: per-DoF exceptions by DoF name (e.g. ``{"L_Knee_y": 5.0}``); None means PHC's knees.
        frozen_bodies: bodies whose three hinges are held at 0 and are not part of the action (PHC: toes, hands).
    """

    def __init__(
        self,
        residual: bool = False,
        scale: float = math.pi,
        dof_scale: Optional[Mapping[str, float]] = None,
        frozen_bodies: Sequence[str] = skeleton.FROZEN_BODIES,
    ) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"action_scale must be a positive number of radians, got {scale}")
        dof_scale = dict(PHC_DOF_ACTION_SCALE if dof_scale is None else dof_scale)
        unknown = sorted(set(dof_scale) - set(skeleton.DOF_NAMES))
        if unknown:
            raise ConfigError(f"dof_action_scale: unknown DoF names {unknown} (names look like 'L_Knee_y')")
        for name, value in dof_scale.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"dof_action_scale[{name!r}] must be positive, got {value}")
        bad = sorted(set(frozen_bodies) - set(skeleton.BODY_NAMES[1:]))
        if bad:
            raise ConfigError(f"frozen_bodies: unknown or root bodies {bad}")
        frozen = {d for body in frozen_bodies for d in skeleton.body_dofs(body)}
        self.residual = bool(residual)
        self.controlled = torch.tensor([d for d in range(skeleton.NUM_DOFS) if d not in frozen], dtype=torch.long)
        full = torch.full((skeleton.NUM_DOFS,), float(scale))
        for name, value in dof_scale.items():
            full[skeleton.DOF_NAMES.index(name)] = float(value)
        self.scale = full[self.controlled]
        """``(C,)`` radians per unit action of each controlled hinge."""
        self._on_device: Dict[torch.device, Any] = {}

    @property
    def num_actions(self) -> int:
        """``C``: the number of controlled hinges, i.e. the policy's action size."""
        return int(self.controlled.numel())

    def pd_targets(self, actions: Tensor, ref_dof_pos: Optional[Tensor] = None) -> Tensor:
        """PD targets in radians.

        Args:
            actions: ``(N, C)`` policy outputs; values outside [-1, 1] are clipped.
            ref_dof_pos: ``(N, 69)`` reference hinge angles of the frame the action aims at (required when residual).

        Returns:
            ``(N, 69)`` hinge targets; frozen hinges are 0.
        """
        if actions.dim() != 2 or actions.shape[1] != self.num_actions:
            raise ValueError(f"ActionInterface: actions must have shape (N, {self.num_actions}), "
                             f"got {tuple(actions.shape)}")
        # Called every env step: keep one copy of the index and scale per device instead of copying each time.
        if actions.device not in self._on_device:
            self._on_device[actions.device] = (self.controlled.to(actions.device), self.scale.to(actions.device))
        controlled, scale = self._on_device[actions.device]
        offset = scale.to(actions.dtype) * actions.clamp(-1.0, 1.0)
        if self.residual:
            if ref_dof_pos is None:
                raise ValueError("ActionInterface: residual actions need the reference hinge angles")
            offset = offset + ref_dof_pos.to(actions.device, actions.dtype)[:, controlled]
        targets = actions.new_zeros(actions.shape[0], skeleton.NUM_DOFS)
        targets[:, controlled] = offset
        return targets


def check_action_interface(saved: Dict[str, Any], current: Dict[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` naming the first action-interface hyperparameter that differs.

    Checkpoints written before the interface was saved (no such keys) are accepted as they are.
    """
    for key in ACTION_INTERFACE_KEYS:
        if key not in saved:
            continue
        old, new = saved[key], current.get(key)
        if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
            old, new = list(old), list(new)
        if old != new:
            raise ConfigError(
                f"{source}: the checkpoint's policy was trained with model.{key}={old!r}, this config says {new!r}; "
                f"use the run's own config (or set --model.{key} to match)"
            )
