"""Failure-weighted start times for training resets (BeyondMimic's adaptive sampling).

Reference state init at a uniform random time spends most episodes on the parts of a clip the policy already
plays, while evaluation fails at the one stretch it does not (a kick, a landing). Here every motion is cut into
equal bins of about ``bin_seconds``; each training failure counts for the bin of the reference time it happened
at, an exponential moving average per step (``alpha``) keeps the recent failures per bin, and a reset starts in
bin b with probability

    p_b ∝ Σ_k decay^k · failures_{b+k} + uniform_ratio / num_bins,   k = 0 … kernel_size − 1

then at a uniform time inside that bin. ``uniform_ratio`` keeps every bin in play; a ``kernel_size`` above 1 also
starts episodes in the bins just before the failures (the approach to the hard stretch).

The state is one ``(M, B)`` float tensor, saved with the env so that resuming continues the same draws.
"""

from __future__ import annotations

from typing import Optional

import torch

from phc_lightning.core import rng

Tensor = torch.Tensor


class AdaptiveStartSampler:
    """Start times weighted by where training episodes recently failed, per motion.

    Args:
        lengths: ``(M,)`` motion lengths in seconds.
        bin_seconds: target bin width; motion m gets ``floor(length / bin_seconds) + 1`` equal bins.
        uniform_ratio: weight spread evenly over the bins of a motion (the floor of every bin's probability).
        alpha: weight of the current step's failures in the moving average.
        kernel_size: how many bins, from the failing one backwards, a failure makes likelier starts.
        kernel_decay: weight ratio between neighbouring bins of the kernel.

    Attributes:
        num_bins: ``(M,)`` long, bins of each motion.
        failures: ``(M, B)`` float, moving average of failures per step in each bin (0 beyond a motion's bins).
    """

    def __init__(
        self,
        lengths: Tensor,
        bin_seconds: float = 1.0,
        uniform_ratio: float = 0.1,
        alpha: float = 0.001,
        kernel_size: int = 1,
        kernel_decay: float = 0.8,
    ) -> None:
        self.lengths = lengths.detach().to(torch.float32)
        self.num_bins = torch.floor(self.lengths / bin_seconds).long() + 1
        self.uniform_ratio = float(uniform_ratio)
        self.alpha = float(alpha)
        self.kernel = float(kernel_decay) ** torch.arange(int(kernel_size), device=lengths.device, dtype=torch.float32)
        max_bins = int(self.num_bins.max())
        self.valid = torch.arange(max_bins, device=lengths.device) < self.num_bins.unsqueeze(-1)
        self.failures = torch.zeros(self.valid.shape, device=lengths.device)

    def bin_of(self, motion_ids: Tensor, times: Tensor) -> Tensor:
        """``(N,)`` long: the bin of each ``(motion, time)``."""
        bins = self.num_bins[motion_ids]
        phase = (times / self.lengths[motion_ids]).clamp(0.0, 1.0)
        return torch.minimum((phase * bins).to(torch.long), bins - 1)

    def record(self, motion_ids: Tensor, times: Tensor, failed: Tensor) -> None:
        """Fold one step's failures (``failed (N,)`` bool at reference ``times``) into the moving average."""
        # In place and in fixed shapes (every env adds alpha or 0): this runs every control step, and selecting the
        # failed envs first would read `failed` on the host. Adding 0 leaves every sum as it was.
        self.failures.mul_(1.0 - self.alpha)
        self.failures.index_put_((motion_ids, self.bin_of(motion_ids, times)),
                                 failed.to(self.failures.dtype) * self.alpha, accumulate=True)

    def probabilities(self) -> Tensor:
        """``(M, B)`` start-bin probabilities of each motion (rows sum to 1 over its bins)."""
        # Bin b also gathers the failures of bins b+1 … b+K-1 (none past the last bin); the uniform floor is added
        # after, so that without failures every bin of a motion is equally likely, the last one included.
        padded = torch.nn.functional.pad(self.failures, (0, self.kernel.numel() - 1))
        smoothed = padded.unfold(-1, self.kernel.numel(), 1) @ self.kernel
        weights = (smoothed + self.uniform_ratio / self.num_bins.unsqueeze(-1)) * self.valid
        return weights / weights.sum(dim=-1, keepdim=True)

    def sample(self, motion_ids: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(N,)`` start times in ``[0, length)`` seconds: a bin by :meth:`probabilities`, then uniform inside it."""
        probs = self.probabilities()[motion_ids]
        bins = rng.multinomial(probs, 1, generator, "AdaptiveStartSampler.sample").squeeze(-1)
        inside = rng.rand(bins.shape, generator, bins.device, "AdaptiveStartSampler.sample")
        return (bins + inside) / self.num_bins[motion_ids] * self.lengths[motion_ids]
