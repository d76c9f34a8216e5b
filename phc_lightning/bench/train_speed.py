"""``phc bench train``: training env-steps/s of a config (collect + learn) against env-only stepping of the same env,
with the shares of an iteration's time spent in physics, the task, the policy's forward passes while collecting and
the PPO update, measured in the same run by timing wrappers around the backend, the env and the policy.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from rich.console import Console
from rich.table import Table

from phc_lightning.bench.env_speed import Timed, env_steps_per_second, timed_backend

TRAIN_PARTS = ("physics", "task", "policy_forward", "collect_other", "update")
"""Where ``phc bench train`` says an iteration's time goes: physics (the backend's calls), the task (reference
lookup, observations, rewards, terminations, resets: the env's step and reset minus physics), the policy forward
passes of collection (actions, values, bootstrap values, PD targets), the rest of collection (buffer writes, GAE,
statistics) and the PPO update (every minibatch's forward, backward and optimizer step)."""


class _CollectionTimers:
    """Times physics, env and policy calls during training, non-invasively: the datamodule's backend, its env's
    ``step`` / ``reset`` and the policy the rollout collects with are wrapped in :class:`Timed`."""

    def __init__(self, datamodule: Any, module: torch.nn.Module) -> None:
        env = datamodule.env
        device = env.device
        self.physics = env.backend = timed_backend(env.backend)
        self.env = Timed(env, ("step", "reset"), device)
        env.step, env.reset = self.env.step, self.env.reset  # instance attributes: only this env, only this run
        self.policy = Timed(module, ("act", "act_step", "get_value", "pd_targets"), device)
        datamodule.rollout.get_policy = lambda: self.policy
        self.start()

    def start(self) -> None:
        """Zero the clocks and time from now on."""
        for timed in (self.physics, self.env, self.policy):
            timed.seconds, timed.timing = 0.0, True

    def read(self) -> Dict[str, float]:
        """Seconds in physics, env (physics included) and policy since :meth:`start`, then restart."""
        out = {"physics": self.physics.seconds, "env": self.env.seconds, "policy": self.policy.seconds}
        self.start()
        return out


def bench_train(config: str, epochs: int, overrides: Sequence[str] = ()) -> Dict[str, float]:
    """Print and return training SPS vs env-only SPS of the same config, the collect/learn split, and the shares of
    an iteration's time of :data:`TRAIN_PARTS`, all measured in one run.

    Args:
        config: a training config (any backend and device).
        epochs: iterations to train; the first (start-up: kernel loading, allocations, first resets) is not
            measured.
        overrides: more config flags, e.g. ``["--data.backend", "mujoco_warp", "--data.num_envs", "64"]``.

    On CUDA the timers synchronize around every timed call, so the SPS is a little below an untimed run's.
    """
    import lightning as L

    from phc_lightning.run.lightning_cli import run_cli

    # The config's model and data, but a bare trainer: no checkpoints (they could overwrite a real run's
    # last.ckpt), no evaluation, no logger, so only collecting and learning are timed.
    cli = run_cli(["--config", config, *overrides], run=False)
    dm = cli.datamodule
    timings: List[Dict[str, float]] = []
    timers: List[_CollectionTimers] = []

    class _Record(L.Callback):
        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            dm.setup(stage)  # idempotent: Lightning's own call (before this hook) already built the env
            timers.append(_CollectionTimers(dm, pl_module))

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            s = pl_module.last_iteration
            timings.append({"steps": s["env_steps"], "collect": s["collect_time"], "learn": s["learn_time"],
                            **timers[0].read()})

    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        accelerator=cli.trainer.accelerator, devices=1, callbacks=[_Record()])
    trainer.fit(cli.model, datamodule=dm)
    measured = timings[1:] if len(timings) > 1 else timings  # epoch 0 pays for start-up
    total = {key: sum(t[key] for t in measured) for key in measured[0]}
    wall = total["collect"] + total["learn"]
    split = {
        "physics": total["physics"],
        "task": total["env"] - total["physics"],
        "policy_forward": total["policy"],
        "collect_other": total["collect"] - total["env"] - total["policy"],
        "update": total["learn"],
    }
    backend, device = dm.hparams.backend, dm.hparams.device
    dm.setup("fit")  # a fresh env: fit's teardown closed the one it trained with
    env_device = dm.env.device
    env_only = env_steps_per_second(dm.env, 2 * dm.hparams.horizon)
    policy_env = env_steps_per_second(dm.env, 2 * dm.hparams.horizon, policy=cli.model)
    dm.env.close()
    train_sps = total["steps"] / wall
    out = {
        "train_sps": train_sps,
        "env_only_sps": env_only,
        "env_with_policy_sps": policy_env,
        "ratio": train_sps / env_only,
        "collect_fraction": total["collect"] / wall,
        "learn_fraction": total["learn"] / wall,
    }
    out.update({f"time_{part}": split[part] / wall for part in TRAIN_PARTS})
    where = f"{backend} on {env_device}" + ("" if device is None else f" (data.device {device})")
    table = Table(title=f"phc bench train: {where}, networks on {cli.model.device}, {len(measured)} measured epochs")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in out.items():
        if k.startswith("time_"):
            table.add_row(f"time: {k[len('time_'):]}", f"{v:.0%}")
        else:
            table.add_row(k, f"{v:.3f}" if v < 10 else f"{v:.0f}")
    Console().print(table)
    return out
