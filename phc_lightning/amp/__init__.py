"""Adversarial motion prior (AMP): observations, discriminator, replay buffer, and its learner and data sides.
May import core, sim, motion, task and rl; the rollout and the learner compose it."""

from phc_lightning.amp.config import AMPConfig

__all__ = ["AMPConfig"]
