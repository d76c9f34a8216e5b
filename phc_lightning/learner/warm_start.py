"""Warm start: policy, critic and normalizer weights from any phc-lightning checkpoint into a new run."""

from __future__ import annotations

import torch

from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.checkpoint_file import read_checkpoint
from phc_lightning.task.actions import check_action_interface

# Parts of the module state a warm start takes; optimizer state, counters and the L2 anchor start fresh.
WARM_START_PREFIXES = ("policy.", "obs_norm.", "value_norm.")


def load_policy_weights(module: torch.nn.Module, path: str) -> None:
    """Copy ``policy.*``, ``obs_norm.*`` and ``value_norm.*`` from the checkpoint at ``path`` into ``module``.

    Raises:
        ConfigError: the file is missing, is not a checkpoint, or was trained with another action interface,
            another ``normalize_value`` or other network sizes.
    """
    ckpt = read_checkpoint(path, "model.init_from")
    state, saved = ckpt["state_dict"], ckpt.get("hyper_parameters", {})
    current = dict(getattr(module, "hparams", {}))
    check_action_interface(saved, current, "model.init_from")
    # The critic's outputs are in the units of the value normalizer it was trained with: without it (or with
    # one where it had none) every value would be read in the wrong units.
    had = saved.get("normalize_value", any(k.startswith("value_norm.") for k in state))
    has = getattr(module, "value_norm", None) is not None
    if bool(had) != has:
        raise ConfigError(
            f"model.init_from: the checkpoint's critic was trained with model.normalize_value={bool(had)}, this "
            f"config says model.normalize_value={has}; set --model.normalize_value {str(bool(had)).lower()} to warm "
            "start from it"
        )
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
