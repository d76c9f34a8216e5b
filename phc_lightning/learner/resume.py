"""What a resume keeps: which ``PHCModule`` settings ``phc fit --ckpt_path`` may change, and which it cannot.

A resume continues a run: the checkpoint brings the weights, the normalizers, the optimizer state, the counters and
the random streams. Of the module's settings (docs/runs.md, "What a resume keeps"), what the config leaves at the
default goes on as the checkpoint had it, and what it sets (file or flag) is used, as follows:

- :data:`RESUME_CHANGEABLE` only shape training from now on: a value the config sets is used, and named on stderr
  when it differs from the checkpoint's. A changed learning rate or Adam epsilon is written into the restored
  optimizer state (:func:`apply_optimizer_changes`), so it is the lr the run continues with and the base of any
  ``LRAnnealing`` schedule; an unchanged one leaves the restored state alone (``adaptive_kl`` goes on from the lr
  it reached).
- :data:`RESUME_FIXED` are the network and the action interface: ``fit`` refuses a config that sets another value
  (warm-start a new run with ``--model.init_from`` instead); ``validate`` uses the checkpoint's and says so.
- :data:`NOT_REPLAYED`: ``init_from`` is read once, when a warm-started run begins; a resume continues from the
  checkpoint's weights, so the source file may have moved. Checkpoints keep it as :data:`WARM_STARTED_FROM`, a record
  nothing acts on.

The data side (``data.*``) and the trainer are always the config's; :data:`DATA_NOT_USED` are the data settings a
resume has no use for (the checkpoint's random streams continue).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from phc_lightning.core.errors import ConfigError
from phc_lightning.task.actions import ACTION_INTERFACE_KEYS

RESUME_CHANGEABLE = (
    "learning_rate",
    "critic_learning_rate",
    "adam_eps",
    "clip_coef",
    "target_kl",
    "critic_full_update",  # which steps the critic takes after the KL stop: no state of its own
    "value_clip",
    "vf_coef",
    "ent_coef",
    "bound_coef",
    "soft_bound",
    "l2_init_coef",
    "max_grad_norm",
    "norm_adv",
    "mirror_augment",  # an augmentation of the minibatches: no state of its own
)
"""``model.*`` settings a resume may change; the config's value is used from the first resumed iteration on."""

RESUME_FIXED = ACTION_INTERFACE_KEYS + (
    "obs_dim",
    "actor_hidden",
    "critic_hidden",
    "layer_norm",
    "init_log_std",
    "learnable_log_std",
    "normalize_value",
    "obs_clip",
    "recurrent",
    "lstm_hidden",
    "mlp_dtype",
    "amp",
)
"""``model.*`` settings that make the network, its normalizers and the meaning of its actions: a resume keeps them."""

NOT_REPLAYED = ("init_from",)
"""``model.*`` settings a resume neither uses nor checks."""

WARM_STARTED_FROM = "warm_started_from"
"""Hyperparameter recording a warm start's source (provenance only)."""

DATA_NOT_USED = ("seed",)
"""``data.*`` settings a resume does not use: the checkpoint's random streams continue."""

OPTIMIZER_NOTES = {
    "learning_rate": ": the lr and any schedule restart at it",
    "critic_learning_rate": ": the lr and any schedule restart at it",
    "adam_eps": ": the optimizer uses it",
}
"""Changeable settings that the restored optimizer state would override (:func:`apply_optimizer_changes` writes them
into it instead), with what a user is told about them."""

_NESTED = ("amp", "task")  # groups compared field by field, so a message names the field


def plain(value: Any) -> Any:
    """``value`` as plain data: tuples as lists, mappings as dicts (recursively)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items() if k != "__path__"}
    return value


def differences(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Tuple[str, ...],
                prefix: str) -> List[Tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` of each of ``keys`` that both hold and that differs; groups such
    as ``amp`` are compared by field, and only in the fields the checkpoint has (older ones have fewer)."""
    out = []
    for key in keys:
        if key not in saved or key not in current:
            continue
        old, new = plain(saved[key]), plain(current[key])
        if key in _NESTED and isinstance(old, dict) and isinstance(new, dict):
            out += [(f"{prefix}{key}.{k}", old[k], new.get(k)) for k in old if k in new and old[k] != new[k]]
        elif old != new:
            out.append((f"{prefix}{key}", old, new))
    return out


def check_fixed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], ckpt_path: str) -> None:
    """Raise one :class:`ConfigError` line naming the first :data:`RESUME_FIXED` setting that differs."""
    for key, old, new in differences(saved, current, RESUME_FIXED, "model."):
        raise ConfigError(
            f"--ckpt_path: the checkpoint's run was trained with {key}={old!r}, this config asks for {new!r}; a "
            f"resume keeps the network and the action interface: resume with {key}={old!r}, or warm-start a new run "
            f"from that checkpoint with --model.init_from {ckpt_path}"
        )


def effective_lrs(hparams: Mapping[str, Any]) -> Tuple[Any, Any]:
    """``(actor lr, critic lr)`` of a module's hyperparameters (a null critic lr is the actor's)."""
    lr = hparams.get("learning_rate")
    critic = hparams.get("critic_learning_rate")
    return lr, lr if critic is None else critic


def apply_optimizer_changes(checkpoint: Dict[str, Any], current: Mapping[str, Any]) -> List[str]:
    """Write a changed lr or Adam epsilon into the checkpoint's policy optimizer state before Lightning restores it.

    Without this, restoring the optimizer brings back the checkpoint's lr (and ``initial_lr``, the base of every
    ``LRAnnealing`` schedule) over the config's. A changed lr (actor or critic) restarts both param groups at the
    config's values; unchanged, the restored lr goes on (an ``adaptive_kl`` lr continues where it was).

    Returns:
        The names of the settings written.
    """
    saved = checkpoint.get("hyper_parameters", {})
    states = checkpoint.get("optimizer_states") or []
    if not states or "learning_rate" not in saved:
        return []
    groups = states[0].get("param_groups", [])  # the policy's optimizer (the discriminator's is second)
    written = []
    if effective_lrs(saved) != effective_lrs(current):
        for group, lr in zip(groups, effective_lrs(current)):
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = lr
        written.append("learning_rate")
    if "adam_eps" in saved and saved["adam_eps"] != current.get("adam_eps"):
        for group in groups:
            group["eps"] = current["adam_eps"]
        written.append("adam_eps")
    return written


def settle_checkpoint(checkpoint: Dict[str, Any], hparams: Dict[str, Any], ckpt_path: str) -> None:
    """What ``PHCModule.on_load_checkpoint`` does with a checkpoint about to be restored into a module of
    ``hparams``: refuse another network or action interface, let a changed lr or Adam epsilon win over the optimizer
    state (:func:`apply_optimizer_changes`), and carry the warm-start record on into this run's checkpoints."""
    saved = checkpoint.get("hyper_parameters", {})
    check_fixed_settings(saved, hparams, ckpt_path)
    apply_optimizer_changes(checkpoint, hparams)
    source = saved.get(WARM_STARTED_FROM) or saved.get("init_from")  # the key of checkpoints before issue 28
    if source and not hparams.get(WARM_STARTED_FROM):
        hparams[WARM_STARTED_FROM] = source
