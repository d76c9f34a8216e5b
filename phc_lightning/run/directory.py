"""One directory per run: where ``phc fit`` / ``phc validate`` put logs, the resolved config, evaluation files and
checkpoints, and which run ``--ckpt_path last`` continues.

Layout under ``--trainer.default_root_dir ROOT`` (``runs`` by default)::

    ROOT/<run>/config.yaml            resolved config of the fit (validate writes validate_config.yaml)
    ROOT/<run>/events.out.tfevents.*  TensorBoard (or metrics.csv, or wandb/): one logger version per run
    ROOT/<run>/eval/                  <tag>_motions.csv, <tag>_summary.json of every evaluation
    ROOT/<run>/checkpoints/           last.ckpt, epochNNNNN.ckpt (newest K), interrupted.ckpt

``<run>`` is ``--run_name`` or the next free ``version_N``, claimed atomically, so two runs started in one
folder never share a directory. A resumed run (``--ckpt_path last`` or a checkpoint inside a run) writes into
the run it continues: the same TensorBoard/CSV directory, the same W&B run id.

Several processes (Lightning DDP): only the first one claims a directory. Lightning's launcher starts the other
processes of a machine by re-running the command, after the first one resolved its run (:func:`resolve_process_run`
hands the layout down in the environment). Processes started by torchrun, SLURM or on other nodes resolve alone and
claim nothing; Lightning broadcasts rank 0's log and checkpoint folders to them, and ``--run_name`` makes every
process agree from the start. Likewise only the first process writes the run's W&B id (:func:`wandb_run_id`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from jsonargparse import Namespace

from phc_lightning.core.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
WANDB_ID_FILE = "wandb_run_id"
WANDB_ID_ENV = "PHC_WANDB_RUN_ID"
"""Environment variable through which the first process hands the run's W&B id to the processes it launches."""
WANDB_ID_WAIT = 5.0
"""Seconds a process started by another launcher waits for the first process to write the W&B id."""
LAYOUT_ENV = "PHC_RUN_LAYOUT"
"""Environment variable through which the first process hands its :class:`RunLayout` to the processes it launches."""
_RANK_ENVS = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID")
_DEFAULT_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"
_LIGHTNING_CSV = ("lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.csv_logs.CSVLogger")


@dataclass
class RunLayout:
    """Where one invocation writes, and the checkpoint it starts from (a file path, or None)."""

    run_dir: str
    ckpt_path: Optional[str]
    resumed: bool


def is_first_process() -> bool:
    """False in a process a distributed launcher started as other than global rank 0 (read from the environment:
    the process group does not exist yet when the CLI resolves the run)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_ENVS)


def resolve_process_run(root: str, run_name: Optional[str], ckpt_path: Optional[str], fitting: bool) -> RunLayout:
    """:func:`resolve_run` for this process: the first process resolves (and claims) and publishes the layout in
    ``PHC_RUN_LAYOUT`` for the processes Lightning launches from it; the others take it from there, or, started by
    another launcher, resolve without claiming a directory."""
    if is_first_process():
        layout = resolve_run(root, run_name, ckpt_path, fitting)
        os.environ[LAYOUT_ENV] = json.dumps([layout.run_dir, layout.ckpt_path, layout.resumed])
        return layout
    if LAYOUT_ENV in os.environ:
        run_dir, ckpt, resumed = json.loads(os.environ[LAYOUT_ENV])
        return RunLayout(run_dir, ckpt, resumed)
    return resolve_run(root, run_name, ckpt_path, fitting, claim=False)


def resolve_run(root: str, run_name: Optional[str], ckpt_path: Optional[str], fitting: bool,
                claim: bool = True) -> RunLayout:
    """Pick the run directory of this invocation.

    Args:
        root: ``trainer.default_root_dir``.
        run_name: ``--run_name`` (None: a new ``version_N``, or the run a checkpoint belongs to).
        ckpt_path: ``--ckpt_path``: None, ``"last"`` (the newest ``last.ckpt`` under ``root``, or of
            ``run_name``), or a file.
        fitting: ``phc fit`` (a new run must not reuse a directory that holds checkpoints).
        claim: create the directory of a new run (False: only name the next free one; a secondary process).

    Raises:
        ConfigError: ``last`` with no checkpoint to find, a missing checkpoint file, or ``--run_name`` of a run
            that already has checkpoints without ``--ckpt_path``.
    """
    if ckpt_path == "last":
        last = _find_last(root, run_name)
        return RunLayout(str(last.parent.parent), str(last), True)
    if ckpt_path is not None:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ConfigError(f"--ckpt_path: {ckpt_path}: no such checkpoint file")
        if path.parent.name == CHECKPOINT_DIR and run_name is None:  # a checkpoint of one of our runs
            return RunLayout(str(path.parent.parent), str(path), True)
    if run_name is not None:
        run_dir = Path(root) / run_name
        if claim and fitting and ckpt_path is None and any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
            raise ConfigError(f"--run_name {run_name}: {run_dir} already holds a run's checkpoints; continue it with "
                              "--ckpt_path last, or choose another --run_name")
        if claim:
            run_dir.mkdir(parents=True, exist_ok=True)
        return RunLayout(str(run_dir), ckpt_path, False)
    return RunLayout(_claim_new_run(Path(root)) if claim else _next_free_run(Path(root)), ckpt_path, False)


def _find_last(root: str, run_name: Optional[str]) -> Path:
    runs = [Path(root) / run_name] if run_name is not None else [p for p in Path(root).glob("*") if p.is_dir()]
    candidates = [p / CHECKPOINT_DIR / "last.ckpt" for p in runs if (p / CHECKPOINT_DIR / "last.ckpt").is_file()]
    if not candidates:
        where = Path(root) / run_name if run_name is not None else Path(root)
        raise ConfigError(f"--ckpt_path last: no {CHECKPOINT_DIR}/last.ckpt under {where}; start a run first, or "
                          "pass a checkpoint file")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _next_index(root: Path) -> int:
    taken = [int(p.name[len("version_"):]) for p in root.glob("version_*") if p.name[len("version_"):].isdigit()]
    return max(taken, default=-1) + 1


def _next_free_run(root: Path) -> str:
    return str(root / f"version_{_next_index(root)}")


def _claim_new_run(root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    index = _next_index(root)
    while True:
        run_dir = root / f"version_{index}"
        try:
            run_dir.mkdir()  # atomic: a second run started at the same moment gets the next index
            return str(run_dir)
        except FileExistsError:
            index += 1


def point_loggers_at(logger: Any, run_dir: str) -> Any:
    """The trainer's ``logger`` config with every logger writing into ``run_dir`` as one version.

    ``True`` / None (Lightning's default logger) becomes a TensorBoardLogger there; False stays False. A logger's
    ``save_dir`` is taken relative to the run directory (``.``: the run directory itself; an absolute path is kept).
    TensorBoard and CSV loggers get ``name=""`` and ``version=""`` (one version per run: their log dir is
    ``save_dir``), and Lightning's ``CSVLogger`` becomes :class:`phc_lightning.run.loggers.CSVLogger`, which appends to
    the ``metrics.csv`` of a resumed run instead of deleting it; a W&B logger gets the run's id (kept in
    ``run_dir/wandb_run_id``, :func:`wandb_run_id`), so a resumed run continues it.
    """
    if logger is False:
        return logger
    if logger is None or logger is True:
        logger = Namespace(class_path=_DEFAULT_LOGGER, init_args=Namespace(save_dir="."))
    loggers: List[Any] = logger if isinstance(logger, list) else [logger]
    for item in loggers:
        if not isinstance(item, Namespace) or "class_path" not in item:
            continue  # an already-built logger object: the user placed it
        args = item.get("init_args") or Namespace()
        kind = item.class_path.rsplit(".", 1)[-1]
        if item.class_path in _LIGHTNING_CSV:  # Lightning's deletes metrics.csv of a run it resumes
            item["class_path"] = "phc_lightning.run.loggers.CSVLogger"
        args["save_dir"] = os.path.normpath(os.path.join(run_dir, args.get("save_dir") or "."))
        if kind in ("TensorBoardLogger", "CSVLogger"):
            args["name"], args["version"] = "", ""
        elif kind == "WandbLogger" and not args.get("id"):
            run_id = wandb_run_id(run_dir)
            if run_id is not None:
                args["id"] = run_id
        item["init_args"] = args
    return logger


def wandb_run_id(run_dir: str, wait: Optional[float] = None) -> Optional[str]:
    """The W&B run id of ``run_dir`` for this process.

    Only the first process (the one that claimed the run directory) writes it: it reads ``run_dir/wandb_run_id``, or
    creates it for a new run, and hands it to the processes Lightning launches from it in ``PHC_WANDB_RUN_ID``. A
    process started by torchrun or SLURM takes it from there, or reads the file, waiting up to ``wait`` seconds
    (default :data:`WANDB_ID_WAIT`) for the first process to write it; it never writes, since its run directory may
    not exist yet (or ever, on another machine). None when it found none: only rank 0 logs to W&B, so another rank
    needs no id.
    """
    path = os.path.join(run_dir, WANDB_ID_FILE)
    if is_first_process():
        run_id = _read_id(path)
        if run_id is None:
            run_id = f"{os.path.basename(os.path.normpath(run_dir))}-{uuid.uuid4().hex[:8]}"
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(run_id + "\n")
            os.replace(tmp, path)  # a process waiting for the file never reads half of it
        os.environ[WANDB_ID_ENV] = run_id
        return run_id
    if os.environ.get(WANDB_ID_ENV):
        return os.environ[WANDB_ID_ENV]
    deadline = time.monotonic() + (WANDB_ID_WAIT if wait is None else wait)
    while True:
        run_id = _read_id(path)
        if run_id is not None or time.monotonic() >= deadline:
            return run_id
        time.sleep(0.1)


def _read_id(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
