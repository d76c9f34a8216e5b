"""Callbacks the multi-process tests add to ``phc fit`` (``--trainer.callbacks+=tests.ddp_probes.X``); the processes
import them by name, so they live in a module of their own (no test functions here)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import lightning as L
import torch

from phc_lightning.rl import distributed
from phc_lightning.rl.normalization import RunningNorm


def _checksums(pl_module: L.LightningModule) -> Dict[str, Any]:
    # every parameter (policy, and with AMP the discriminator) and every normalizer (obs, value, AMP)
    params = torch.cat([p.detach().flatten().double() for p in pl_module.parameters()])
    norms = [m for m in pl_module.modules() if isinstance(m, RunningNorm)]
    norm = torch.cat([t.detach().flatten().double() for m in norms for t in (m.mean, m.var, m.count)])
    return {"params": params, "norm": norm, "norm_count": int(pl_module.obs_norm.count),
            "env_steps": int(pl_module.env_steps)}


class SyncProbe(L.Callback):
    """After every iteration: gathers every rank's parameters, normalizer and counters, and (rank 0) appends one JSON
    line to ``out``: whether they are identical on every rank, the env-step counter and the steps each rank
    collected, whether the ranks' envs are in different states (distinct seeds), and how many ranks' data states
    each rank holds after the datamodule's ``state_dict`` (what a checkpoint asks of every rank)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.collected = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        self.collected += dm.rollout.horizon * dm.env.num_envs
        mine = _checksums(pl_module)
        data = dm.state_dict()  # a collective, like every checkpoint's: all ranks call it here
        mine.update(collected=self.collected, obs=dm.env.obs.detach().cpu(), data_states=len(data.get("ranks", [])))
        parts = distributed.gather_objects(mine)
        if not trainer.is_global_zero:
            return
        first = parts[0]
        record = {
            "epoch": trainer.current_epoch,
            "world_size": len(parts),
            "params_equal": all(torch.equal(p["params"], first["params"]) for p in parts),
            "norm_equal": all(torch.equal(p["norm"], first["norm"]) and p["norm_count"] == first["norm_count"]
                              for p in parts),
            "env_steps": [p["env_steps"] for p in parts],
            "collected": [p["collected"] for p in parts],
            "envs_differ": len(parts) > 1 and not torch.equal(parts[0]["obs"], parts[1]["obs"]),
            "norm_count": first["norm_count"],
            "data_states": [p["data_states"] for p in parts],
            "param_sum": float(first["params"].sum()),
        }
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\n")


class RaiseOnRank(L.Callback):
    """Raises ``RuntimeError("injected failure on rank R")`` at the start of epoch ``epoch`` on global rank ``rank``."""

    def __init__(self, rank: int = 1, epoch: int = 1) -> None:
        self.rank = rank
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == self.rank and trainer.current_epoch == self.epoch:
            raise RuntimeError(f"injected failure on rank {self.rank}")
