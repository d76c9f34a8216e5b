"""Policy actions to PD targets (PHC: ``target = scale * clip(a, -1, 1)``, no offset)."""

from __future__ import annotations

from typing import Optional

import torch

from phc_lightning import skeleton

Tensor = torch.Tensor


def action_scale(device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-DoF action scale ``(69,)``: pi, 5 for the knee flexion hinges, 0 for frozen hand/toe hinges.

    A zero scale pins the frozen hinges' targets at 0 whatever the policy outputs, so 57 DoF stay controlled.
    """
    scale = torch.full((skeleton.NUM_DOFS,), skeleton.ACTION_SCALE, dtype=dtype, device=device)
    scale[list(skeleton.KNEE_DOFS)] = skeleton.KNEE_ACTION_SCALE
    scale[list(skeleton.FROZEN_DOFS)] = 0.0
    return scale


def actions_to_pd_targets(actions: Tensor, scale: Tensor) -> Tensor:
    """PD targets in radians.

    Args:
        actions: policy outputs ``(N, 69)``; values outside [-1, 1] are clipped.
        scale: per-DoF scale ``(69,)`` from :func:`action_scale`.

    Returns:
        Hinge targets ``(N, 69)``.
    """
    return scale * actions.clamp(-1.0, 1.0)
