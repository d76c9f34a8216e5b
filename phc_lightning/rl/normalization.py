"""Running mean / variance normalization of observations and returns (PHC's ``RunningMeanStd``)."""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn

Tensor = torch.Tensor
Count = Union[int, Tensor]


def merge_moments(
    count: Count, mean: Tensor, var: Tensor, batch_count: Count, batch_mean: Tensor, batch_var: Tensor
) -> Tuple[Count, Tensor, Tensor]:
    """Chan et al.'s parallel combination of two ``(count, mean [D], population var [D])`` summaries.

    The one implementation of the merge: :meth:`RunningNorm.merge` (float32 buffers, a tensor count, so no host
    sync) and :func:`phc_lightning.rl.distributed.combine_moments` (float64, int counts) both call it. Only weights
    in ``[0, 1]`` multiply the statistics, so float32 rounding stays at ~1e-7 relative per merge.
    """
    total = count + batch_count
    w_batch = batch_count / total
    w_old = 1.0 - w_batch
    delta = batch_mean - mean
    return total, mean + delta * w_batch, var * w_old + batch_var * w_batch + delta.square() * (w_old * w_batch)


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
        combined, see :mod:`phc_lightning.rl.distributed`) into the running statistics."""
        total, mean, var = merge_moments(self.count, self.mean, self.var, batch_count, batch_mean, batch_var)
        # In-place copies keep the buffers ordinary tensors even when called under torch.inference_mode().
        self.var.copy_(var)
        self.mean.copy_(mean)
        self.count.copy_(total)

    def extra_repr(self) -> str:
        """Show size and clip in ``print(module)``."""
        return f"dim={self.dim}, eps={self.eps}, clip={self.clip}"
