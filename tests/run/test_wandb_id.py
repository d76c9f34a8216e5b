"""Only the launching process writes a run's W&B id; a process torchrun or SLURM started as another rank reads it,
waits briefly for it, or goes without, and never writes (its run directory may not exist)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

from jsonargparse import Namespace

from phc_lightning.run.directory import LAYOUT_ENV, WANDB_ID_FILE, point_loggers_at
from tests.helpers import checkout_env

WANDB_ID_ENV = "PHC_WANDB_RUN_ID"  # the first process hands the id to the processes it launches in this variable

# What a non-zero rank does when the CLI resolves its run: point the loggers into the run directory.
RANK_1 = """
import sys
from jsonargparse import Namespace
from phc_lightning.run import directory
directory.WANDB_ID_WAIT = float(sys.argv[2])
logger = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(offline=True))
print("id:", directory.point_loggers_at(logger, sys.argv[1]).init_args.get("id"))
"""


def torchrun_rank_1_env() -> Dict[str, str]:
    """The environment torchrun gives global rank 1 of 2 (no layout or id handed down by a launching phc)."""
    env = {k: v for k, v in checkout_env().items() if k not in (LAYOUT_ENV, WANDB_ID_ENV)}
    env.update(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT="29500")
    return env


def rank_1(run_dir: Path, wait: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RANK_1, str(run_dir), str(wait)], env=torchrun_rank_1_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wandb_logger() -> Namespace:
    return Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(offline=True))


def test_a_torchrun_rank_never_writes_into_a_run_directory_that_does_not_exist(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "version_0"  # rank 0 (elsewhere) has not created it
    proc = rank_1(run_dir, wait=0.3)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "id: None" in out  # no id, which a rank that does not log to W&B does not need
    assert not (tmp_path / "runs").exists()


def test_a_torchrun_rank_waits_for_the_id_the_launching_process_writes(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "version_0"
    run_dir.mkdir()
    proc = rank_1(run_dir, wait=60.0)  # started before rank 0 wrote the id, as torchrun may
    time.sleep(1.0)
    assert not (run_dir / WANDB_ID_FILE).exists()  # it did not write one of its own
    monkeypatch.setenv(WANDB_ID_ENV, "stale-id-of-another-run")  # the first process goes by its run's file
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    run_id = point_loggers_at(wandb_logger(), str(run_dir)).init_args.id  # this process is rank 0: it writes
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert f"id: {run_id}" in out
    assert (run_dir / WANDB_ID_FILE).read_text().strip() == run_id  # not overwritten
    # processes Lightning launches from rank 0 get it in the environment; a resumed run reads the same file
    assert os.environ[WANDB_ID_ENV] == run_id
    assert point_loggers_at(wandb_logger(), str(run_dir)).init_args.id == run_id
