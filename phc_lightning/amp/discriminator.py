"""The AMP discriminator and its losses as pure functions (PHC / ASE ``AMPAgent``).

``D(s)`` is a logit: high for demo (motion-library) samples, low for the agent's. Shapes: ``B`` rows, ``D`` the
stacked AMP observation size (``history * 196``); inputs are normalized by the learner's ``RunningNorm``.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from phc_lightning.rl.networks import layer_init

Tensor = torch.Tensor

REWARD_FLOOR = 1e-4
"""``1 - sigmoid(d)`` is floored here before the log, so the reward is bounded (``-log(1e-4) ≈ 9.2`` per scale)."""


class Discriminator(nn.Module):
    """ReLU MLP ``[B, D] -> [B]`` logits: ``Linear, ReLU, ..., Linear(1)``; the last layer is ``logits``.

    Args:
        in_dim: input size ``D``.
        hidden: hidden sizes (DESIGN: 1024, 512).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers = []
        sizes = [int(in_dim)] + [int(h) for h in hidden]
        for i in range(len(sizes) - 1):
            layers += [layer_init(nn.Linear(sizes[i], sizes[i + 1])), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.logits = layer_init(nn.Linear(sizes[-1], 1), gain=1.0)

    def forward(self, x_norm: Tensor) -> Tensor:
        """Logits ``[B]`` of normalized AMP observations ``[B, D]``."""
        return self.logits(self.trunk(x_norm)).squeeze(-1)

    def weights(self) -> Sequence[Tensor]:
        """Weight matrices of every layer (the weight decay's terms; biases excluded, as ASE)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]


def disc_reward(logits: Tensor, scale: float) -> Tensor:
    """``-log(max(1 - sigmoid(d), 1e-4)) * scale`` ``[B] -> [B]``: monotone in ``d``, >= 0, bounded.

    Computed as ``min(softplus(d), -log(1e-4))``, the same function: ``1 - sigmoid(d)`` rounds to 1 in float32 for
    ``d < -17`` or so, which would flatten the reward there.
    """
    return torch.clamp_max(F.softplus(logits), -math.log(REWARD_FLOOR)) * scale


def disc_bce_loss(agent_logits: Tensor, demo_logits: Tensor) -> Tensor:
    """``0.5 * (BCE(agent -> 0) + BCE(demo -> 1))``, each the mean over its rows (an empty part counts 0)."""
    agent = F.binary_cross_entropy_with_logits(agent_logits, torch.zeros_like(agent_logits)) if agent_logits.numel() \
        else agent_logits.new_zeros(())
    demo = F.binary_cross_entropy_with_logits(demo_logits, torch.ones_like(demo_logits))
    return 0.5 * (agent + demo)


def gradient_penalty(demo_logits: Tensor, demo_inputs: Tensor) -> Tensor:
    """``mean_b ||d D(x_b) / d x_b||^2`` on demo samples, with a graph (``demo_inputs`` must require grad)."""
    (grad,) = torch.autograd.grad(demo_logits.sum(), demo_inputs, create_graph=True)
    return grad.square().sum(-1).mean()


def squared_weights(weights: Sequence[Tensor]) -> Tensor:
    """Sum of the squares of every entry of ``weights`` (scalar)."""
    return torch.stack([w.square().sum() for w in weights]).sum()


def disc_accuracy(agent_logits: Tensor, demo_logits: Tensor) -> Dict[str, Tensor]:
    """Share of agent samples judged agent (``d < 0``) and of demo samples judged demo (``d > 0``)."""
    agent = (agent_logits < 0).float().mean() if agent_logits.numel() else agent_logits.new_zeros(())
    return {"agent": agent, "demo": (demo_logits > 0).float().mean()}
