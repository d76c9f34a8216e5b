"""``EvalStats``: the PHC evaluation (every motion once, full length, deterministic) on a schedule and at the end.

Evaluation runs through Lightning's validation loop (the datamodule's ``val_dataloader`` plays the motions, the
module's ``validation_step`` feeds torchmetrics and logs ``eval/*``). This callback owns the schedule, writes the
per-motion CSV and a JSON summary beside the logs, prints a summary table, and runs the final evaluation after fit.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Optional

import lightning as L
from rich.console import Console
from rich.table import Table

SUMMARY_KEYS = ("success_rate", "mpjpe_g", "mpjpe_l", "mpjpe_pa", "vel_dist", "accel_dist")


class EvalStats(L.Callback):
    """Schedule, files and table of the evaluation.

    Args:
        every_n_epochs: evaluate during fit every this many epochs (PPO iterations).
        final: evaluate once more when fit ends.
        output_dir: where CSV/JSON go (default: ``<log dir>/eval``).
    """

    def __init__(self, every_n_epochs: int = 1500, final: bool = True, output_dir: Optional[str] = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"EvalStats every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.final = final
        self.output_dir = output_dir
        self.last_files: Dict[str, str] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The evaluation cadence is this callback's setting, not the trainer's."""
        if stage == "fit":
            trainer.check_val_every_n_epoch = self.every_n_epochs

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
        if trainer.state.fn == "validate":
            self.print_table(summary, tag)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final evaluation with the trained policy, logged under ``eval/*`` and written as ``final``."""
        dm = trainer.datamodule
        if not self.final or dm is None or getattr(dm, "env", None) is None:
            return
        # Iterate the dataset itself: a DataLoader iterator would draw from the global RNG that the final
        # checkpoint (saved after this hook) carries, and a resumed run must not see that draw.
        summary, rows = pl_module.evaluate(dm.val_dataloader().dataset)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"eval/" + k: v for k, v in summary.items()}, step=trainer.global_step)
            trainer.logger.save()
        self.write(trainer, summary, rows, "final")
        self.print_table(summary, "final")

    def write(self, trainer: L.Trainer, summary: Dict[str, float], rows: List[Dict[str, Any]], tag: str) -> None:
        """``<tag>_motions.csv`` (key, frames, frames played, success, mpjpe) and ``<tag>_summary.json``."""
        if trainer.global_rank != 0:
            return
        out = self._out_dir(trainer)
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
                       **clean}, f, indent=2)
        self.last_files = {"csv": csv_path, "json": json_path}

    def print_table(self, summary: Dict[str, float], tag: str) -> None:
        """The summary as a rich table on stdout."""
        table = Table(title=f"PHC evaluation ({tag}): {int(summary.get('num_motions', 0))} motions")
        table.add_column("metric")
        table.add_column("all motions", justify="right")
        table.add_column("successful only", justify="right")
        for key in SUMMARY_KEYS:
            unit = "" if key == "success_rate" else " mm"
            succ = summary.get(key + "_succ")
            table.add_row(key, f"{summary[key]:.3f}{unit}", "" if succ is None else f"{succ:.3f}{unit}")
        console = Console()
        console.print(table)
        for path in self.last_files.values():
            console.print(f"wrote {path}", soft_wrap=True)
