"""The anchor of the L2-to-init term: a snapshot of the policy parameters that ``model.l2_init_coef`` pulls towards.

``PHCModule`` keeps one only when the coefficient is non-zero (at 0 the term is neither allocated, computed nor
logged). Its buffers are named after the policy parameters (``.`` -> ``__``), so they follow the module's device and
land in checkpoints as ``l2_anchor.<name>``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from phc_lightning.rl import ppo

Tensor = torch.Tensor

PREFIX = "l2_anchor."
"""State-dict prefix of the anchor's buffers inside ``PHCModule``."""


def _key(name: str) -> str:
    return name.replace(".", "__")


class L2Anchor(nn.Module):
    """A copy of ``policy``'s parameters (taken now; :meth:`reset` takes it again)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        for name, param in policy.named_parameters():
            self.register_buffer(_key(name), param.detach().clone())

    @torch.no_grad()
    def reset(self, policy: nn.Module) -> None:
        """Snapshot ``policy``'s current parameters (e.g. after a warm start)."""
        for name, param in policy.named_parameters():
            getattr(self, _key(name)).copy_(param)

    def distance(self, policy: nn.Module) -> Tensor:
        """Sum of squared differences between ``policy``'s parameters and the anchor (scalar)."""
        named = list(policy.named_parameters())
        return ppo.l2_init_loss([p for _, p in named], [getattr(self, _key(name)) for name, _ in named])


def fit_checkpoint_to_anchor(state_dict: Dict[str, Any], anchor: Optional[L2Anchor]) -> None:
    """Make a checkpoint's ``state_dict`` load into a module with (or without) an anchor, in place.

    Checkpoints from before the anchor was skipped at ``l2_init_coef`` 0 hold one the module no longer has: it is
    dropped. A checkpoint without one loaded into a module that keeps one anchors at the checkpoint's own policy
    weights, as a warm start does.
    """
    if anchor is None:
        for key in [k for k in state_dict if k.startswith(PREFIX)]:
            del state_dict[key]
        return
    if any(k.startswith(PREFIX) for k in state_dict):
        return
    for name, _ in anchor.named_buffers():
        state_dict[PREFIX + name] = state_dict["policy." + name.replace("__", ".")].clone()
