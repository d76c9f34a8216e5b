"""Argparse definitions and dispatch of the motion-pipeline verbs, kept out of :mod:`phc_lightning.cli.verbs`:

``phc motions convert|validate|preview``, ``phc render`` and ``phc export``. Work is imported only when a verb
runs; bad input raises ``MotionFileError`` / ``ConfigError``, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any

PIPELINE_VERBS = ("render", "export")
"""Top-level verbs defined here (``motions`` sub-verbs are added to the existing ``motions`` parser)."""


def _video_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output video, .gif or .mp4")
    parser.add_argument("--motions", nargs="+", default=None, metavar="KEY",
                        help="motion keys to render, in order (default: the first 8)")  # fmt: skip
    parser.add_argument("--fps", type=float, default=30.0, help="video frame rate")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=360)


def add_motion_verbs(motions: Any) -> None:
    """Add ``convert``, ``validate`` and ``preview`` to the ``phc motions`` subparsers."""
    from phc_lightning.motion.amass_splits import SPLIT_CHOICES

    convert = motions.add_parser(
        "convert",
        help="AMASS .npz trees, PHC .pkl or native files -> one native .npz at 30 fps",
        description="SRC: a directory (every AMASS .npz below it), an AMASS .npz, a PHC .pkl or a native .npz. "
        "Unusable files are skipped and listed with the reason.",
    )
    convert.add_argument("src")
    convert.add_argument("out", help="output .npz")
    convert.add_argument("--split", choices=SPLIT_CHOICES, default="all",
                         help="PHC's AMASS split by sub-dataset (directory trees only)")  # fmt: skip
    convert.add_argument("--workers", type=int, default=None, help="processes (default: one per core, at most 8)")
    convert.add_argument("--fps", type=float, default=30.0, help="frame rate of the written motions")
    convert.add_argument("--min_frames", type=int, default=10, help="skip motions shorter than this at --fps")
    convert.add_argument("--keys", nargs="+", default=None, metavar="PATTERN",
                         help="keep only motions whose key matches one of these shell patterns, e.g. '*walk*'")
    convert.add_argument("--exclude", nargs="+", default=(), metavar="PATTERN",
                         help="drop motions whose key matches one of these patterns (e.g. held-out clips)")
    validate = motions.add_parser("validate", help="per-motion checks; exit code 1 when any check fails")
    validate.add_argument("file")
    validate.add_argument("--floor_tolerance", type=float, default=0.05, help="metres below z = 0 allowed")
    validate.add_argument("--max_speed", type=float, default=12.0, help="m/s of any body between two frames")
    validate.add_argument("--max_angular_speed", type=float, default=40.0, help="rad/s of any body")
    validate.add_argument("--min_frames", type=int, default=10)
    validate.add_argument("--dynamics", action="store_true",
                          help="also report stretches that need ground forces this humanoid's feet cannot give "
                               "(inverse dynamics; warnings)")  # fmt: skip
    preview = motions.add_parser("preview", help="render the humanoid posed on the motions to GIF/MP4 (headless)")
    preview.add_argument("file")
    _video_args(preview)


def add_pipeline_verbs(verbs: Any) -> None:
    """Add ``phc render`` and ``phc export``."""
    render = verbs.add_parser("render", help="video of a checkpoint's policy beside a translucent reference")
    render.add_argument("--ckpt_path", required=True)
    render.add_argument("--config", default=None, help="config whose data section to use (motion file, task)")
    render.add_argument("--motion_file", default=None, help="motions to play (default: the run's)")
    render.add_argument("--layout", choices=("overlay", "beside"), default="overlay")
    _video_args(render)
    export = verbs.add_parser("export", help="deterministic policy -> ONNX (normalizer and action interface inside)")
    export.add_argument("--ckpt_path", required=True)
    export.add_argument("--out", required=True, help="output .onnx")
    export.add_argument("--tolerance", type=float, default=None,
                        help="largest onnxruntime vs torch difference (default 1e-4, export.DEFAULT_TOLERANCE)")


def run_pipeline_verb(ns: argparse.Namespace) -> int:
    """Run a verb added by this module; returns the exit code."""
    if ns.verb == "export":
        from phc_lightning.deploy.onnx_export import DEFAULT_TOLERANCE, export_onnx

        tolerance = DEFAULT_TOLERANCE if ns.tolerance is None else ns.tolerance
        diff = export_onnx(ns.ckpt_path, ns.out, tolerance=tolerance)
        print(f"wrote {ns.out} (onnxruntime vs torch: max |diff| {diff:.2e})")
        return 0
    if ns.verb == "render":
        from phc_lightning.deploy.policy_video import render_policy

        runs = render_policy(ns.ckpt_path, ns.out, ns.motions, ns.config, ns.motion_file, ns.layout, ns.fps,
                             ns.width, ns.height)  # fmt: skip
        for run in runs:
            print(f"{run['key']}: {'tracked to the end' if run['success'] else 'failed'} after {run['steps']} steps")
        print(f"wrote {ns.out}")
        return 0
    if ns.action == "convert":
        from phc_lightning.motion.convert import convert_motions

        report = convert_motions(ns.src, ns.out, ns.split, ns.workers, ns.fps, ns.min_frames, keys=ns.keys,
                                 exclude=ns.exclude)
        print(f"wrote {report.out}: {report.motions} motions, {report.frames} frames at {ns.fps:g} fps; "
              f"{len(report.skipped)} file(s) skipped, {report.outside_split} outside split {ns.split!r}")  # fmt: skip
        return 0
    if ns.action == "validate":
        from phc_lightning.motion.checks import print_validation

        return print_validation(ns.file, min_frames=ns.min_frames, floor_tolerance=ns.floor_tolerance,
                                max_speed=ns.max_speed, max_angular_speed=ns.max_angular_speed,
                                dynamics=ns.dynamics)  # fmt: skip
    from phc_lightning.deploy.motion_preview import preview_motions

    count = preview_motions(ns.file, ns.out, ns.motions, ns.fps, ns.width, ns.height)
    print(f"wrote {ns.out} ({count} frames)")
    return 0
