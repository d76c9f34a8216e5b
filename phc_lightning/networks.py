"""Observation normalizer and the actor-critic MLPs of PHC / puffer-phc.

Shapes: ``B`` batch rows, ``D`` observation size (934 for the tracking task), ``A`` action size (69).
The policy is a diagonal Gaussian whose mean comes from the actor MLP and whose log-std is a constant
(PHC's fixed ``-2.9``) or a learnable vector; the critic is a separate MLP.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

Tensor = torch.Tensor


class RunningNorm(nn.Module):
    """Running mean/variance normalizer with clipping (rsl_rl ``EmpiricalNormalization`` without ``until``).

    ``mean`` and ``var`` are ``float32`` buffers, ``count`` an ``int64`` buffer, so all three land in the
    ``state_dict`` (and checkpoints). float32 keeps :meth:`forward` cast-free and works on every accelerator
    (MPS has no float64); the count is an integer because a float32 count stops being exact after 2**24
    samples, which a 500M-step run passes early. The merge below only multiplies by weights in ``[0, 1]``,
    so float32 rounding stays at ~1e-7 relative per update.

    :meth:`update` always updates (the rollout calls it explicitly, once per iteration); :meth:`forward`
    never does, so evaluation and training-time re-evaluation see the same statistics.
    """

    def __init__(self, dim: int, eps: float = 1e-5, clip: float = 10.0) -> None:
        """Create a normalizer that starts as the identity (mean 0, var 1, count 0).

        Args:
            dim: feature size ``D``.
            eps: added to the variance inside the square root.
            clip: normalized values are clipped to ``[-clip, clip]``.
        """
        super().__init__()
        if dim <= 0:
            raise ValueError(f"RunningNorm: dim must be positive, got {dim}")
        self.dim = dim
        self.eps = eps
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``[..., D] -> [..., D]``: ``clip((x - mean) / sqrt(var + eps), -clip, clip)``."""
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + self.eps), -self.clip, self.clip)

    def denormalize(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`forward` for values inside the clip range: ``y * sqrt(var + eps) + mean``."""
        return y * torch.sqrt(self.var + self.eps) + self.mean

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge the statistics of a batch ``[..., D]`` (leading dims flattened) into the running ones.

        Uses the parallel (Chan et al.) combination of two (count, mean, var) summaries, so feeding a stream in
        batches of any sizes gives the mean and population variance of the whole stream.

        Raises:
            ValueError: wrong last dimension or non-finite values (they would poison the statistics forever).
        """
        x = self.check_batch(x)
        if x.shape[0] == 0:
            return
        batch_var, batch_mean = torch.var_mean(x, dim=0, correction=0)
        self.merge(x.shape[0], batch_mean, batch_var)

    def check_batch(self, x: Tensor) -> Tensor:
        """``x [..., D]`` as ``[B, D]`` in the buffers' dtype; raises on a wrong size or non-finite values."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"RunningNorm.update: expected last dim {self.dim}, got shape {tuple(x.shape)}")
        x = x.reshape(-1, self.dim).to(self.mean.dtype)
        if x.shape[0] and not bool(torch.isfinite(x).all()):
            raise ValueError("RunningNorm.update: observations contain NaN or inf")
        return x

    @torch.no_grad()
    def merge(self, batch_count: int, batch_mean: Tensor, batch_var: Tensor) -> None:
        """Merge a ``(count, mean [D], population var [D])`` summary (of one batch, or of every rank's batches
        combined, see :mod:`phc_lightning.distributed`) into the running statistics."""
        total = self.count + batch_count
        w_batch = batch_count / total  # float32 tensor on the buffers' device, no host sync
        w_old = 1.0 - w_batch
        delta = batch_mean - self.mean
        # In-place copies keep the buffers ordinary tensors even when called under torch.inference_mode().
        self.var.copy_(self.var * w_old + batch_var * w_batch + delta.square() * (w_old * w_batch))
        self.mean.add_(delta * w_batch)
        self.count.copy_(total)

    def extra_repr(self) -> str:
        """Show size and clip in ``print(module)``."""
        return f"dim={self.dim}, eps={self.eps}, clip={self.clip}"


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
