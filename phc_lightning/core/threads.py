"""Running small CPU tensor work on one intra-op thread."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op torch thread inside the block when ``device`` is the CPU (elsewhere: nothing changes).

    Used where the tensors are a few envs' worth (the env step, AMP's per-step work: splitting each op over
    OpenMP workers costs more than it saves next to MuJoCo's own threads), and where results must not depend on
    how ops are split over threads (the motion library's reference frames: their hinge angles came out different
    from one process to the next with two threads).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
