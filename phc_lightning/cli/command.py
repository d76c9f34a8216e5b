"""The ``phc`` console command: Lightning's ``fit`` / ``validate`` through
:class:`~phc_lightning.run.lightning_cli.PHCCLI`, the other verbs (``motions``, ``bench``, ``render``, ``export``)
through :mod:`phc_lightning.cli.verbs`.

Usage:
    phc fit --config configs/phc.yaml [--model.learning_rate 3e-4 ...]
    phc validate --config configs/phc.yaml --ckpt_path CKPT [--data.motion_file FILE]
    phc motions info|convert|validate|preview ...
    phc render --ckpt_path CKPT --out video.mp4
    phc export --ckpt_path CKPT --out policy.onnx
    phc bench env|train|learn|eval_memory|scale ...
"""

from __future__ import annotations

import sys
from typing import List, Optional

from phc_lightning.cli.verbs import EXTRA_VERBS, run_extra_verb
from phc_lightning.core.errors import ConfigError
from phc_lightning.motion.raw_motion import MotionFileError

# Errors caused by what the user gave us: one line and exit code 2, not a traceback.
USER_ERRORS = (MotionFileError, ConfigError, FileNotFoundError)


def main(args: Optional[List[str]] = None) -> None:
    """Console entry point ``phc``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in EXTRA_VERBS:
            sys.exit(run_extra_verb(argv))
        from phc_lightning.run.lightning_cli import run_cli  # Lightning is imported only for fit / validate

        run_cli(args)  # None: LightningCLI reads sys.argv itself
    except USER_ERRORS as err:
        print(f"phc: error: {err}", file=sys.stderr)
        sys.exit(2)
