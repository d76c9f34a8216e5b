"""``EvalStats``: files and table of the PHC evaluation (every motion once, full length, deterministic), and the
final evaluation after fit.

Evaluation runs through Lightning's validation loop (the datamodule's ``val_dataloader`` plays the motions, the
module's ``validation_step`` feeds torchmetrics and logs ``eval/*``), as often as ``trainer.check_val_every_n_epoch``
says. This callback writes the per-motion CSV and a JSON summary into the run directory, prints a summary table,
and runs the final evaluation after fit.

Every figure is given in two conventions (docs/evaluation.md): ours (``mpjpe_g``, ...) and PHC's (``phc/mpjpe_g``,
...). The table shows them side by side; the JSON's ``convention`` field names the convention of every figure.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Optional

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from phc_lightning.evaluation.phc_convention import CONVENTIONS, PHC_PREFIX, convention_of
from phc_lightning.evaluation.report import write_run_report

SUMMARY_KEYS = ("success_rate", "mpjpe_g", "mpjpe_l", "mpjpe_pa", "vel_dist", "accel_dist")


class EvalStats(L.Callback):
    """Files and table of the evaluation, and the final evaluation after fit.

    How often the evaluation runs during fit is the trainer's setting, ``trainer.check_val_every_n_epoch``
    (none unless it is set; see the CLI).

    Args:
        final: evaluate once more when fit ends, and send the result to every logger and the dashboard.
        output_dir: where CSV/JSON go (default: ``<run dir>/eval``).
    """

    def __init__(self, final: bool = True, output_dir: Optional[str] = None) -> None:
        self.final = final
        self.output_dir = output_dir
        self.last_files: Dict[str, str] = {}

    def _out_dir(self, trainer: L.Trainer) -> str:
        if self.output_dir:
            return self.output_dir
        base = trainer.log_dir or trainer.default_root_dir
        return os.path.join(base, "eval")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the files of the evaluation that just finished."""
        if trainer.sanity_checking:
            return
        summary, rows = pl_module.eval_results()
        tag = "validate" if trainer.state.fn == "validate" else f"epoch{trainer.current_epoch:05d}"
        self.write(trainer, summary, rows, tag)
        if trainer.state.fn == "validate" and trainer.is_global_zero:
            self.print_table(summary, tag)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final evaluation with the trained policy: ``eval/*`` in every logger (x-axis env steps), the dashboard, and
        the ``final`` files."""
        dm = trainer.datamodule
        if not self.final or dm is None or getattr(dm, "env", None) is None:
            return
        # The dataset itself, outside Lightning's loops: fit has ended, there is no validation loop to run it in.
        summary, rows = pl_module.evaluate(dm.val_dataloader().dataset)
        metrics = {"eval/" + k: v for k, v in summary.items()}
        step = int(getattr(pl_module, "env_steps", trainer.global_step))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()
        # The dashboard and any user callback read the final result where Lightning keeps logged metrics.
        trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})
        trainer.callback_metrics["eval/final"] = torch.tensor(1.0)
        self.write(trainer, summary, rows, "final")
        if trainer.is_global_zero:
            self.print_table(summary, "final")

    def write(self, trainer: L.Trainer, summary: Dict[str, float], rows: List[Dict[str, Any]], tag: str) -> None:
        """``<tag>_motions.csv`` (key, frames, frames played, success, mpjpe) and ``<tag>_summary.json``."""
        out = self._out_dir(trainer)  # trainer.log_dir is a broadcast with several processes: every rank asks
        if trainer.global_rank != 0:
            return
        os.makedirs(out, exist_ok=True)
        motions = trainer.datamodule.motions
        csv_path = os.path.join(out, f"{tag}_motions.csv")
        fields = ["motion_id", "key", "frames", "frames_played", "success", "mpjpe_g", "mpjpe_l", "mpjpe_pa"]
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                mid = row["motion_id"]
                writer.writerow(
                    {
                        "motion_id": mid,
                        "key": motions.keys[mid],
                        "frames": int(motions.num_frames[mid]),
                        # the initial frame is set by the reset, then one frame per control step
                        "frames_played": row["steps_played"] + 1,
                        "success": int(row["success"]),
                        **{k: f"{row[k]:.3f}" for k in ("mpjpe_g", "mpjpe_l", "mpjpe_pa")},
                    }
                )
        json_path = os.path.join(out, f"{tag}_summary.json")
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
        with open(json_path, "w") as f:
            json.dump({"tag": tag, "epoch": trainer.current_epoch, "env_steps": int(trainer.lightning_module.env_steps),
                       **clean, "convention": {k: convention_of(k) for k in summary},
                       "conventions": {**CONVENTIONS, "doc": "docs/evaluation.md"}}, f, indent=2)
        self.last_files = {"csv": csv_path, "json": json_path}
        self.last_files["png"] = write_run_report(out, tag, rows, summary, motions)

    def print_table(self, summary: Dict[str, float], tag: str) -> None:
        """The summary as a rich table on stdout: our convention and PHC's side by side."""
        table = Table(title=f"PHC evaluation ({tag}): {int(summary.get('num_motions', 0))} motions",
                      caption="ours: errors stop at a motion's failure; PHC: a failed motion is replayed and its "
                              "replays count (docs/evaluation.md)")  # fmt: skip
        table.add_column("metric")
        for name in ("ours, all", "ours, successful", "PHC, all", "PHC, successful"):
            table.add_column(name, justify="right")
        for key in SUMMARY_KEYS:
            unit = "" if key == "success_rate" else " mm"
            cells = [summary.get(prefix + key + suffix) for prefix in ("", PHC_PREFIX) for suffix in ("", "_succ")]
            table.add_row(key, *("" if v is None else f"{v:.3f}{unit}" for v in cells))
        console = Console()
        console.print(table)
        for path in self.last_files.values():
            console.print(f"wrote {path}", soft_wrap=True)
