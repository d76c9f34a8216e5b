"""``AMPConfig``: the adversarial motion prior settings, one block shared by the learner and the data side.

Off by default. ``--model.amp.enabled true`` (or an ``amp:`` block under ``model:`` in YAML) turns it on; the CLI
copies the block to ``data.amp`` (a parse-time link), so the discriminator (model) and the AMP observations, demos
and replay buffer (data) always agree, also when ``--ckpt_path`` brings the checkpoint's model settings.
Defaults are PHC's / DESIGN section 4's (GPU scale).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from phc_lightning.core.errors import ConfigError


@dataclass(frozen=True)
class AMPConfig:
    """Adversarial motion prior (PHC / ASE ``HumanoidAMP``); read-only after construction.

    Attributes:
        enabled: train a discriminator and mix its reward into the task reward.
        history: AMP observation steps stacked per sample (196 features each, newest first).
        disc_hidden: discriminator hidden sizes (ReLU MLP).
        learning_rate: Adam learning rate of the discriminator's own optimizer (schedules leave it alone).
        disc_coef: weight of the whole discriminator loss.
        grad_penalty_coef: weight of the gradient penalty on demo samples.
        logit_reg_coef: weight of the squared last-layer (logit) weights.
        weight_decay: weight of the squared weights of every discriminator layer.
        reward_scale: disc reward = ``-log(max(1 - sigmoid(d), 1e-4)) * reward_scale``.
        task_reward_weight: weight of the task (tracking) reward in the mixed reward.
        disc_reward_weight: weight of the discriminator reward in the mixed reward.
        disc_batch_size: agent, replay and demo samples per minibatch (each); null: the minibatch size. Larger
            than the minibatch is not possible for the agent part (it is capped there).
        replay_size: capacity of the agent replay buffer (rows of ``history * 196`` floats; saved in checkpoints).
        replay_keep_prob: chance that an agent sample of an iteration enters the replay buffer.
        obs_clip: normalized discriminator inputs are clipped to +-obs_clip.
    """

    enabled: bool = False
    history: int = 10
    disc_hidden: Tuple[int, ...] = (1024, 512)
    learning_rate: float = 1e-4
    disc_coef: float = 5.0
    grad_penalty_coef: float = 5.0
    logit_reg_coef: float = 0.01
    weight_decay: float = 1e-4
    reward_scale: float = 2.0
    task_reward_weight: float = 0.5
    disc_reward_weight: float = 0.5
    disc_batch_size: Optional[int] = None
    replay_size: int = 100_000
    replay_keep_prob: float = 0.01
    obs_clip: float = 10.0

    def __post_init__(self) -> None:
        """Reject values that cannot work, naming the field."""
        object.__setattr__(self, "disc_hidden", tuple(int(h) for h in self.disc_hidden))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or value is None or f.name == "disc_hidden":
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"model.amp.{f.name}: must be a finite number >= 0, got {value!r}")
        positive = ("history", "learning_rate", "replay_size", "obs_clip")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"model.amp.{name}: must be > 0, got {getattr(self, name)!r}")
        if self.disc_batch_size is not None and self.disc_batch_size < 1:
            raise ConfigError(f"model.amp.disc_batch_size: must be >= 1 or null, got {self.disc_batch_size!r}")
        if not self.disc_hidden or any(h <= 0 for h in self.disc_hidden):
            raise ConfigError(f"model.amp.disc_hidden: needs one or more positive sizes, got {list(self.disc_hidden)}")
        if self.replay_keep_prob > 1:
            raise ConfigError(f"model.amp.replay_keep_prob: must be in [0, 1], got {self.replay_keep_prob!r}")

    def as_dict(self) -> Dict[str, Any]:
        """Plain values for hyperparameters (checkpoints load with ``weights_only=True``)."""
        out = asdict(self)
        out["disc_hidden"] = list(self.disc_hidden)
        return out


def as_amp_config(value: Union[AMPConfig, Mapping[str, Any], None]) -> AMPConfig:
    """An :class:`AMPConfig` from itself, a dict (checkpoint hyperparameters) or None (AMP off)."""
    if value is None:
        return AMPConfig()
    if isinstance(value, AMPConfig):
        return value
    names = {f.name for f in fields(AMPConfig)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ConfigError(f"model.amp: unknown setting(s) {unknown}")
    return AMPConfig(**dict(value))
