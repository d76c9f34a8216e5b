"""One run seed for every generator: each consumer derives its own stream from ``seed_everything``'s seed.

Lightning's ``seed_everything`` (the CLI's ``--seed_everything``) puts the run seed in ``PL_GLOBAL_SEED``. Env
start times, motion draws, action noise, minibatch order and resampling draws each take a seed derived from it
and their own stream name, so changing the run seed changes all of them, and no two streams share a sequence.
"""

from __future__ import annotations

import os
import zlib
from typing import Optional

import torch


def run_seed() -> int:
    """The seed of this run: ``seed_everything``'s, else torch's initial seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.initial_seed() % 2**31)


def derive_seed(explicit: Optional[int], stream: str, rank: int = 0) -> int:
    """``explicit`` when the user set one; otherwise a seed for ``stream`` derived from :func:`run_seed`.

    ``rank``: the process's global rank when several train one policy (Lightning DDP): each rank's envs and noise
    get their own seed (offset by ``rank``), so the ranks do not collect the same episodes; rank 0 gets the seed
    of a single-process run.
    """
    base = int(explicit) if explicit is not None else (run_seed() * 1_000_003 + zlib.crc32(stream.encode())) % 2**31
    return (base + rank * 7_919) % 2**31 if rank else base
