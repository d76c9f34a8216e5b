"""``phc bench``: speed ratios measured in one run (absolute numbers on shared machines are noise).

- ``env``: env-steps/s of the full tracking env (PD step + state readout + reference lookup + obs + reward +
  resets) on a chosen backend, the backend stepping alone, and raw MuJoCo CPU stepping of the same model, same N,
  same substeps; measurements are interleaved and the median of each is reported with their ratio, plus the share
  of the env's time spent in physics vs the task.
- ``train``: training env-steps/s of a config (collect + learn) against env-only stepping of the same env, with the
  shares of an iteration's time spent in physics, the task, the policy's forward passes while collecting and the
  PPO update, measured in the same run by timing wrappers around the backend, the env and the policy.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from rich.console import Console
from rich.table import Table

from phc_lightning import skeleton
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.sim.base import PhysicsBackend
from phc_lightning.sim.factory import make_backend
from phc_lightning.sim.raw_bench import raw_physics_steps_per_second
from phc_lightning.task.actions import ActionInterface
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking

# Exploration noise of PHC's fixed log-std (-2.9): the action distribution of a training rollout.
BENCH_ACTION_STD = math.exp(-2.9)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock time covers what was launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timed:
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
            _sync(self._device)
            start = time.perf_counter()
            out = attr(*args, **kwargs)
            _sync(self._device)
            self.seconds += time.perf_counter() - start
            return out

        return timed


def _timed_backend(backend: PhysicsBackend) -> _Timed:
    """The backend with the calls that simulate (step, set_state, state readout) timed."""
    methods = ("step", "set_state", "set_state_from", "state", "actuator_forces", "unstable")
    return _Timed(backend, methods, backend.device)


def env_steps_per_second(env: HumanoidTracking, num_steps: int, policy: Optional[torch.nn.Module] = None) -> float:
    """Env-steps/s of ``env.step`` with residual PD targets under PHC's action scale and exploration noise (or
    ``policy``'s actions under its own action interface, forward pass included)."""
    gen = torch.Generator(device=env.device).manual_seed(0)
    interface = ActionInterface(residual=True)
    obs = env.reset()
    state = None if policy is None else torch.zeros(env.num_envs, policy.recurrent_state_size, device=env.device)
    _sync(env.device)
    start = time.perf_counter()
    for _ in range(num_steps):
        if policy is None:
            noise = torch.randn(env.num_envs, interface.num_actions, generator=gen, device=env.device)
            targets = interface.pd_targets(noise * BENCH_ACTION_STD, env.ref_next_dof_pos)
        else:
            with torch.no_grad():
                actions, _, _, state = policy.act_step(obs, state)
                targets = policy.pd_targets(actions, env.ref_next_dof_pos)
        obs = env.step(targets).obs
    _sync(env.device)
    return env.num_envs * num_steps / (time.perf_counter() - start)


def backend_steps_per_second(backend: PhysicsBackend, num_steps: int) -> float:
    """Env-steps/s of the backend alone holding the rest pose's PD targets (no task, no resets)."""
    targets = torch.zeros(backend.num_envs, skeleton.NUM_DOFS, device=backend.device)
    backend.step(targets)  # warm-up
    _sync(backend.device)
    start = time.perf_counter()
    for _ in range(num_steps):
        backend.step(targets)
    _sync(backend.device)
    return backend.num_envs * num_steps / (time.perf_counter() - start)


def physics_fraction(env: HumanoidTracking, timed: _Timed, num_steps: int) -> float:
    """Share of ``env.step`` wall time spent in the backend (stepping, resets, state readout); the rest is the
    task: reference lookup, observations, reward, termination, reset bookkeeping, and the bench's action noise."""
    timed.seconds, timed.timing = 0.0, True
    try:
        _sync(env.device)
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
        timed = _timed_backend(make_backend(name, n, **kwargs))
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


TRAIN_PARTS = ("physics", "task", "policy_forward", "collect_other", "update")
"""Where ``phc bench train`` says an iteration's time goes: physics (the backend's calls), the task (reference
lookup, observations, rewards, terminations, resets: the env's step and reset minus physics), the policy forward
passes of collection (actions, values, bootstrap values, PD targets), the rest of collection (buffer writes, GAE,
statistics) and the PPO update (every minibatch's forward, backward and optimizer step)."""


class _CollectionTimers:
    """Times physics, env and policy calls during training, non-invasively: the datamodule's backend, its env's
    ``step`` / ``reset`` and the policy the rollout collects with are wrapped in :class:`_Timed`."""

    def __init__(self, datamodule: Any, module: torch.nn.Module) -> None:
        env = datamodule.env
        device = env.device
        self.physics = env.backend = _timed_backend(env.backend)
        self.env = _Timed(env, ("step", "reset"), device)
        env.step, env.reset = self.env.step, self.env.reset  # instance attributes: only this env, only this run
        self.policy = _Timed(module, ("act", "act_step", "get_value", "pd_targets"), device)
        datamodule.rollout.get_policy = lambda: self.policy
        self.start()

    def start(self) -> None:
        """Zero the clocks and time from now on."""
        for timed in (self.physics, self.env, self.policy):
            timed.seconds, timed.timing = 0.0, True

    def read(self) -> Dict[str, float]:
        """Seconds in physics, env (physics included) and policy since :meth:`start`, then restart."""
        out = {"physics": self.physics.seconds, "env": self.env.seconds, "policy": self.policy.seconds}
        self.start()
        return out


def bench_train(config: str, epochs: int, overrides: Sequence[str] = ()) -> Dict[str, float]:
    """Print and return training SPS vs env-only SPS of the same config, the collect/learn split, and the shares of
    an iteration's time of :data:`TRAIN_PARTS`, all measured in one run.

    Args:
        config: a training config (any backend and device).
        epochs: iterations to train; the first (start-up: kernel loading, allocations, first resets) is not
            measured.
        overrides: more config flags, e.g. ``["--data.backend", "mujoco_warp", "--data.num_envs", "64"]``.

    On CUDA the timers synchronize around every timed call, so the SPS is a little below an untimed run's.
    """
    import lightning as L

    from phc_lightning.cli import run_cli

    # The config's model and data, but a bare trainer: no checkpoints (they could overwrite a real run's
    # last.ckpt), no evaluation, no logger, so only collecting and learning are timed.
    cli = run_cli(["--config", config, *overrides], run=False)
    dm = cli.datamodule
    timings: List[Dict[str, float]] = []
    timers: List[_CollectionTimers] = []

    class _Record(L.Callback):
        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            dm.setup(stage)  # idempotent: Lightning's own call (before this hook) already built the env
            timers.append(_CollectionTimers(dm, pl_module))

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            s = pl_module.last_iteration
            timings.append({"steps": s["env_steps"], "collect": s["collect_time"], "learn": s["learn_time"],
                            **timers[0].read()})

    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        accelerator=cli.trainer.accelerator, devices=1, callbacks=[_Record()])
    trainer.fit(cli.model, datamodule=dm)
    measured = timings[1:] if len(timings) > 1 else timings  # epoch 0 pays for start-up
    total = {key: sum(t[key] for t in measured) for key in measured[0]}
    wall = total["collect"] + total["learn"]
    split = {
        "physics": total["physics"],
        "task": total["env"] - total["physics"],
        "policy_forward": total["policy"],
        "collect_other": total["collect"] - total["env"] - total["policy"],
        "update": total["learn"],
    }
    backend, device = dm.hparams.backend, dm.hparams.device
    dm.setup("fit")  # a fresh env: fit's teardown closed the one it trained with
    env_device = dm.env.device
    env_only = env_steps_per_second(dm.env, 2 * dm.hparams.horizon)
    policy_env = env_steps_per_second(dm.env, 2 * dm.hparams.horizon, policy=cli.model)
    dm.env.close()
    train_sps = total["steps"] / wall
    out = {
        "train_sps": train_sps,
        "env_only_sps": env_only,
        "env_with_policy_sps": policy_env,
        "ratio": train_sps / env_only,
        "collect_fraction": total["collect"] / wall,
        "learn_fraction": total["learn"] / wall,
    }
    out.update({f"time_{part}": split[part] / wall for part in TRAIN_PARTS})
    where = f"{backend} on {env_device}" + ("" if device is None else f" (data.device {device})")
    table = Table(title=f"phc bench train: {where}, networks on {cli.model.device}, {len(measured)} measured epochs")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in out.items():
        if k.startswith("time_"):
            table.add_row(f"time: {k[len('time_'):]}", f"{v:.0%}")
        else:
            table.add_row(k, f"{v:.3f}" if v < 10 else f"{v:.0f}")
    Console().print(table)
    return out
