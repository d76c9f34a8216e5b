"""The Lightning hooks ``PHCModule`` trains with, and the check that a subclass keeps them.

``PHCModule`` defines each hook below itself, and each only calls named helpers. A subclass that overrides one and
forgets ``super()`` would stop that work without a sound (no normalizer update, stale evaluation metrics), so
:func:`check_hooks_kept` refuses such a class, in one line, when the module is built.
"""

from __future__ import annotations

import inspect
from typing import Dict

LEARNER_HOOKS: Dict[str, str] = {
    "setup": "the TF32 matmuls of a CUDA trainer",
    "on_fit_start": "evaluation under DDP without per-forward buffer broadcasts",
    "on_train_batch_start": "the env-step count of each iteration",
    "on_train_batch_end": "the normalizer updates and logs of each iteration",
    "on_train_epoch_end": "closing the iteration of a data source without a length",
    "on_validation_epoch_start": "fresh metrics for each evaluation",
    "validation_step": "the evaluation's metrics",
    "on_validation_epoch_end": "the eval/* logs",
    "on_load_checkpoint": "the checks of a checkpoint's action interface, AMP and L2 anchor",
}
"""Hook -> what ``PHCModule`` does in it."""


def check_hooks_kept(cls: type, base: type) -> None:
    """Raise a one-line ``TypeError`` if ``cls`` (``base`` or a subclass) overrides one of :data:`LEARNER_HOOKS`
    without calling the hook of the same name (``super().<hook>(...)`` or ``Base.<hook>(self, ...)``)."""
    for name, what in LEARNER_HOOKS.items():
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        if owner is base:
            continue
        code = getattr(inspect.unwrap(vars(owner)[name]), "__code__", None)
        if code is None or name not in code.co_names:  # the names a function looks up, attributes included
            raise TypeError(
                f"{owner.__qualname__}.{name} overrides {base.__name__}.{name} without calling "
                f"super().{name}(...): {what} would silently stop"
            )
