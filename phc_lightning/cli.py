"""The ``phc`` command: LightningCLI for ``fit`` / ``validate`` plus the ``motions`` and ``bench`` verbs.

Usage:
    phc fit --config configs/phc.yaml [--model.learning_rate 3e-4 ...]
    phc validate --config configs/phc.yaml --ckpt_path CKPT [--data.motion_file FILE]
    phc motions info FILE
    phc bench env [--num_envs 512]
    phc bench train --config configs/phc.yaml
    phc bench learn --config configs/phc.yaml --minutes 15 [--data.motion_file FILE] [--model.x V ...]
"""

from __future__ import annotations

import sys
import warnings
from typing import List, Optional

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from phc_lightning.data import PHCDataModule
from phc_lightning.errors import ConfigError
from phc_lightning.module import PHCModule
from phc_lightning.motion.formats import MotionFileError
from phc_lightning.task.actions import ACTION_INTERFACE_KEYS
from phc_lightning.verbs import EXTRA_VERBS, run_extra_verb

# Errors caused by what the user gave us: one line and exit code 2, not a traceback.
USER_ERRORS = (MotionFileError, ConfigError, FileNotFoundError)


class PHCCLI(LightningCLI):
    """LightningCLI with the env's observation size linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The observation size comes from the data side, so configs never repeat it (the action size is the
        policy's own: its action interface)."""
        parser.link_arguments("data.obs_dim", "model.obs_dim", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI puts the checkpoint's model hyperparameters over the config (so ``validate`` uses the
        checkpoint's action interface and network sizes); say so when that overrides what the config asked for."""
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        before = {key: model.get(key) for key in ACTION_INTERFACE_KEYS} if model is not None else {}
        super()._parse_ckpt_path()
        if not before:
            return
        after = self.config[subcommand]["model"]
        for key, asked in before.items():
            used = after.get(key)
            if _normalized(used) != _normalized(asked):
                print(f"phc: using the checkpoint's model.{key}={used!r} (the config says {asked!r}): a policy "
                      "only means something under the action interface it was trained with", file=sys.stderr)

    def instantiate_classes(self) -> None:
        """Build model, data, trainer and callbacks; a value they reject is a config error, not a bug."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            raise ConfigError(str(err).splitlines()[0]) from err


def _normalized(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


def run_cli(args: Optional[List[str]] = None, run: bool = True) -> PHCCLI:
    """Build (and by default run) the Lightning CLI on ``args``."""
    return PHCCLI(
        PHCModule,
        PHCDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},  # resuming into the same run directory must not fail
        trainer_defaults={"max_epochs": -1, "num_sanity_val_steps": 0, "default_root_dir": "runs"},
    )


# Lightning notices that are expected with this design (an exact-length IterableDataset for evaluation).
warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


def main(args: Optional[List[str]] = None) -> None:
    """Console entry point ``phc``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in EXTRA_VERBS:
            sys.exit(run_extra_verb(argv))
        run_cli(args)  # None: LightningCLI reads sys.argv itself
    except USER_ERRORS as err:
        print(f"phc: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
