"""Learning-rate schedules per PPO iteration (one Lightning epoch = one rollout + update), or adapted to a KL target.

The fixed schedules are a pure function of the base lr ``lr0``, the epoch index and the env-step counter, so a
resumed run reproduces them exactly. ``lr0`` is remembered in every param group as ``"initial_lr"`` (the key
torch's own schedulers use); it is saved with the optimizer state in checkpoints, and so is the current lr that
``adaptive_kl`` moves.

=============  ==========================================================================================
schedule       learning rate at the start of epoch ``e`` (``p = env_steps / total_timesteps``)
=============  ==========================================================================================
``exp``        ``lr0 · max(exp(−decay_rate · e), min_factor)`` (puffer-phc default)
``linear``     ``lr0 · max(1 − p, 0)``
``cosine``     ``lr0 · (min_factor + (1 − min_factor) · 0.5 · (1 + cos(π · min(p, 1))))``
``constant``   ``lr0``
``adaptive_kl`` after every minibatch: ``lr / kl_factor`` when approx KL > 2·target_kl, ``lr · kl_factor`` when
               approx KL < target_kl / 2, kept in ``[min_lr, max_lr]`` (rsl_rl / mjlab trackers; the KL is
               the module's ``last_approx_kl``, measured on the minibatch just trained; the first minibatch
               of an iteration, whose KL is 0 by construction, leaves the lr alone)
=============  ==========================================================================================

With several param groups (actor and critic) every group keeps its ratio to the first group's lr. Only the policy's
optimizer (the first) is scheduled: the AMP discriminator's (the second) keeps its own lr.

One KL target: ``adaptive_kl`` steers to the module's ``target_kl`` (``model.target_kl``, which also ends an
iteration's updates early once a minibatch exceeds it) unless the callback is given its own (e.g. to adapt without
that early stop, ``model.target_kl`` null). Likewise ``linear`` and ``cosine`` run to the datamodule's
``total_timesteps`` (``data.total_timesteps``) unless given their own.

On a resume the base lr ``lr0`` and the current lr come back with the optimizer state, unless the config changed the
module's lr: then that lr is the new ``lr0`` and the current lr (``PHCModule.on_load_checkpoint``). Every other
setting of this callback is the config's, and takes effect at once (the fixed schedules are pure functions).
"""

from __future__ import annotations

import math
from typing import Optional

import lightning.pytorch as pl

from phc_lightning.core.errors import ConfigError

SCHEDULES = ("exp", "linear", "cosine", "constant", "adaptive_kl")


def policy_optimizers(trainer: pl.Trainer) -> list:
    """The optimizers a schedule moves: the policy's, the first (``PHCModule`` puts the discriminator's second)."""
    return list(trainer.optimizers[:1])


class LRAnnealing(pl.Callback):
    """Set the lr of every param group of the policy's optimizer at the start of each train epoch.

    Logs ``charts/learning_rate`` (the first param group's lr) once per epoch.

    Args:
        schedule: one of ``exp``, ``linear``, ``cosine``, ``constant``.
        decay_rate: per-epoch exponential decay rate of the ``exp`` schedule.
        min_factor: lower bound of lr / lr0 for ``exp`` and ``cosine``, in [0, 1].
        total_timesteps: env steps of the whole run, for ``linear`` and ``cosine``, which read the progress from the
            module's ``env_steps`` buffer (a scalar long tensor); null: the datamodule's ``total_timesteps``.
        target_kl: KL per minibatch that ``adaptive_kl`` steers towards; null: the module's ``target_kl``
            (``model.target_kl``).
        min_lr: lower bound of the adapted lr.
        max_lr: upper bound of the adapted lr.
        kl_factor: multiplicative lr step of ``adaptive_kl``.
    """

    def __init__(
        self,
        schedule: str = "exp",
        decay_rate: float = 1.5e-4,
        min_factor: float = 0.2,
        total_timesteps: Optional[int] = None,
        target_kl: Optional[float] = None,
        min_lr: float = 1e-5,
        max_lr: float = 1e-2,
        kl_factor: float = 1.5,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(f"LRAnnealing schedule: unknown lr schedule {schedule!r}, expected one of "
                              f"{', '.join(SCHEDULES)}")
        if decay_rate < 0:
            raise ConfigError(f"LRAnnealing decay_rate: must be >= 0, got {decay_rate}")
        if not 0.0 <= min_factor <= 1.0:
            raise ConfigError(f"LRAnnealing min_factor: must be in [0, 1], got {min_factor}")
        if total_timesteps is not None and total_timesteps <= 0:
            raise ConfigError(f"LRAnnealing total_timesteps: must be positive, got {total_timesteps}")
        if not ((target_kl is None or target_kl > 0) and 0 < min_lr <= max_lr and kl_factor > 1):
            raise ConfigError(
                f"LRAnnealing adaptive_kl: need target_kl > 0, 0 < min_lr <= max_lr and kl_factor > 1, got "
                f"target_kl={target_kl}, min_lr={min_lr}, max_lr={max_lr}, kl_factor={kl_factor}"
            )
        self.schedule = schedule
        self.target_kl = None if target_kl is None else float(target_kl)
        """The KL target as given (null: the module's ``target_kl``, read in :meth:`setup`)."""
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.kl_factor = float(kl_factor)
        self.decay_rate = float(decay_rate)
        self.min_factor = float(min_factor)
        self.total_timesteps = total_timesteps
        """The run's length as given (null: the datamodule's ``total_timesteps``, read in :meth:`setup`)."""
        self._kl_target = self.target_kl
        self._total_timesteps = total_timesteps

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fill in what was not given from the module (``target_kl``) and the datamodule (``total_timesteps``)."""
        if stage != "fit":
            return
        if self.schedule in ("linear", "cosine") and self.total_timesteps is None:
            hparams = getattr(trainer.datamodule, "hparams", None) or {}
            self._total_timesteps = hparams.get("total_timesteps")
            if not self._total_timesteps or self._total_timesteps <= 0:
                raise ConfigError(
                    f"LRAnnealing total_timesteps: the {self.schedule!r} schedule needs the run's length: give the "
                    "callback a positive total_timesteps, or train with a datamodule that has one "
                    "(data.total_timesteps)"
                )
        if self.schedule == "adaptive_kl" and self.target_kl is None:
            self._kl_target = (getattr(pl_module, "hparams", None) or {}).get("target_kl")
            if self._kl_target is None:
                raise ConfigError(
                    "LRAnnealing target_kl: the adaptive_kl schedule needs a KL target: set model.target_kl (which "
                    "also ends an iteration's updates early past it) or the callback's own target_kl"
                )

    def factor(self, epoch: int, env_steps: int) -> float:
        """lr / lr0 for the given epoch index and env-step count (fixed schedules)."""
        if self.schedule == "exp":
            return max(math.exp(-self.decay_rate * epoch), self.min_factor)
        if self.schedule == "constant":
            return 1.0
        progress = env_steps / float(self._total_timesteps)
        if self.schedule == "linear":
            return max(1.0 - progress, 0.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.min_factor + (1.0 - self.min_factor) * cosine

    @staticmethod
    def _remember_base_lr(trainer: pl.Trainer) -> None:
        # setdefault: a group restored from a checkpoint keeps the lr0 of the original run.
        for optimizer in policy_optimizers(trainer):
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])

    def adapted_lr(self, lr: float, kl: float) -> float:
        """The ``adaptive_kl`` step: the next lr after a minibatch whose approx KL was ``kl``."""
        if kl > 2.0 * self._kl_target:
            lr = lr / self.kl_factor
        elif kl < 0.5 * self._kl_target:
            lr = lr * self.kl_factor
        return min(max(lr, self.min_lr), self.max_lr)

    def _env_steps(self, pl_module: pl.LightningModule) -> int:
        if self.schedule in ("exp", "constant", "adaptive_kl"):
            return 0
        env_steps = getattr(pl_module, "env_steps", None)
        if env_steps is None:
            raise AttributeError(
                f"LRAnnealing(schedule={self.schedule!r}) needs {type(pl_module).__name__}.env_steps "
                "(a scalar long buffer counting env steps)"
            )
        return int(env_steps)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember each param group's base lr before any annealing."""
        self._remember_base_lr(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set the lr for this epoch and log it."""
        # Again here: restoring optimizer state after on_fit_start replaces the param groups.
        self._remember_base_lr(trainer)
        if self.schedule == "adaptive_kl":
            return  # the lr carried in the optimizer state goes on adapting
        factor = self.factor(trainer.current_epoch, self._env_steps(pl_module))
        lr = None
        for optimizer in policy_optimizers(trainer):
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
                lr = group["lr"] if lr is None else lr
        if lr is not None:
            pl_module.log("charts/learning_rate", lr, on_step=False, on_epoch=True, batch_size=1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        """``adaptive_kl``: move the lr of every param group by the KL of the minibatch just trained."""
        if self.schedule != "adaptive_kl":
            return
        kl = getattr(pl_module, "last_approx_kl", None)
        if kl is None:
            raise AttributeError(f"LRAnnealing(schedule='adaptive_kl') needs {type(pl_module).__name__}.last_approx_kl")
        # NaN, or exactly 0 (the first minibatch of an iteration: the policy has not moved yet) carries no
        # information; adapting on it would raise the lr once per iteration and bias the KL above its target.
        if kl != kl or kl == 0.0:
            return
        for optimizer in policy_optimizers(trainer):
            groups = optimizer.param_groups
            lead = groups[0]
            new_lead = self.adapted_lr(lead["lr"], float(kl))
            for group in groups:
                group["lr"] = new_lead * group["initial_lr"] / lead["initial_lr"]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``adaptive_kl``: log the lr the iteration ended with."""
        if self.schedule == "adaptive_kl" and trainer.optimizers:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            pl_module.log("charts/learning_rate", lr, on_step=False, on_epoch=True, batch_size=1)
