"""Constant index tensors, built once per device.

Indexing a device tensor with a Python list (``x[:, [1, 2, 3]]``) or building ``torch.as_tensor(list, device=...)``
copies host data to the device, which on a GPU synchronizes the stream: code that runs every env step takes its
index from here, built once per device and reused.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple

import torch

Tensor = torch.Tensor


@lru_cache(maxsize=None)
def _cached(values: Tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def index_tensor(values: Sequence[int], device: torch.device) -> Tensor:
    """``values`` as a long tensor on ``device``, the same (read-only) tensor for every call with equal arguments."""
    return _cached(tuple(int(v) for v in values), torch.device(device))
