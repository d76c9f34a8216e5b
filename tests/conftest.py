"""Shared pytest set-up: split the CPU cores between pytest-xdist workers.

`pytest -n 2` runs two test files at once; if each worker's torch (and every `phc` subprocess it starts) also
spread their ops over all cores, the OpenMP threads of the two fight over the same cores and the tiny training
runs of the tests get several times slower. Each worker's share is set through OMP_NUM_THREADS, which the
subprocesses inherit, before anything starts torch's thread pool.
"""

from __future__ import annotations

import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    import torch

    from phc_lightning.sim.mujoco_cpu import default_num_threads

    os.environ["OMP_NUM_THREADS"] = str(max(1, default_num_threads() // _workers))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
