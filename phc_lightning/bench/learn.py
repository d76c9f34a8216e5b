"""``phc bench learn``: does a config learn to track, how fast, and how steadily? (A benchmark, never a test.)

Trains the config's model from scratch on its data for a budget of training minutes or env steps, with the
config's own training callbacks (lr schedule, motion resampling, your own) but none that writes into a run
directory. Every ``--eval_every`` iterations Lightning's validation loop runs the full PHC evaluation
(deterministic, every motion once, full length), so failure-driven resampling sees it as in a real run; the clock
of the budget stops while it evaluates. At the end it evaluates the final policy and the
zero-action baseline under the same action interface, prints the curve and both tables and names the best evaluation
(higher success rate, then lower ``mpjpe_g``) beside the final one, and writes a JSON summary; with ``--save_ckpt``
also the final policy's checkpoint, for ``phc validate`` / ``render`` / ``export``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, List, Optional

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from rich.console import Console
from rich.table import Table

from phc_lightning.evaluation.metrics import evaluation_score
from phc_lightning.evaluation.playback import EvalDataset

CURVE_KEYS = {
    "episode_length": "charts/episode_length",
    "episode_return": "charts/episode_return",
    "explained_variance": "losses/explained_variance",
    "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac",
    "learning_rate": "charts/learning_rate",
    "action_std": "charts/action_std",
    "value_loss": "losses/value",
    "update_fraction": "charts/update_fraction",
}
"""Curve column -> logged metric it comes from."""

EVAL_KEYS = ("success_rate", "num_motions", "mpjpe_g", "mpjpe_l", "mpjpe_pa", "vel_dist", "accel_dist")


def _finite(value: float) -> Optional[float]:
    return value if isinstance(value, float) and math.isfinite(value) else None


def evaluation_record(summary: Dict[str, float], rows: List[Dict[str, Any]], keys: List[str]) -> Dict[str, Any]:
    """A JSON-ready evaluation: summary metrics, number of successes and the per-motion rows (with motion keys)."""
    record: Dict[str, Any] = {k: _finite(float(summary[k])) for k in EVAL_KEYS if k in summary}
    record["num_success"] = sum(bool(r["success"]) for r in rows)
    record["motions"] = [
        {"key": keys[r["motion_id"]], "success": bool(r["success"]), "steps_played": int(r["steps_played"]),
         **{m: _finite(float(r[m])) for m in ("mpjpe_g", "mpjpe_l", "mpjpe_pa")}}
        for r in rows
    ]
    return record


class LearnRecorder(L.Callback):
    """Records the curve, runs the periodic and final evaluations, and stops at the budget.

    Args:
        minutes: training wall-time budget (collect + update; evaluations do not count).
        env_steps: env-step budget.
        print_every: print a curve row every this many iterations.
    """

    def __init__(self, minutes: Optional[float], env_steps: Optional[int], print_every: int) -> None:
        self.budget_s = None if minutes is None else 60.0 * minutes
        self.budget_steps = env_steps
        self.print_every = print_every
        self.train_seconds = 0.0
        self.curve: List[Dict[str, Any]] = []
        self.evals: List[Dict[str, Any]] = []
        self.final: Dict[str, Any] = {}
        self.baseline: Dict[str, Any] = {}
        self.console = Console()
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record a periodic evaluation (it ran after this iteration's update)."""
        stats = pl_module.last_iteration
        row = {"epoch": trainer.current_epoch, "env_steps": int(pl_module.env_steps),
               "train_minutes": (self.train_seconds + stats["collect_time"] + stats["learn_time"]) / 60.0}
        summary, rows = pl_module.eval_results()
        self._record(trainer, summary, rows, row, "eval")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Append a curve row; stop once a budget is spent."""
        stats = pl_module.last_iteration
        self.train_seconds += stats["collect_time"] + stats["learn_time"]
        metrics = trainer.callback_metrics
        row: Dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "env_steps": int(pl_module.env_steps),
            "train_minutes": self.train_seconds / 60.0,
            "wall_minutes": (time.perf_counter() - self._start) / 60.0,
        }
        for col, key in CURVE_KEYS.items():
            row[col] = _finite(float(metrics[key])) if key in metrics else None
        self.curve.append(row)
        if trainer.current_epoch % self.print_every == 0:
            self.console.print(self._curve_line(row), highlight=False, soft_wrap=True)
        spent = (self.budget_s is not None and self.train_seconds >= self.budget_s) or (
            self.budget_steps is not None and row["env_steps"] >= self.budget_steps
        )
        if spent:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final policy and zero-action baseline, same env, same motions."""
        row = self.curve[-1] if self.curve else {"epoch": 0, "env_steps": 0, "train_minutes": 0.0}
        dm = trainer.datamodule
        summary, rows = pl_module.evaluate(EvalDataset(dm.env, lambda: pl_module))
        self.final = self._record(trainer, summary, rows, row, "final policy")
        summary, rows = pl_module.evaluate(EvalDataset(dm.env, lambda: pl_module, zero_actions=True))
        self.baseline = evaluation_record(summary, rows, dm.motions.keys)
        self._print_eval("zero-action baseline", self.baseline)

    def _record(self, trainer: L.Trainer, summary: Dict[str, float], rows: List[Dict[str, Any]],
                row: Dict[str, Any], tag: str) -> Dict[str, Any]:
        record = evaluation_record(summary, rows, trainer.datamodule.motions.keys)
        record.update(epoch=row["epoch"], env_steps=row["env_steps"], train_minutes=row["train_minutes"])
        self.evals.append(record)
        self._print_eval(f"{tag} @ {row['env_steps']:,} env steps, {row['train_minutes']:.1f} min", record)
        return record

    @staticmethod
    def _curve_line(row: Dict[str, Any]) -> str:
        def f(key: str, spec: str) -> str:
            return "-" if row.get(key) is None else format(row[key], spec)

        return (
            f"epoch {row['epoch']:4d}  steps {row['env_steps']:>9,}  train {row['train_minutes']:5.1f} min  "
            f"len {f('episode_length', '6.1f')}  ret {f('episode_return', '6.2f')}  "
            f"ev {f('explained_variance', '5.2f')}  kl {f('approx_kl', '.4f')}  clip {f('clipfrac', '.3f')}  "
            f"lr {f('learning_rate', '.1e')}  std {f('action_std', '.3f')}  upd {f('update_fraction', '.2f')}"
        )

    def _print_eval(self, title: str, record: Dict[str, Any]) -> None:
        table = Table(title=f"{title}: {record['num_success']}/{len(record['motions'])} succeed, "
                            f"mpjpe_g {record.get('mpjpe_g') or float('nan'):.1f} mm")
        for col in ("motion", "success", "steps", "mpjpe_g", "mpjpe_l", "mpjpe_pa"):
            table.add_column(col, justify="right")
        for m in record["motions"]:
            table.add_row(m["key"], "yes" if m["success"] else "no", str(m["steps_played"]),
                          *(f"{m[k]:.1f}" if m[k] is not None else "-" for k in ("mpjpe_g", "mpjpe_l", "mpjpe_pa")))
        self.console.print(table)


def stability(evals: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Largest drop in successful motions below the best earlier evaluation, over the periodic evaluations."""
    best, worst_drop = -1, 0
    for record in evals:
        if best >= 0:
            worst_drop = max(worst_drop, best - record["num_success"])
        best = max(best, record["num_success"])
    return {"max_success_drop": worst_drop, "best_num_success": best}


def best_evaluation(evals: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The best of the periodic and final evaluations (higher success rate, then lower ``mpjpe_g``; the earliest of
    equals): which one (its index in ``evaluations``, and whether it is the final one), when, and how good."""
    if not evals:
        return None

    def score(i: int) -> Any:
        record = evals[i]
        rate, error = record.get("success_rate"), record.get("mpjpe_g")
        return evaluation_score(math.nan if rate is None else rate, math.nan if error is None else error), -i

    index = max(range(len(evals)), key=score)
    record = evals[index]
    return {"evaluation": index, "final": index == len(evals) - 1, "epoch": record["epoch"],
            "env_steps": record["env_steps"], "train_minutes": record["train_minutes"],
            "num_success": record["num_success"], "num_motions": len(record["motions"]),
            "success_rate": record.get("success_rate"), "mpjpe_g": record.get("mpjpe_g")}


CLIPFRAC_BOUND = 0.3
"""Clip fraction an iteration should stay under (PPO's usual sign that updates leave the trust region)."""


def trust_region(curve: List[Dict[str, Any]]) -> Dict[str, Any]:
    """approx KL and clipfrac over the iterations: mean, max, and the share of iterations under the clipfrac bound."""
    kl = [row["approx_kl"] for row in curve if row.get("approx_kl") is not None]
    clipped = [row for row in curve if row.get("clipfrac") is not None]
    cf = [row["clipfrac"] for row in clipped]
    return {
        "approx_kl_mean": sum(kl) / len(kl) if kl else None,
        "approx_kl_max": max(kl) if kl else None,
        "clipfrac_mean": sum(cf) / len(cf) if cf else None,
        "clipfrac_max": max(cf) if cf else None,
        "clipfrac_max_epoch": max(clipped, key=lambda row: row["clipfrac"])["epoch"] if cf else None,
        "clipfrac_below_bound": sum(v < CLIPFRAC_BOUND for v in cf) / len(cf) if cf else None,
        "clipfrac_bound": CLIPFRAC_BOUND,
    }


def _print_summary(summary: Dict[str, Any]) -> None:
    stab, tr = summary["stability"], summary["trust_region"]

    def f(value: Optional[float], spec: str) -> str:
        return "-" if value is None else format(value, spec)

    best, final = summary["best"], summary["final"]
    if best is not None and final:
        which = "the final one" if best["final"] else f"evaluation {best['evaluation']}, epoch {best['epoch']}"
        Console().print(
            f"best evaluation: {which} @ {best['env_steps']:,} env steps: {best['num_success']}/"
            f"{best['num_motions']} tracked, mpjpe_g {f(best['mpjpe_g'], '.1f')} mm  |  final: "
            f"{final['num_success']}/{len(final['motions'])} tracked, mpjpe_g {f(final.get('mpjpe_g'), '.1f')} mm",
            highlight=False, soft_wrap=True,
        )
    Console().print(
        f"stability: best {stab['best_num_success']} motions, largest drop below the best so far "
        f"{stab['max_success_drop']}  |  approx KL mean {f(tr['approx_kl_mean'], '.4f')} max "
        f"{f(tr['approx_kl_max'], '.4f')}  |  clipfrac mean {f(tr['clipfrac_mean'], '.3f')} max "
        f"{f(tr['clipfrac_max'], '.3f')} (epoch {tr['clipfrac_max_epoch']}), under {tr['clipfrac_bound']} in "
        f"{f(None if tr['clipfrac_below_bound'] is None else 100 * tr['clipfrac_below_bound'], '.1f')} % of "
        f"iterations",
        highlight=False, soft_wrap=True,
    )


def bench_learn(
    config: str,
    overrides: List[str],
    minutes: Optional[float],
    env_steps: Optional[int],
    eval_every: int,
    print_every: int,
    out: Optional[str],
    save_ckpt: Optional[str] = None,
) -> Dict[str, Any]:
    """Train from scratch for the budget, evaluate, write and return the summary (see the module docstring)."""
    from phc_lightning.run.lightning_cli import run_cli

    if minutes is None and env_steps is None:
        raise ValueError("phc bench learn: give a budget, --minutes M or --env_steps S")
    cli = run_cli(["--config", config, *overrides], run=False)
    # The config's training callbacks, minus those that write into (or draw) a run directory, or evaluate on
    # their own schedule: this benchmark evaluates itself and leaves the user's runs untouched.
    from callbacks import EvalStats

    keep = [cb for cb in cli.trainer.callbacks
            if not isinstance(cb, (Checkpoint, ProgressBar, EvalStats, SaveConfigCallback))]
    recorder = LearnRecorder(minutes, env_steps, print_every)
    cli.datamodule.hparams.total_timesteps = max(cli.datamodule.hparams.total_timesteps, env_steps or 0)
    trainer = L.Trainer(
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=max(eval_every, 1), limit_val_batches=1.0 if eval_every > 0 else 0,
        accelerator=cli.trainer.accelerator, devices=1, callbacks=[*keep, recorder],
    )
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    if save_ckpt:  # the policy the "final" evaluation played, with its action interface and normalizer
        os.makedirs(os.path.dirname(os.path.abspath(save_ckpt)), exist_ok=True)
        trainer.save_checkpoint(save_ckpt)
    summary = {
        "config": config,
        "overrides": overrides,
        "budget": {"minutes": minutes, "env_steps": env_steps},
        "checkpoint": save_ckpt or None,
        "train_minutes": recorder.train_seconds / 60.0,
        "wall_minutes": (time.perf_counter() - start) / 60.0,
        "env_steps": recorder.curve[-1]["env_steps"] if recorder.curve else 0,
        "final": recorder.final,
        "best": best_evaluation(recorder.evals),
        "zero_action_baseline": recorder.baseline,
        "stability": stability(recorder.evals),
        "trust_region": trust_region(recorder.curve),
        "evaluations": recorder.evals,
        "curve": recorder.curve,
    }
    _print_summary(summary)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(summary, f, indent=1)
        Console().print(f"wrote {out}")
    if save_ckpt:
        Console().print(f"wrote {save_ckpt} (phc validate --config {config} --ckpt_path {save_ckpt})")
    return summary
