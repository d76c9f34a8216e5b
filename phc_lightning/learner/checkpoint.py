"""A trained policy from a checkpoint file alone, outside Lightning's loops (export, rendering)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Tuple

from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.checkpoint_file import read_checkpoint
from phc_lightning.learner.l2_anchor import fit_checkpoint_to_anchor
from phc_lightning.learner.module import PHCModule


def load_checkpoint_module(ckpt_path: str) -> Tuple[Any, Dict[str, Any]]:
    """``(PHCModule in eval mode on the CPU, the checkpoint dict)`` from a phc-lightning checkpoint.

    The module is built from the checkpoint's own hyperparameters (so its action interface is the one it was
    trained with), without its warm-start source (``init_from`` of checkpoints written before it was kept as
    ``warm_started_from``), then loaded strictly.

    Raises:
        ConfigError: missing or unreadable file, or not a PHCModule checkpoint.
    """
    path = Path(ckpt_path)
    ckpt = read_checkpoint(str(path))
    state, hparams = ckpt["state_dict"], dict(ckpt.get("hyper_parameters", {}))
    accepted = set(inspect.signature(PHCModule.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    kwargs["init_from"] = None
    try:
        module = PHCModule(**kwargs)
        fit_checkpoint_to_anchor(state, module.l2_anchor)  # as on_load_checkpoint does in Lightning's loading
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(f"--ckpt_path: {path} does not hold a PHCModule of its hyperparameters ({detail})") from None
    return module.eval(), ckpt
