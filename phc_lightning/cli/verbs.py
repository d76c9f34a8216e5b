"""The ``phc`` verbs that are not Lightning's ``fit`` / ``validate``: ``motions`` and ``bench``.

Each verb is a plain argparse subcommand whose work is imported only when it runs, so ``phc motions info`` does
not pay for importing Lightning.
"""

from __future__ import annotations

import argparse
from typing import List

from phc_lightning.cli.pipeline_verbs import PIPELINE_VERBS, add_motion_verbs, add_pipeline_verbs, run_pipeline_verb

EXTRA_VERBS = ("motions", "bench") + PIPELINE_VERBS


def run_extra_verb(argv: List[str]) -> int:
    """Parse and run ``argv`` (starting with one of :data:`EXTRA_VERBS`); returns the exit code."""
    parser = argparse.ArgumentParser(prog="phc")
    verbs = parser.add_subparsers(dest="verb", required=True)
    motions = verbs.add_parser("motions", help="inspect motion files").add_subparsers(dest="action", required=True)
    info = motions.add_parser("info", help="motion count, frames, fps and duration of a motion file")
    info.add_argument("file")
    add_motion_verbs(motions)
    add_pipeline_verbs(verbs)
    bench = verbs.add_parser("bench", help="speed benchmarks (ratios measured in one run)")
    bench_verbs = bench.add_subparsers(dest="action", required=True)
    env = bench_verbs.add_parser("env", help="task env vs raw physics env-steps/s")
    env.add_argument("--num_envs", type=int, nargs="+", default=[256, 512, 1024])
    env.add_argument("--steps", type=int, default=60, help="env steps per measurement")
    env.add_argument("--repeats", type=int, default=3, help="interleaved measurements; the median is reported")
    env.add_argument("--num_threads", type=int, default=None)
    env.add_argument("--backend", default="mujoco", choices=("mujoco", "mujoco_warp", "warp"),
                     help="physics backend of the task env (warp = mujoco_warp, CUDA when present)")
    memory = bench_verbs.add_parser("eval_memory", help="memory of the PHC evaluation on many long motions")
    memory.add_argument("--motions", type=int, default=1000)
    memory.add_argument("--frames", type=int, default=2000, help="frames per motion")
    memory.add_argument("--num_envs", type=int, default=64)
    memory.add_argument("--chunks", type=int, default=1, help="chunks of num_envs motions to play (0: all)")
    memory.add_argument("--num_threads", type=int, default=None)
    scale = bench_verbs.add_parser(
        "scale", help="load time and memory of training and evaluating on an AMASS-sized motion set",
        description="Generates 11,000 motions (~40 h at 30 fps) from the bundled clips, then measures, each in a "
        "fresh process, the file -> first training iteration and a resample with --config at --num_envs envs, and "
        "one chunk of the streamed evaluation (phc validate).",
    )
    scale.add_argument("--config", default="configs/phc.yaml")
    scale.add_argument("--motions", type=int, default=11000)
    scale.add_argument("--hours", type=float, default=40.0, help="least total duration of the generated set")
    scale.add_argument("--num_envs", type=int, default=64)
    scale.add_argument("--motion_file", default=None,
                       help="the set's .npz: reused if it exists, else generated there and kept (default: a "
                       "temporary file)")
    scale.add_argument("--num_threads", type=int, default=None)
    scale.add_argument("--out", default="runs/bench_scale.json", help="JSON summary path")
    train = bench_verbs.add_parser(
        "train", help="training SPS vs env-only SPS of the same config, and where an iteration's time goes",
        description="Any other --model.* / --data.* flag is passed to the config, e.g. --data.backend mujoco_warp.",
    )
    train.add_argument("--config", required=True)
    train.add_argument("--epochs", type=int, default=6)
    learn = bench_verbs.add_parser(
        "learn",
        help="train from scratch for a budget, then evaluate the policy and the zero-action baseline",
        description="Any other --model.* / --data.* / --trainer.* flag is passed to the config, e.g. "
        "--data.motion_file FILE.",
    )
    learn.add_argument("--config", required=True)
    budget = learn.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="training wall-time budget (evaluations excluded)")
    budget.add_argument("--env_steps", type=int, help="env-step budget")
    learn.add_argument("--eval_every", type=int, default=25, help="evaluate every N iterations (0: only at the end)")
    learn.add_argument("--print_every", type=int, default=5, help="print a curve row every N iterations")
    learn.add_argument("--out", default="runs/bench_learn.json", help="JSON summary path")
    learn.add_argument("--save_ckpt", default=None, metavar="PATH",
                       help="also write the final policy's checkpoint (phc validate / render / export)")  # fmt: skip
    ns, overrides = parser.parse_known_args(argv)
    if overrides and not (ns.verb == "bench" and ns.action in ("learn", "train")):
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if ns.verb in PIPELINE_VERBS or (ns.verb == "motions" and ns.action != "info"):
        return run_pipeline_verb(ns)
    if ns.verb == "motions":
        from phc_lightning.motion.info import print_motion_info

        print_motion_info(ns.file)
        return 0
    if ns.action == "eval_memory":
        from phc_lightning.bench.eval_memory import bench_eval_memory

        bench_eval_memory(ns.motions, ns.frames, ns.num_envs, ns.chunks or None, ns.num_threads)
        return 0
    if ns.action == "scale":
        from phc_lightning.bench.scale import bench_scale

        bench_scale(ns.config, ns.motions, ns.hours, ns.num_envs, ns.motion_file, ns.out, ns.num_threads)
        return 0
    if ns.action == "env":
        from phc_lightning.bench.env_speed import bench_env

        bench_env(ns.num_envs, ns.steps, ns.repeats, ns.num_threads, ns.backend)
    elif ns.action == "train":
        from phc_lightning.bench.train_speed import bench_train

        bench_train(ns.config, ns.epochs, overrides)
    else:
        from phc_lightning.bench.learn import bench_learn

        bench_learn(ns.config, overrides, ns.minutes, ns.env_steps, ns.eval_every, ns.print_every, ns.out,
                    ns.save_ckpt)
    return 0
