"""Helpers of scripts/gpu_check.sh (issue 27 item 6); CI runs both on MuJoCo Warp's CPU device.

``python scripts/gpu_check.py sync [--num_envs N] [--device cuda]``
    Collection of configs/phc_gpu.yaml (MuJoCo Warp; policy, env steps and resets) must not make the host wait for
    the device inside its loop:

    1. two warm-up collections (Warp compiles and captures its graphs, the caching allocator fills);
    2. the loop body of a collection (policy act, PD targets, env step with its resets) for 32 steps under
       ``torch.cuda.set_sync_debug_mode("error")``: the first synchronizing call raises, with its traceback; the
       same steps also under the host-read counter of :mod:`phc_lightning.bench.host_reads`, which must see none;
    3. whole collections of ``horizon`` and ``2 * horizon`` steps under ``"warn"``, every synchronizing call
       recorded with the package line that made it: the lines and their counts must not grow with the horizon, and
       an iteration may sync at most :data:`MAX_SYNCS_PER_ITERATION` times.

    Without CUDA (CI) the debug mode does not exist: the counter alone runs, as a test of this script. Prints PASS
    or FAIL (exit status 0 / 1), the env-steps/s of the step loop and the peak GPU memory.

``python scripts/gpu_check.py fit-config OUT.yaml [--every N]``
    configs/phc_gpu.yaml with an evaluation and a motion resampling every N iterations (default 5) and checkpoints
    every N, so that a 3-minute fit passes through a resampling (puffer-phc's 500 would not come for hours).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIG = ROOT / "configs" / "phc_gpu.yaml"
MAX_SYNCS_PER_ITERATION = 8
"""Reads after a collection's loop: Warp's overflow bits, the truncations (where, how many), the statistics."""


def build(config: Path, num_envs: int, device: str, horizon: Optional[int], small: bool) -> Tuple[Any, Any]:
    """The config's datamodule (set up) and module on ``device``, as ``phc fit`` builds them (no trainer)."""
    from phc_lightning.learner.module import PHCModule
    from phc_lightning.rollout.datamodule import PHCDataModule
    from phc_lightning.task.config import TaskConfig

    cfg = yaml.safe_load(config.read_text())
    model, data = dict(cfg.get("model") or {}), dict(cfg.get("data") or {})
    if small:  # CI: the config's code path at a size the CPU runs in seconds
        model.update(actor_hidden=[32, 32], critic_hidden=[32, 32])
    data.update(num_envs=num_envs, device=device, num_minibatches=1)
    if horizon:
        data["horizon"] = horizon
    dm = PHCDataModule(task=TaskConfig(**(data.pop("task", None) or {})), **data)
    dm.setup("fit")
    module = PHCModule(**model).to(dm.env.device)
    if dm.env.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as PHCModule.setup does under a CUDA trainer
    return dm, module


@torch.no_grad()
def step_loop(dm: Any, module: Any, steps: int) -> None:
    """The body of a collection's loop: actions (with their noise), PD targets, the env step and its resets."""
    from phc_lightning.core import rng

    env = dm.env
    generator = rng.new_generator(0, module.device)
    obs = env.obs
    state = torch.zeros(env.num_envs, module.recurrent_state_size, device=module.device)
    for _ in range(steps):
        actions, _, _, state = module.act_step(obs, state, generator=generator)
        result = env.step(module.pd_targets(actions, env.ref_next_dof_pos))
        state = state.masked_fill((result.terminated | result.truncated).unsqueeze(-1), 0.0)
        obs = result.obs


def package_line(stack: List[traceback.FrameSummary]) -> str:
    """The innermost frame of the package in ``stack`` (``file:line``)."""
    for frame in reversed(stack):
        path = Path(frame.filename)
        if ROOT in path.parents and "scripts" not in path.parts:
            return f"{path.relative_to(ROOT)}:{frame.lineno}"
    return f"{stack[-1].filename}:{stack[-1].lineno}"


def syncs_of_collection(dm: Any, module: Any, horizon: int, cuda: bool) -> Counter:
    """Synchronizing calls of one whole collection of ``horizon`` steps, by package line: torch's warnings on CUDA,
    the host-read counter elsewhere."""
    from phc_lightning.bench.host_reads import HostReads
    from phc_lightning.rollout.dataset import RolloutDataset

    hp = dm.hparams
    dataset = RolloutDataset(dm.env, lambda: module, horizon=horizon, update_epochs=1, num_minibatches=1,
                             gamma=hp.gamma, gae_lambda=hp.gae_lambda)
    dataset.restart_from(dm.env.obs)
    if not cuda:
        with HostReads() as reads:
            dataset.collect(module)
        return Counter(where for _, where in reads.reads)
    seen: Counter = Counter()

    def record(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if "synchronizing" in str(message):
            seen[package_line(traceback.extract_stack()[:-1])] += 1

    showwarning = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            dataset.collect(module)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = showwarning
    return seen


def sync_check(args: argparse.Namespace) -> int:
    from phc_lightning.bench.host_reads import HostReads

    dm, module = build(Path(args.config), args.num_envs, args.device, args.horizon, args.small)
    env, cuda = dm.env, dm.env.device.type == "cuda"
    print(f"sync check: {dm.hparams.backend} on {env.device}, {env.num_envs} envs, networks "
          f"{module.hparams.actor_hidden}, horizon {dm.hparams.horizon}", flush=True)
    started = time.perf_counter()
    for _ in range(2):
        dm.rollout.collect(module)
    print(f"warm-up (compile, graph capture): {time.perf_counter() - started:.1f} s", flush=True)
    failures: List[str] = []

    # 2. the step path under the strictest mode
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        started = time.perf_counter()
        step_loop(dm, module, args.steps)
    except RuntimeError:
        failures.append("a step synchronized:\n" + traceback.format_exc())
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(f"step loop: {env.num_envs * args.steps / seconds:,.0f} env-steps/s (policy + env, {args.steps} steps)")
    with HostReads() as reads:
        step_loop(dm, module, args.steps)
    if reads.reads:
        failures.append(f"host reads in the step loop: {reads.summary().most_common()}")

    # 3. whole collections: the same syncs at twice the horizon
    horizon = dm.hparams.horizon
    short, long = (syncs_of_collection(dm, module, h, cuda) for h in (horizon, 2 * horizon))
    print(f"syncs per collection ({'sync debug mode' if cuda else 'host-read counter'}): horizon {horizon}: "
          f"{sum(short.values())}, horizon {2 * horizon}: {sum(long.values())}")
    for where, count in sorted(long.items()):
        print(f"  {count:3d}  {where}" + ("" if short.get(where) == count else f"   ({short.get(where, 0)} at horizon "
                                                                               f"{horizon}: per step)"))
    if short != long:
        failures.append("syncs that grow with the horizon (per step)")
    if sum(long.values()) > MAX_SYNCS_PER_ITERATION:
        failures.append(f"{sum(long.values())} syncs per iteration, more than {MAX_SYNCS_PER_ITERATION}")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(env.device) / 2**30:.2f} GiB (torch)")
    env.close()
    for failure in failures:
        print("FAIL:", failure)
    print("PASS" if not failures else "FAIL")
    return 1 if failures else 0


def fit_config(args: argparse.Namespace) -> int:
    cfg: Dict[str, Any] = yaml.safe_load(GPU_CONFIG.read_text())
    every = args.every
    cfg["trainer"]["check_val_every_n_epoch"] = every  # MotionResampling reads the evaluation's failures
    for callback in cfg["trainer"]["callbacks"]:
        init = callback.setdefault("init_args", {})
        if callback["class_path"] == "callbacks.MotionResampling":
            init["every_n_epochs"] = every
        elif callback["class_path"] == "callbacks.PHCCheckpoint":
            init.update(every_n_epochs=every, last_every_n_epochs=every)
    Path(args.out).write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"{args.out}: configs/phc_gpu.yaml with evaluation, resampling and checkpoints every {every} iterations")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    sync = verbs.add_parser("sync", help="no host sync inside a collection's loop of configs/phc_gpu.yaml")
    sync.add_argument("--config", default=str(GPU_CONFIG))
    sync.add_argument("--num_envs", type=int, default=4096)
    sync.add_argument("--device", default="cuda")
    sync.add_argument("--horizon", type=int, default=None, help="default: the config's")
    sync.add_argument("--steps", type=int, default=32, help="steps of the strict step loop")
    sync.add_argument("--small", action="store_true", help="32-32 networks (CI on the CPU)")
    fit = verbs.add_parser("fit-config", help="configs/phc_gpu.yaml resampling every few iterations")
    fit.add_argument("out")
    fit.add_argument("--every", type=int, default=5)
    args = parser.parse_args(argv)
    return sync_check(args) if args.verb == "sync" else fit_config(args)


if __name__ == "__main__":
    sys.exit(main())
