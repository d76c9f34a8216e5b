"""Adversarial motion prior (AMP): observations, discriminator, replay buffer, and its learner and data sides."""

from phc_lightning.amp.config import AMPConfig

__all__ = ["AMPConfig"]
