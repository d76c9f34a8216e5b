"""The learner side of AMP, a mixin of :class:`~phc_lightning.learner.module.PHCModule`: the discriminator with its own
input normalizer and optimizer, the reward the data side asks for before GAE, and the discriminator loss of each
minibatch (PHC / ASE ``AMPAgent``).

The discriminator trains in the same ``training_step`` as the policy, on the minibatch's agent samples (rollout and
replay) against demo samples; the two losses share no parameters, so one backward of their sum gives each optimizer
exactly its own gradients.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from phc_lightning.amp.config import AMPConfig
from phc_lightning.amp.discriminator import (
    Discriminator,
    disc_accuracy,
    disc_bce_loss,
    disc_reward,
    gradient_penalty,
    squared_weights,
)
from phc_lightning.amp.observations import amp_obs_dim
from phc_lightning.core.errors import ConfigError
from phc_lightning.rl import distributed
from phc_lightning.rl.normalization import RunningNorm

Tensor = torch.Tensor

AMP_LOG_KEYS = {
    "disc": "losses/disc",
    "disc_grad_penalty": "losses/disc_grad_penalty",
    "disc_logit_reg": "losses/disc_logit_reg",
    "disc_total": "losses/disc_total",
    "accuracy_agent": "charts/disc_accuracy_agent",
    "accuracy_demo": "charts/disc_accuracy_demo",
}
"""Entries of :meth:`AMPLearner.amp_losses` and the keys they are logged under (per iteration, the mean)."""


class AMPLearner:
    """Mixin of ``PHCModule`` (a ``LightningModule``); call :meth:`_init_amp` in ``__init__`` after the policy is
    built (so the policy's initialization draws the same random numbers with AMP on or off)."""

    def _init_amp(self, config: AMPConfig, adam_eps: float) -> None:
        self.amp_config = config
        self._amp_adam_eps = adam_eps
        self.discriminator: Optional[Discriminator] = None
        self.amp_norm: Optional[RunningNorm] = None
        if config.enabled:
            dim = amp_obs_dim(config.history)
            self.amp_norm = RunningNorm(dim, clip=config.obs_clip)
            self.discriminator = Discriminator(dim, config.disc_hidden)

    @torch.no_grad()
    def disc_reward(self, amp_obs: Tensor) -> Tensor:
        """Discriminator reward ``[B]`` of raw stacked agent AMP observations ``[B, history * 196]``."""
        if self.discriminator is None:
            raise RuntimeError("PHCModule.disc_reward: AMP is off (model.amp.enabled false)")
        logits = self.discriminator(self.amp_norm(amp_obs))
        return disc_reward(logits, self.amp_config.reward_scale)

    def amp_losses(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Discriminator loss of a minibatch (``"loss"``, with grad) and its logged terms.

        ``batch`` holds ``amp_obs`` and ``amp_obs_replay`` (agent, label 0) and ``amp_obs_demo`` (label 1), raw
        ``[B_i, history * 196]``. The normalizer first merges all three (as ASE's running mean-std in train mode).
        """
        cfg = self.amp_config
        agent = torch.cat([batch["amp_obs"], batch["amp_obs_replay"]])
        demo = batch["amp_obs_demo"]
        distributed.update_norm_across_ranks(self.amp_norm, torch.cat([agent, demo]))
        agent_logits = self.discriminator(self.amp_norm(agent))
        demo_in = self.amp_norm(demo).requires_grad_(True)  # the penalty's gradient is taken w.r.t. these inputs
        demo_logits = self.discriminator(demo_in)
        bce = disc_bce_loss(agent_logits, demo_logits)
        penalty = gradient_penalty(demo_logits, demo_in)
        logit_reg = squared_weights([self.discriminator.logits.weight])
        decay = squared_weights(self.discriminator.weights())
        total = bce + cfg.grad_penalty_coef * penalty + cfg.logit_reg_coef * logit_reg + cfg.weight_decay * decay
        accuracy = disc_accuracy(agent_logits.detach(), demo_logits.detach())
        return {
            "loss": cfg.disc_coef * total,
            "disc": bce.detach(),
            "disc_grad_penalty": penalty.detach(),
            "disc_logit_reg": logit_reg.detach(),
            "disc_total": total.detach(),
            "accuracy_agent": accuracy["agent"],
            "accuracy_demo": accuracy["demo"],
        }

    def amp_log_dict(self, losses: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """:meth:`amp_losses` terms under their log keys."""
        return {key: losses[name] for name, key in AMP_LOG_KEYS.items()}

    def disc_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the discriminator alone (its lr is the AMP config's; lr schedules touch only the policy's)."""
        return torch.optim.Adam(self.discriminator.parameters(), lr=self.amp_config.learning_rate,
                                eps=self._amp_adam_eps)

    def policy_and_disc_optimizers(self) -> Tuple[Any, Optional[Any]]:
        """``(policy optimizer, discriminator optimizer or None)`` of ``self.optimizers()``."""
        opts = self.optimizers()
        if isinstance(opts, (list, tuple)):
            return opts[0], opts[1]
        return opts, None

    def check_amp_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Refuse a checkpoint trained with AMP into a model without, and the other way round (one clear line, not
        a state-dict key error)."""
        had = any(key.startswith("discriminator.") for key in checkpoint.get("state_dict", {}))
        has = self.discriminator is not None
        if had != has:
            raise ConfigError(
                f"--ckpt_path: the checkpoint was trained with AMP {'on' if had else 'off'}, this model has it "
                f"{'on' if has else 'off'}; resume with the same model.amp.enabled, or warm-start a new run with "
                "--model.init_from"
            )
