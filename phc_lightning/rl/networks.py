"""The actor-critic MLPs of PHC / puffer-phc.

Shapes: ``B`` batch rows, ``D`` observation size (934 for the tracking task), ``A`` action size (69).
The policy is a diagonal Gaussian whose mean comes from the actor MLP and whose log-std is a constant
(PHC's fixed ``-2.9``) or a learnable vector; the critic is a separate MLP.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from phc_lightning.core import rng

Tensor = torch.Tensor


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2.0), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with ``gain`` and constant bias (cleanrl ``layer_init``); returns ``layer``."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLP(nn.Sequential):
    """``in_dim -> hidden... -> out_dim`` with SiLU, orthogonal init and an optional final LayerNorm.

    Layout (puffer-phc): ``Linear, SiLU, ..., Linear, [LayerNorm], SiLU, head Linear``; the LayerNorm sits
    before the last hidden activation. Hidden layers use gain sqrt(2), the head ``out_gain``.

    With ``compute_dtype`` (bfloat16) the forward runs under autocast: weights stay float32 (so do Adam and the
    checkpoint), the matrix products run in that dtype, the output comes back float32. Rollout, update and
    evaluation all go through this forward, so the stored log-probs and the recomputed ones agree.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        layer_norm: bool = True,
        out_gain: float = 1.0,
        compute_dtype: Optional[torch.dtype] = None,
    ) -> None:
        """Build the stack.

        Args:
            in_dim: input size.
            hidden: hidden layer sizes (may be empty: a single linear head).
            out_dim: output size.
            layer_norm: insert ``LayerNorm`` before the last hidden activation.
            out_gain: orthogonal gain of the head (0.01 for the action mean, 1.0 for the value).
            compute_dtype: autocast dtype of the forward (None: plain float32).
        """
        hidden = [int(h) for h in hidden]
        if in_dim <= 0 or out_dim <= 0 or any(h <= 0 for h in hidden):
            raise ValueError(f"MLP: sizes must be positive, got in_dim={in_dim}, hidden={hidden}, out_dim={out_dim}")
        layers = []
        sizes = [in_dim] + hidden
        for i in range(len(hidden)):
            layers.append(layer_init(nn.Linear(sizes[i], sizes[i + 1])))
            if layer_norm and i == len(hidden) - 1:
                layers.append(nn.LayerNorm(sizes[i + 1]))
            layers.append(nn.SiLU())
        layers.append(layer_init(nn.Linear(sizes[-1], out_dim), gain=out_gain))
        super().__init__(*layers)
        self.compute_dtype = compute_dtype

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_dim] -> [B, out_dim]`` float32."""
        if self.compute_dtype is None:
            return super().forward(x)
        with torch.autocast(device_type=x.device.type, dtype=self.compute_dtype):
            return super().forward(x).float()


MLP_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
"""``model.mlp_dtype`` choices -> the MLPs' autocast dtype."""


class ActorCritic(nn.Module):
    """Separate actor (-> Gaussian mean ``[B, A]``) and critic (-> value ``[B]``) MLPs on normalized obs.

    ``log_std`` ``[A]`` is a buffer when fixed and a parameter when learnable; the attribute (and state_dict
    key) is the same either way, so checkpoints load across the two settings.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        actor_hidden: Sequence[int],
        critic_hidden: Sequence[int],
        layer_norm: bool = True,
        init_log_std: float = -2.9,
        learnable_log_std: bool = False,
        mlp_dtype: str = "float32",
    ) -> None:
        """Build both networks.

        Args:
            obs_dim: observation size ``D``.
            action_dim: action size ``A``.
            actor_hidden: actor hidden sizes.
            critic_hidden: critic hidden sizes.
            layer_norm: LayerNorm before the last hidden activation of both MLPs.
            init_log_std: initial (or fixed) log standard deviation of every action dimension.
            learnable_log_std: train ``log_std`` with the policy instead of keeping it fixed.
            mlp_dtype: a key of :data:`MLP_DTYPES`, the matrix-product dtype of both MLPs.
        """
        super().__init__()
        self.actor, self.critic = actor_critic_mlps(
            obs_dim, obs_dim, actor_hidden, critic_hidden, action_dim, layer_norm, mlp_dtype
        )
        add_log_std(self, action_dim, init_log_std, learnable_log_std)

    def distribution(self, obs_norm: Tensor) -> torch.distributions.Normal:
        """Diagonal Gaussian policy for normalized observations ``[B, D]`` (batch shape ``[B, A]``)."""
        mu = self.actor(obs_norm)
        # validate_args=False: the default checks call .all() on the tensors, a host sync on every forward.
        return torch.distributions.Normal(mu, self.log_std.exp().expand_as(mu), validate_args=False)

    def value(self, obs_norm: Tensor) -> Tensor:
        """Critic value ``[B, D] -> [B]``."""
        return self.critic(obs_norm).squeeze(-1)


def actor_critic_mlps(
    actor_in: int,
    critic_in: int,
    actor_hidden: Sequence[int],
    critic_hidden: Sequence[int],
    action_dim: int,
    layer_norm: bool,
    mlp_dtype: str,
) -> Tuple[MLP, MLP]:
    """The actor (action mean, head gain 0.01) and critic (value, gain 1.0) MLPs of both policy kinds.

    Raises:
        ValueError: ``mlp_dtype`` is not a key of :data:`MLP_DTYPES` (the message names ``model.mlp_dtype``).
    """
    if mlp_dtype not in MLP_DTYPES:
        raise ValueError(f"model.mlp_dtype must be one of {sorted(MLP_DTYPES)}, got {mlp_dtype!r}")
    dtype = MLP_DTYPES[mlp_dtype]
    actor = MLP(actor_in, actor_hidden, action_dim, layer_norm, out_gain=0.01, compute_dtype=dtype)
    critic = MLP(critic_in, critic_hidden, 1, layer_norm, out_gain=1.0, compute_dtype=dtype)
    return actor, critic


def set_mlp_dtype(policy: nn.Module, dtype: Optional[torch.dtype]) -> None:
    """Set the autocast dtype of every :class:`MLP` inside ``policy`` (None: plain float32)."""
    for module in policy.modules():
        if isinstance(module, MLP):
            module.compute_dtype = dtype


def add_log_std(module: nn.Module, action_dim: int, init_log_std: float, learnable: bool) -> None:
    """Give ``module`` the ``log_std`` of a diagonal Gaussian policy, ``[action_dim]`` at ``init_log_std``: a
    parameter when ``learnable``, otherwise a buffer (PHC's fixed std), so it is saved either way."""
    log_std = torch.full((action_dim,), float(init_log_std))
    if learnable:
        module.log_std = nn.Parameter(log_std)
    else:
        module.register_buffer("log_std", log_std)


def sample_actions(
    dist: torch.distributions.Normal, deterministic: bool, generator: Optional[torch.Generator]
) -> Tensor:
    """The Gaussian mean, or a sample drawn from ``generator`` (None: the global RNG)."""
    if deterministic:
        return dist.mean
    noise = rng.randn(dist.mean.shape, generator, dist.mean.device, "action noise", dtype=dist.mean.dtype)
    return dist.mean + dist.stddev * noise
