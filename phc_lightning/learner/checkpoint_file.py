"""Reading a phc-lightning checkpoint file, with one-line answers for the files that are not one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from phc_lightning.core.errors import ConfigError

POLICY_PREFIX = "policy."
"""Every ``PHCModule`` state dict holds its actor-critic under this prefix."""


def read_checkpoint(path: str, source: str = "--ckpt_path") -> Dict[str, Any]:
    """The checkpoint dict at ``path`` (on the CPU, ``weights_only``), checked to hold a ``PHCModule``.

    Args:
        path: the file.
        source: the option that named it, which every error starts with (``--ckpt_path``, ``model.init_from``).

    Raises:
        ConfigError: a missing file, one torch cannot read (corrupt, truncated, not a checkpoint), or a checkpoint
            of something else (no ``PHCModule`` weights and hyperparameters).
    """
    if not Path(path).is_file():
        raise ConfigError(f"{source}: no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:200]
        raise ConfigError(f"{source}: {path} is not a readable phc-lightning checkpoint ({detail})") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not isinstance(hparams, dict) or not any(
        isinstance(key, str) and key.startswith(POLICY_PREFIX) for key in state
    ):
        raise ConfigError(f"{source}: {path} is not a phc-lightning checkpoint (it holds no PHCModule weights)")
    return ckpt
