"""Training dashboard that replaces Lightning's progress bar (one Lightning epoch = one PPO iteration).

On a terminal: a compact rich ``Live`` panel, redrawn ``refresh_per_second`` times a second and at every phase
change (collecting → learning → evaluating…). Elsewhere (CI, ``phc fit > log.txt``): one stable, grep-able line per
epoch (Lightning's 0-based ``current_epoch``), plus ``epoch 12 | evaluating…`` / ``eval epoch 12 | success 95.0% |
mpjpe_g 45.3`` around each evaluation::

    epoch 12 | steps 98,304/500,000 (19.7%) | SPS 1,830 | ETA 3m40s | return 21.4 | len 45.1 | pi -0.004 v 0.91 | collect 62% learn 38% | cpu 180% ram 2.1G

Sources: ``pl_module.env_steps`` (scalar long buffer), ``trainer.callback_metrics`` (``charts/*``, ``losses/*``,
``perf/*``, ``eval/*``; missing ones show "–"), psutil, torch.cuda (module on a GPU), and
``trainer.datamodule.hparams.total_timesteps`` for progress and ETA (omitted without it).
"""  # noqa: E501

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import psutil
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from phc_lightning.core.errors import ConfigError

DASH = "–"
_SHOWN = {  # display key -> (callback_metrics key, format spec)
    "return": ("charts/episode_return", ".1f"), "len": ("charts/episode_length", ".1f"),
    "trunc": ("charts/truncation_rate", ".0%"), "lr": ("charts/learning_rate", ".2e"),
    "pi": ("losses/policy", ".3g"), "v": ("losses/value", ".3g"), "ent": ("losses/entropy", ".3g"),
    "kl": ("losses/approx_kl", ".2g"), "clipfrac": ("losses/clipfrac", ".2f"),
    "ev": ("losses/explained_variance", ".2f"),
    "success": ("eval/success_rate", ".1%"), "mpjpe_g": ("eval/mpjpe_g", ".1f"),
}


def _fmt(value: Optional[float], spec: str) -> str:
    return DASH if value is None or math.isnan(value) else format(value, spec)


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f}G"


def _duration(seconds: float) -> str:
    """``5 -> "5s"``, ``220 -> "3m40s"``, ``7500 -> "2h05m"``, ``90000 -> "1d01h"``."""
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s < 86400 else f"{s // 86400}d{s % 86400 // 3600:02d}h"


class PHCDashboard(ProgressBar):
    """Live panel / plain per-epoch lines: env steps, SPS, ETA, returns, losses, time split, CPU/RAM/GPU use.

    Args:
        refresh_per_second: redraw rate of the Live panel (terminal mode only).
        plain: ``True`` forces one plain line per epoch, ``False`` the Live panel; ``None`` draws the panel exactly
            when ``console.is_terminal``.
        console: where to draw (default: a new ``rich.console.Console()`` on stdout); tests pass a recording one.
    """

    def __init__(self, refresh_per_second: float = 4, plain: Optional[bool] = None,
                 console: Optional[Console] = None) -> None:
        super().__init__()
        if not refresh_per_second > 0:
            raise ConfigError(f"refresh_per_second: must be > 0, got {refresh_per_second}")
        self.refresh_per_second = float(refresh_per_second)
        self.plain = plain
        self._console = console
        self._enabled = True
        self._live: Optional[Live] = None
        self._process = psutil.Process()
        self._cpu = (0.0, math.nan)  # (time, process cpu %) of the last psutil sample
        self._gpu: Optional[int] = None  # the module's CUDA index (the Live thread has its own current_device)
        self._gpu_util = True  # off after the first NVML failure
        self._metrics: Dict[str, float] = {}  # taken on the main thread (may sync a GPU); the Live thread only reads
        self._env_steps: Optional[int] = None
        self._start = (time.perf_counter(), 0)  # (time, env steps) at train start
        self._total: Optional[int] = None
        self._epoch, self._status = 0, "starting"
        self._pending: Optional[int] = None  # finished epoch whose plain line is not printed yet

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console()
        return self._console

    @property
    def is_plain(self) -> bool:
        """Whether plain per-epoch lines are printed instead of the Live panel."""
        return self.plain if self.plain is not None else not self.console.is_terminal

    def disable(self) -> None:  # called by Lightning on non-zero ranks and around e.g. the lr finder
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.console.print(*args, **kwargs)  # above the Live panel while it runs

    def _snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        items = trainer.callback_metrics.items()
        self._metrics = {k: float(v) for k, v in items if isinstance(v, torch.Tensor) and v.numel() == 1}
        env_steps = getattr(pl_module, "env_steps", None)
        self._env_steps = None if env_steps is None else int(env_steps)

    def _set_status(self, status: str) -> None:
        self._status = status
        if self._live is not None:
            self._live.refresh()  # one redraw per phase at least, however slow the refresh thread is

    def _shown(self, key: str) -> str:
        name, spec = _SHOWN[key]
        return _fmt(self._metrics.get(name), spec)

    def _values(self) -> Dict[str, str]:
        """Every displayed quantity as text (shared by the panel and the plain line)."""
        steps, total, now = self._env_steps, self._total, time.perf_counter()
        out = {key: self._shown(key) for key in _SHOWN}
        out["steps"] = DASH if steps is None else f"{steps:,}"
        if total:
            out["steps"] += f"/{total:,}" + (f" ({steps / total:.1%})" if steps is not None else "")
        sps = self._metrics.get("charts/SPS")
        if sps is None and steps is not None and now > self._start[0]:
            sps = (steps - self._start[1]) / (now - self._start[0])  # nothing logged yet: average since start
        out["SPS"], out["elapsed"] = _fmt(sps, ",.0f"), _duration(now - self._start[0])
        if total and steps is not None and sps is not None and sps > 0:
            out["ETA"] = _duration(max(total - steps, 0) / sps)
        collect, learn = (self._metrics.get(k, math.nan) for k in ("perf/collect_time", "perf/learn_time"))
        share = collect / (collect + learn) if collect + learn > 0 else math.nan  # NaN (missing) stays "–"
        out["collect"], out["learn"] = _fmt(share, ".0%"), _fmt(1 - share, ".0%")
        # psutil measures since its last call: a plain line covers its epoch, a redraw at least the last 0.5 s.
        if self._live is None or now - self._cpu[0] >= 0.5:
            self._cpu = (now, self._process.cpu_percent(None))
        out["cpu"], out["ram"] = _fmt(self._cpu[1] / 100, ".0%"), _gib(self._process.memory_info().rss)
        if self._gpu is not None:
            total_mem = torch.cuda.get_device_properties(self._gpu).total_memory
            out["gpu"] = f"mem {_gib(torch.cuda.memory_reserved(self._gpu))}/{_gib(total_mem)}"
            if self._gpu_util:
                try:
                    out["gpu"] += f" util {torch.cuda.utilization(self._gpu)}%"
                except Exception:  # NVML is optional (nvidia-ml-py, driver access): hide the number, stop asking
                    self._gpu_util = False
        return out

    def _render(self) -> Panel:
        v = self._values()
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="cyan", no_wrap=True)
        grid.add_column()
        grid.add_row("epoch", f"{self._epoch}   [bold]{self._status}[/]")
        grid.add_row("env steps", f"{v['steps']}   ETA {v.get('ETA', DASH)}   elapsed {v['elapsed']}")
        grid.add_row("SPS", f"{v['SPS']}   collect {v['collect']} learn {v['learn']}")
        grid.add_row("episode", f"return {v['return']}   len {v['len']}   truncated {v['trunc']}")
        grid.add_row("losses", f"pi {v['pi']}  v {v['v']}  ent {v['ent']}  kl {v['kl']}  clipfrac {v['clipfrac']}  "
                               f"ev {v['ev']}  lr {v['lr']}")
        grid.add_row("eval", f"success {v['success']}   mpjpe_g {v['mpjpe_g']} mm")
        grid.add_row("system", f"cpu {v['cpu']}   ram {v['ram']}" + (f"   gpu {v['gpu']}" if "gpu" in v else ""))
        return Panel(grid, title="PHC training", expand=False)

    def _emit(self, line: str) -> None:
        if self._enabled and self._live is None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)  # soft_wrap: one line in logs

    def _flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Epoch e's line is printed after ALL its on_train_epoch_end hooks (at the next epoch start or train end):
        # the LightningModule's own hook runs after the callbacks' and may log that epoch's charts/perf values.
        if self._pending is None:
            return
        self._snapshot(trainer, pl_module)
        if self.is_plain:
            v = self._values()
            eta, gpu = (f" | ETA {v['ETA']}" if "ETA" in v else ""), (f" | gpu {v['gpu']}" if "gpu" in v else "")
            self._emit(f"epoch {self._pending} | steps {v['steps']} | SPS {v['SPS']}{eta} | return {v['return']} | "
                       f"len {v['len']} | pi {v['pi']} v {v['v']} | collect {v['collect']} learn {v['learn']} | "
                       f"cpu {v['cpu']} ram {v['ram']}{gpu}")
        self._pending = None

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._snapshot(trainer, pl_module)
        self._start = (time.perf_counter(), self._env_steps or 0)
        self._total = getattr(getattr(trainer.datamodule, "hparams", None), "total_timesteps", None)
        self._gpu = (pl_module.device.index or 0) if pl_module.device.type == "cuda" else None
        self._process.cpu_percent(None)  # the first call only starts psutil's interval
        self._cpu = (time.perf_counter(), math.nan)
        if self._enabled and not self.is_plain:
            self._live = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=self.refresh_per_second)
            self._live.start()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer, pl_module)
        self._epoch = trainer.current_epoch
        self._set_status("collecting")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:  # the rollout was collected while fetching the first minibatch
            self._snapshot(trainer, pl_module)
            self._set_status("learning")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._emit(f"epoch {trainer.current_epoch} | evaluating…")
        self._set_status("sanity check…" if trainer.sanity_checking else "evaluating…")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._snapshot(trainer, pl_module)
            self._emit(f"eval epoch {trainer.current_epoch} | success {self._shown('success')} | "
                       f"mpjpe_g {self._shown('mpjpe_g')}")
        self._set_status("learning" if trainer.state.fn == TrainerFn.FITTING else "done")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer, pl_module)
        self._set_status("done")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # After every on_train_end: the final evaluation (EvalStats) has put eval/* and eval/final in the metrics.
        if stage == "fit" and "eval/final" in trainer.callback_metrics:
            self._snapshot(trainer, pl_module)
            if self._live is not None:
                self._live.refresh()
            self._emit(f"final eval | success {self._shown('success')} | mpjpe_g {self._shown('mpjpe_g')}")
        self._stop_live()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop_live()

    def __getstate__(self) -> Dict[str, Any]:  # Live (threads), console and psutil handle do not pickle
        return {**self.__dict__, "_live": None, "_console": None, "_process": None}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._process = psutil.Process()
