"""Baseline for ``phc bench env``: env-steps/s of plain MuJoCo stepping of the humanoid, with no state readout."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import mujoco
import numpy as np

from phc_lightning.sim.mujoco_cpu import default_num_threads, load_model, mj_batch


def raw_physics_steps_per_second(
    num_envs: int, substeps: int = 4, num_steps: int = 50, num_threads: Optional[int] = None
) -> float:
    """Env-steps per second of ``num_envs`` humanoids doing nothing but ``mj_step`` on all cores.

    One env-step is ``substeps`` physics steps of one env. The humanoids start standing in the rest pose with
    constant zero controls. Uses MuJoCo's native thread pool (:class:`mujoco.batch.Batch`, MuJoCo >= 4.0, one
    call per env-step) or, with older MuJoCo, a Python thread pool over one ``MjData`` per env.

    Args:
        num_envs: number of simulated humanoids.
        substeps: physics steps per env-step.
        num_steps: timed env-steps (after one untimed warm-up step).
        num_threads: worker threads (default: all cores this process may use).
    """
    if num_envs < 1 or substeps < 1 or num_steps < 1:
        raise ValueError(f"num_envs, substeps and num_steps must be >= 1, got {num_envs}, {substeps}, {num_steps}")
    model = load_model()
    threads = num_threads or default_num_threads()
    if mj_batch is not None:
        sims = mj_batch.Batch(model, num_envs, threads)  # an MjData per thread: the cheapest plain stepping
        sims.reset(stage=int(mujoco.mjtStage.mjSTAGE_NONE))

        def step() -> None:
            sims.step(None, substeps)

    else:
        datas = [mujoco.MjData(model) for _ in range(num_envs)]
        bounds = np.linspace(0, num_envs, min(num_envs, 4 * threads) + 1).astype(int)
        chunks = [datas[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        pool = ThreadPoolExecutor(max_workers=threads)

        def run(chunk: List[mujoco.MjData]) -> None:
            for d in chunk:
                for _ in range(substeps):
                    mujoco.mj_step(model, d)

        def step() -> None:
            list(pool.map(run, chunks))

    step()  # warm-up: first contacts, page faults
    start = time.perf_counter()
    for _ in range(num_steps):
        step()
    elapsed = time.perf_counter() - start
    if mj_batch is None:
        pool.shutdown()
    return num_envs * num_steps / elapsed
