"""Agent replay buffer of the AMP discriminator: a fixed-capacity ring of past agent samples (ASE
``ReplayBuffer``), so the discriminator keeps rejecting what the policy did earlier, not only what it does now."""

from __future__ import annotations

from typing import Any, Dict

import torch

from phc_lightning.core import rng

Tensor = torch.Tensor


class ReplayBuffer:
    """Rows ``[capacity, dim]`` on ``device``, written as a ring; storage grows (doubling) up to ``capacity``, so a
    large capacity costs memory only once it fills.

    Args:
        capacity: most rows kept (the oldest are overwritten).
        dim: row size.
        keep_prob: chance that each offered row is stored.
        device: where rows live (the env's device).
        seed: seeds the buffer's own generator (keep draws and sample indices), saved in :meth:`state_dict`.
    """

    def __init__(self, capacity: int, dim: int, keep_prob: float, device: torch.device, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.dim = int(dim)
        self.keep_prob = float(keep_prob)
        self.device = torch.device(device)
        self.generator = rng.new_generator(seed, self.device)
        self.data = torch.zeros(0, self.dim, device=self.device)
        self.size = 0  # rows filled
        self.head = 0  # next row to write (== size until the buffer is full)

    def add(self, rows: Tensor) -> int:
        """Offer ``rows [B, dim]``; each is kept with ``keep_prob``. Returns how many were stored (one host read)."""
        return self.insert(self.select(rows))

    def select(self, rows: Tensor) -> Tensor:
        """The rows of ``rows [B, dim]`` that :meth:`add` would store (each kept with ``keep_prob``; a random subset
        when more than ``capacity``), drawn now from the buffer's generator, stored only by :meth:`insert`."""
        keep = rng.rand((rows.shape[0],), self.generator, self.device, "ReplayBuffer.select") < self.keep_prob
        kept = rows[keep.to(rows.device)].to(self.device)
        if kept.shape[0] > self.capacity:  # more than fit: a random subset
            pick = rng.randperm(kept.shape[0], self.generator, self.device, "ReplayBuffer.select")[: self.capacity]
            kept = kept[pick]
        return kept

    def insert(self, kept: Tensor) -> int:
        """Store ``kept [K, dim]`` (K <= capacity, from :meth:`select`) over the oldest rows; no random draw. Returns
        K."""
        count = kept.shape[0]
        if count == 0:
            return 0
        self._grow(min(self.size + count, self.capacity))
        self.data[(self.head + torch.arange(count, device=self.device)) % self.capacity] = kept
        self.head = (self.head + count) % self.capacity
        self.size = min(self.size + count, self.capacity)
        return count

    def sample(self, num: int) -> Tensor:
        """``num`` rows drawn uniformly with replacement ``[num, dim]``; no rows while the buffer is empty."""
        if self.size == 0:
            return self.data.new_zeros(0, self.dim)
        idx = rng.randint(self.size, (num,), self.generator, self.device, "ReplayBuffer.sample")
        return self.data[idx]

    def _grow(self, rows: int) -> None:
        if rows <= self.data.shape[0]:
            return
        new_rows = min(self.capacity, max(rows, 2 * self.data.shape[0]))
        grown = torch.zeros(new_rows, self.dim, device=self.device)
        grown[: self.size] = self.data[: self.size]
        self.data = grown

    def state_dict(self) -> Dict[str, Any]:
        """Filled rows, ring position and generator state (CPU tensors and ints)."""
        return {"rows": self.data[: self.size].cpu().clone(), "head": self.head, "rng": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (same capacity and row size)."""
        rows = state["rows"]
        if rows.shape[0] > self.capacity or (rows.shape[0] and rows.shape[1] != self.dim):
            raise ValueError(f"ReplayBuffer: saved rows {tuple(rows.shape)} do not fit capacity {self.capacity} x "
                             f"{self.dim}")
        self.size = 0
        self.data = torch.zeros(0, self.dim, device=self.device)
        self._grow(rows.shape[0])
        self.data[: rows.shape[0]] = rows.to(self.device)
        self.size = rows.shape[0]
        self.head = int(state["head"])
        self.generator.set_state(state["rng"])
