"""``PHCCLI``: LightningCLI for ``phc fit`` / ``phc validate``, from a config to a Trainer, a ``PHCModule`` and a
``PHCDataModule`` in one run directory.

The ``phc`` command (:mod:`phc_lightning.cli`) runs it; ``phc bench`` builds one with ``run=False`` to get the same
objects a real run would train.
"""

from __future__ import annotations

import sys
import warnings
from typing import Dict, List, NoReturn, Optional, Set

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from phc_lightning.learner.module import PHCModule
from phc_lightning.rollout.datamodule import PHCDataModule
from phc_lightning.run.directory import point_loggers_at, resolve_process_run
from phc_lightning.task.actions import ACTION_INTERFACE_KEYS


class PHCArgumentParser(LightningArgumentParser):
    """A config value the parser rejects is one line naming the key, not the whole usage text."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse trying alternatives internally: it catches this
            super().error(message, ex)
        text = " ".join(part.strip() for part in message.splitlines() if part.strip())
        limit = 400
        sys.stderr.write(f"phc: error: {text if len(text) <= limit else text[:limit] + ' ...'}\n")
        sys.exit(2)


class PHCCLI(LightningCLI):
    """LightningCLI for ``fit`` and ``validate``: one run directory per run, evaluation only when asked for, the
    env's observation size linked into the model."""

    @staticmethod
    def subcommands() -> Dict[str, Set[str]]:
        """Only ``fit`` and ``validate``: there is no test set or prediction step in motion imitation."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The observation size comes from the data side, so configs never repeat it (the action size is the
        policy's own: its action interface)."""
        parser.link_arguments("data.obs_dim", "model.obs_dim", apply_on="instantiate")
        # One AMP block, the model's: the data side (AMP observations, demos, replay, reward mix) gets a copy, so
        # the two always agree, also when --ckpt_path brings the checkpoint's model settings.
        parser.link_arguments("model.amp", "data.amp", compute_fn=_plain, apply_on="parse")
        parser.add_argument(
            "--run_name",
            type=Optional[str],
            default=None,
            help="run directory name under trainer.default_root_dir (default: the next free version_N)",
        )

    def before_instantiate_classes(self) -> None:
        """Point the loggers and the config file into the run directory; turn an unset evaluation cadence into no
        evaluation during fit."""
        subcommand = self.subcommand
        if subcommand is None:  # run=False: the caller only wants the objects
            return
        trainer = self.config[subcommand].trainer
        trainer.logger = point_loggers_at(trainer.logger, trainer.default_root_dir)
        if subcommand == "validate":  # the run's config.yaml is the fit's; keep it
            self.save_config_kwargs["config_filename"] = "validate_config.yaml"
        if trainer.check_val_every_n_epoch is None:
            trainer.check_val_every_n_epoch = 1
            if subcommand == "fit":
                trainer.limit_val_batches = 0

    def _parse_ckpt_path(self) -> None:
        """Resolve the run directory, then let LightningCLI put the checkpoint's model hyperparameters over the config
        (so ``validate`` uses the checkpoint's action interface and network sizes); say so when that overrides what
        the config asked for."""
        subcommand = self.config.get("subcommand")
        if subcommand:  # first the run directory, which also turns `--ckpt_path last` into that run's file
            config = self.config[subcommand]
            layout = resolve_process_run(config.trainer.default_root_dir or "runs", config.run_name,
                                         config.ckpt_path, fitting=subcommand == "fit")
            config.trainer.default_root_dir = layout.run_dir
            config.ckpt_path = layout.ckpt_path
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


def _plain(group: object) -> Dict[str, object]:
    """A parsed group (a jsonargparse Namespace) as a plain dict; the checks happen when the model's is built."""
    values = dict(group) if isinstance(group, dict) else dict(vars(group))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}  # lists: YAML round-trips them


def _normalized(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


def ignore_expected_warnings() -> None:
    """Silence the Lightning notices that are expected with this design; installed when the CLI runs (and kept for
    the rest of the process, as ``phc bench`` trains after building it), not when this module is imported."""
    # An exact-length IterableDataset for evaluation.
    warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # The bench verbs build the CLI from the arguments they parsed themselves (run_cli(args)) while sys.argv still
    # holds the whole `phc bench ...` line: that is intended, not the mistake Lightning warns about.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # Several processes: the per-iteration and evaluation logs are merged across ranks before they are logged
    # (phc_lightning.rl.distributed), so they are the same on every rank; only the minibatch losses need sync_dist.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def run_cli(args: Optional[List[str]] = None, run: bool = True) -> PHCCLI:
    """Build (and by default run) the Lightning CLI on ``args``."""
    ignore_expected_warnings()
    return PHCCLI(
        PHCModule,
        PHCDataModule,
        args=args,
        run=run,
        parser_class=PHCArgumentParser,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},  # resuming into the same run directory must not fail
        # No --optimizer / --lr_scheduler: the module builds its optimizer itself (manual optimization).
        auto_configure_optimizers=False,
        # check_val_every_n_epoch null: no evaluation during fit unless the user sets a cadence.
        # log_every_n_steps 1: everything is logged once per epoch (iteration), never per step.
        trainer_defaults={"max_epochs": -1, "num_sanity_val_steps": 0, "default_root_dir": "runs",
                          "check_val_every_n_epoch": None, "log_every_n_steps": 1},
    )
