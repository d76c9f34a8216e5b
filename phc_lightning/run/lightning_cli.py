"""``PHCCLI``: LightningCLI for ``phc fit`` / ``phc validate``, from a config to a Trainer, a ``PHCModule`` and a
``PHCDataModule`` in one run directory.

The ``phc`` command (:mod:`phc_lightning.cli`) runs it; ``phc bench`` builds one with ``run=False`` to get the same
objects a real run would train.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Set

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.checkpoint_file import read_checkpoint
from phc_lightning.learner.module import PHCModule
from phc_lightning.learner.resume import (
    DATA_NOT_USED,
    NOT_REPLAYED,
    OPTIMIZER_NOTES,
    RESUME_CHANGEABLE,
    RESUME_FIXED,
    check_fixed_settings,
    differences,
)
from phc_lightning.rollout.datamodule import PHCDataModule
from phc_lightning.run.directory import is_first_process, point_loggers_at, resolve_process_run
from phc_lightning.task.actions import ACTION_INTERFACE_KEYS

try:  # jsonargparse's context for a parse without links (private API; without it every setting counts as set)
    from jsonargparse._link_arguments import skip_apply_links
except ImportError:  # pragma: no cover - other jsonargparse versions
    skip_apply_links = None


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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does, and also note which settings the config files and flags set (a resume takes
        the others from the checkpoint)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        resuming = subcommand == "fit" and self.config[subcommand].get("ckpt_path") is not None
        self._given = _given_settings(parser, args) if resuming else None  # a second parse: only when needed

    def _parse_ckpt_path(self) -> None:
        """Resolve the run directory, read the checkpoint (one line for a file that is not one of ours), then settle
        the model settings between config and checkpoint (:mod:`phc_lightning.learner.resume`): ``fit`` uses what
        the config sets and refuses another network or action interface; ``validate`` builds the model as the
        checkpoint was trained. Every setting the checkpoint overrides, or that differs from it, is one line on
        stderr. (Replaces LightningCLI's, which put every checkpoint hyperparameter over the config, silently.)"""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt = None
        if config.ckpt_path not in (None, "last") and Path(config.ckpt_path).is_file():
            ckpt = read_checkpoint(config.ckpt_path)  # before a run directory is claimed for it
        # the run directory, which also turns `--ckpt_path last` into that run's file
        layout = resolve_process_run(config.trainer.default_root_dir or "runs", config.run_name, config.ckpt_path,
                                     fitting=subcommand == "fit")
        config.trainer.default_root_dir = layout.run_dir
        config.ckpt_path = layout.ckpt_path
        if config.ckpt_path is None:
            return
        ckpt = ckpt if ckpt is not None else read_checkpoint(config.ckpt_path)
        saved = ckpt.get("hyper_parameters", {})
        if subcommand == "fit":
            taken = self._settle_resume(config, saved, config.ckpt_path)
            _name_data_changes(config, ckpt.get("datamodule_hyper_parameters", {}))
        else:
            taken = self._checkpoint_model(config, saved)
        taken["init_from"] = None  # the checkpoint's weights are loaded anyway: never read another file for them
        self.config = self.parser.parse_object({subcommand: {"model": taken}}, self.config)

    def _settle_resume(self, config: Any, saved: Dict[str, Any], ckpt_path: str) -> Dict[str, Any]:
        """``fit --ckpt_path``: the model settings to take from the checkpoint. What the config sets (file or flag)
        is used, but the network and the action interface must equal the checkpoint's; what it leaves at the
        default comes from the checkpoint."""
        model = config.model.as_dict()
        given_all = self._given.get(self.config.subcommand) if self._given is not None else None
        given = model if given_all is None else (given_all.get("model") or Namespace()).as_dict()
        check_fixed_settings(saved, given, ckpt_path)
        for key, old, new in differences(saved, given, RESUME_CHANGEABLE, "model."):
            note = OPTIMIZER_NOTES.get(key[len("model."):], "")
            _say(f"phc: resuming with {key}={new!r} (the checkpoint trained with {old!r}){note}")
        taken = {k: saved[k] for k in RESUME_FIXED if k in saved}  # where given, equal to the config's
        taken.update({k: saved[k] for k in RESUME_CHANGEABLE if k in saved and k not in given})
        for key, old, new in differences(taken, model, tuple(taken), "model."):
            _say(f"phc: resuming with the checkpoint's {key}={old!r} (the config does not set it; default {new!r})")
        if config.model.get("init_from"):
            _say(f"phc: resuming: model.init_from={config.model.init_from!r} is not read (a resume continues from the "
                 "checkpoint's weights)")
        return taken

    @staticmethod
    def _checkpoint_model(config: Any, saved: Dict[str, Any]) -> Dict[str, Any]:
        """``validate``: the model as the checkpoint was trained (all its settings but the warm-start source)."""
        for key, old, new in differences(saved, config.model.as_dict(), RESUME_FIXED, "model."):
            why = ("a policy only means something under the action interface it was trained with"
                   if key[len("model."):] in ACTION_INTERFACE_KEYS else "the network is built as it was trained")
            _say(f"phc: using the checkpoint's {key}={old!r} (the config says {new!r}): {why}")
        accepted = set(inspect.signature(PHCModule.__init__).parameters) - {"self", *NOT_REPLAYED}
        return {k: v for k, v in saved.items() if k in accepted}

    def instantiate_classes(self) -> None:
        """A :class:`ConfigError` raised while a class is built (say, a callback's ``__init__``) reaches the user as
        its own line, not as jsonargparse's many-line report of every type it tried."""
        try:
            super().instantiate_classes()
        except Exception as err:
            cause = _config_error_in(err)
            if cause is None or cause is err:
                raise
            raise cause from None


def _given_settings(parser: LightningArgumentParser, args: Any) -> Optional[Namespace]:
    """The settings the config files and flags set, without the defaults; None when that cannot be known (every
    setting then counts as set). Links are skipped: their sources may be unset here (``model.amp``)."""
    if skip_apply_links is None or isinstance(args, (dict, Namespace)):
        return None
    try:
        with skip_apply_links(), contextlib.redirect_stderr(io.StringIO()):
            return parser.parse_args(args, defaults=False)
    except (Exception, SystemExit):  # noqa: BLE001 - the real parse succeeded; count every setting as set
        return None


def _name_data_changes(config: Any, saved: Dict[str, Any]) -> None:
    """``fit --ckpt_path``: the data side is the config's; name each setting that differs from the checkpoint's."""
    data = config.data.as_dict()
    keys = tuple(k for k in saved if k != "amp")  # data.amp is model.amp's copy
    for key, old, new in differences(saved, data, keys, "data."):
        if key[len("data."):] in DATA_NOT_USED:
            _say(f"phc: resuming: {key}={new!r} is not used (the checkpoint trained with {old!r}; its random "
                 "streams continue)")
        else:
            _say(f"phc: resuming with {key}={new!r} (the checkpoint trained with {old!r})")


def _say(line: str) -> None:
    """One notice line on stderr, from the first process only (every process of a DDP run parses the config)."""
    if is_first_process():
        print(line, file=sys.stderr)


def _config_error_in(err: BaseException) -> Optional[ConfigError]:
    """The first :class:`ConfigError` among ``err`` and the exceptions it was raised from or during."""
    seen: Set[int] = set()
    todo: List[Optional[BaseException]] = [err]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        todo += [current.__cause__, current.__context__]
    return None


def _plain(group: object) -> Dict[str, object]:
    """A parsed group (a jsonargparse Namespace) as a plain dict; the checks happen when the model's is built."""
    values = dict(group) if isinstance(group, dict) else dict(vars(group))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}  # lists: YAML round-trips them


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
