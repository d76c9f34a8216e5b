"""``phc bench env``: speed ratios measured in one run (absolute numbers on shared machines are noise).

Env-steps/s of the full tracking env (PD step + state readout + reference lookup + obs + reward +
resets) on a chosen backend, the backend stepping alone, and raw MuJoCo CPU stepping of the same model, same N, same
substeps; measurements are interleaved and the median of each is reported with their ratio, plus the share of the
env's time spent in physics vs the task.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from rich.console import Console
from rich.table import Table

from phc_lightning.bench.raw_physics import raw_physics_steps_per_second
from phc_lightning.core import rng, skeleton
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.sim.base import PhysicsBackend
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.actions import ActionInterface
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking

# Exploration noise of PHC's fixed log-std (-2.9): the action distribution of a training rollout.
BENCH_ACTION_STD = math.exp(-2.9)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock time covers what was launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timed:
    """Passes every attribute through to ``target``; while :attr:`timing`, adds the wall time of the calls to the
    methods named in ``methods`` to :attr:`seconds`, synchronizing a GPU around each call so its asynchronous work
    is booked where it is launched. Used only by the benchmarks: training code never sees it, except as the
    object it wraps."""

    def __init__(self, target: Any, methods: Sequence[str], device: torch.device) -> None:
        self._target = target
        self._methods = frozenset(methods)
        self._device = device
        self.timing = False
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._methods:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.timing:
                return attr(*args, **kwargs)
            sync(self._device)
            start = time.perf_counter()
            out = attr(*args, **kwargs)
            sync(self._device)
            self.seconds += time.perf_counter() - start
            return out

        return timed


def timed_backend(backend: PhysicsBackend) -> Timed:
    """The backend with the calls that simulate (step, set_state, state readout) timed."""
    methods = ("step", "set_state", "set_state_from", "set_state_where", "state", "actuator_forces", "unstable")
    return Timed(backend, methods, backend.device)


def env_steps_per_second(env: HumanoidTracking, num_steps: int, policy: Optional[torch.nn.Module] = None) -> float:
    """Env-steps/s of ``env.step`` with residual PD targets under PHC's action scale and exploration noise (or
    ``policy``'s actions under its own action interface, forward pass included)."""
    gen = rng.new_generator(0, env.device)
    interface = ActionInterface(residual=True)
    obs = env.reset()
    state = None if policy is None else torch.zeros(env.num_envs, policy.recurrent_state_size, device=env.device)
    sync(env.device)
    start = time.perf_counter()
    for _ in range(num_steps):
        if policy is None:
            noise = rng.randn((env.num_envs, interface.num_actions), gen, env.device, "bench noise")
            targets = interface.pd_targets(noise * BENCH_ACTION_STD, env.ref_next_dof_pos)
        else:
            with torch.no_grad():
                actions, _, _, state = policy.act_step(obs, state)
                targets = policy.pd_targets(actions, env.ref_next_dof_pos)
        obs = env.step(targets).obs
    sync(env.device)
    seconds = time.perf_counter() - start
    env.check_physics()
    return env.num_envs * num_steps / seconds


def backend_steps_per_second(backend: PhysicsBackend, num_steps: int) -> float:
    """Env-steps/s of the backend alone holding the rest pose's PD targets (no task, no resets)."""
    targets = torch.zeros(backend.num_envs, skeleton.NUM_DOFS, device=backend.device)
    backend.step(targets)  # warm-up
    sync(backend.device)
    start = time.perf_counter()
    for _ in range(num_steps):
        backend.step(targets)
    sync(backend.device)
    seconds = time.perf_counter() - start
    backend.check_errors()
    return backend.num_envs * num_steps / seconds


def physics_fraction(env: HumanoidTracking, timed: Timed, num_steps: int) -> float:
    """Share of ``env.step`` wall time spent in the backend (stepping, resets, state readout); the rest is the
    task: reference lookup, observations, reward, termination, reset bookkeeping, and the bench's action noise."""
    timed.seconds, timed.timing = 0.0, True
    try:
        sync(env.device)
        start = time.perf_counter()
        env_steps_per_second(env, num_steps)
        total = time.perf_counter() - start
    finally:
        timed.timing = False
    return timed.seconds / total


def bench_env(
    num_envs_list: List[int], num_steps: int, repeats: int, num_threads: Optional[int], backend: str = "mujoco"
) -> List[Dict]:
    """Print and return task-env env-steps/s, where the time goes, and raw MuJoCo CPU physics for each N.

    The env runs with residual actions and PHC's exploration noise, i.e. humanoids that roughly track their motions
    as in a training rollout (with absolute actions around 0 every env would fall to the T-pose and reset every
    other step, which measures a reset storm rather than the task). ``backend_sps`` is the backend stepping alone;
    ``raw_sps`` is plain MuJoCo C stepping on all cores, the same baseline for every backend.

    Args:
        backend: ``"mujoco"`` (CPU) or ``"mujoco_warp"`` (alias ``"warp"``; CUDA when present).
    """
    name = "mujoco_warp" if backend == "warp" else backend
    rows = []
    device = None
    for n in num_envs_list:
        kwargs = {"num_threads": num_threads} if name == "mujoco" else {}
        timed = timed_backend(make_backend(name, n, **kwargs))
        device = timed.device
        motions = MotionLibrary(BUNDLED_MOTIONS, device=device)
        env = HumanoidTracking(timed, motions, TaskConfig())
        env_steps_per_second(env, 5)  # warm-up: thread pool start, kernel loading, graph capture, allocations
        task, raw, alone = [], [], []
        for _ in range(repeats):
            raw.append(raw_physics_steps_per_second(n, skeleton.SUBSTEPS, num_steps, num_threads))
            task.append(env_steps_per_second(env, num_steps))
            alone.append(backend_steps_per_second(timed, num_steps))
        physics = physics_fraction(env, timed, num_steps)
        env.close()
        row = {"num_envs": n, "task_sps": statistics.median(task), "backend_sps": statistics.median(alone),
               "raw_sps": statistics.median(raw), "physics_fraction": physics, "task_fraction": 1.0 - physics}
        row["ratio"] = row["task_sps"] / row["raw_sps"]
        rows.append(row)
    step = f"{skeleton.SUBSTEPS} substeps of {skeleton.PHYSICS_DT:.5f} s per env step"
    table = Table(title=f"phc bench env: {name} on {device} ({step})")
    for col in ("num_envs", "task env steps/s", f"{name} alone steps/s", "raw MuJoCo CPU steps/s", "task / raw",
                "time: physics", "time: task"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["num_envs"]), f"{r['task_sps']:.0f}", f"{r['backend_sps']:.0f}", f"{r['raw_sps']:.0f}",
                      f"{r['ratio']:.3f}", f"{r['physics_fraction']:.0%}", f"{r['task_fraction']:.0%}")
    Console().print(table)
    return rows
