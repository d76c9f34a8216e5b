"""Warm start: policy, critic and normalizer weights from any phc-lightning checkpoint into a new run."""

from __future__ import annotations

import os

import torch

from phc_lightning.core.errors import ConfigError
from phc_lightning.task.actions import check_action_interface

# Parts of the module state a warm start takes; optimizer state, counters and the L2 anchor start fresh.
WARM_START_PREFIXES = ("policy.", "obs_norm.")


def load_policy_weights(module: torch.nn.Module, path: str) -> None:
    """Copy ``policy.*`` and ``obs_norm.*`` from the checkpoint at ``path`` into ``module``.

    Raises:
        ConfigError: the file is missing, is not a checkpoint, or its network sizes differ.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"model.init_from: no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ConfigError(f"model.init_from: {path} is not a readable phc-lightning checkpoint ({err})") from None
    check_action_interface(ckpt.get("hyper_parameters", {}), dict(getattr(module, "hparams", {})), "model.init_from")
    wanted = {k: v for k, v in state.items() if k.startswith(WARM_START_PREFIXES)}
    own = module.state_dict()
    missing = [k for k in own if k.startswith(WARM_START_PREFIXES) and k not in wanted]
    if missing:
        raise ConfigError(f"model.init_from: {path} lacks {missing[:3]} (not a PHCModule checkpoint?)")
    for key, value in wanted.items():
        if key in own and own[key].shape != value.shape:
            raise ConfigError(
                f"model.init_from: {path} has {key} of shape {tuple(value.shape)}, this model needs "
                f"{tuple(own[key].shape)} (network sizes differ)"
            )
    module.load_state_dict(wanted, strict=False)
