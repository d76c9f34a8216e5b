"""Configuration of the tracking task: reward weights and sharpness, termination distances.

Defaults are PHC / puffer-phc's. Field names follow PHC's ``reward_specs`` (``w_*`` weights, ``k_*``
sharpness), so a PHC user finds them; :meth:`TaskConfig.reward_terms` turns them into the term table the
env evaluates (mjlab style), so changing a weight is a config edit: ``--data.task.w_pos 0.6``, or a ``task:``
block under ``data:`` in YAML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Dict, Tuple

from phc_lightning.core.errors import ConfigError
from phc_lightning.task.rewards import (
    RewardTerm,
    body_angvel_reward,
    body_pos_reward,
    body_rot_reward,
    body_vel_reward,
    power_penalty,
    root_pos_reward,
)


@dataclass(frozen=True)
class TaskConfig:
    """Reward and termination settings of :class:`phc_lightning.task.env.HumanoidTracking` (read-only after use).

    Attributes:
        w_pos: weight of the body position term.
        k_pos: sharpness of the body position term, 1/m².
        w_rot: weight of the body rotation term.
        k_rot: sharpness of the body rotation term, 1/rad².
        w_vel: weight of the body linear velocity term.
        k_vel: sharpness of the body linear velocity term, s²/m².
        w_ang_vel: weight of the body angular velocity term.
        k_ang_vel: sharpness of the body angular velocity term, s²/rad².
        w_root_pos: weight of the root position term ``exp(−k_root_pos·|Δroot|²)`` (0: off, PHC); a wide kernel
            that keeps pointing back to the reference when the policy had to leave it.
        k_root_pos: sharpness of the root position term, 1/m².
        anchor_relative: the body position and rotation terms compare the pose with the reference moved onto
            the simulated root (its heading and ground position; BeyondMimic's anchor-relative tracking), so the
            root's drift no longer zeroes them; the drift is left to ``w_root_pos`` and the termination (PHC:
            false, world frame).
        power_coef: weight of the power penalty (reward −power_coef·Σ|τ·q̇|); 0 disables it.
        power_free_steps: first steps of an episode exempt from the power penalty.
        enable_early_termination: end training episodes when tracking fails (PHC default True).
        termination_distance: training failure when any body is farther than this from the reference, m.
        termination_body_mean: training failure when the *mean* distance of the 20 evaluation bodies exceeds
            ``termination_distance`` (the evaluation's rule) instead of any single body (PHC: false).
        eval_failure_distance: evaluation failure when the mean over the 20 eval bodies exceeds this, m.
        termination_grace_steps: failure is only tested once more than this many steps ran (PHC: 1).
        future_steps: control steps ahead of the reference frames the observation describes: the first must be 1
            (PHC's one future frame, which residual actions aim at); more give the policy a look ahead, each adding
            576 task features (the observation grows from 934).
        start_init_prob: share of training resets that start at the beginning of their motion rather than at a
            uniform random time (ASE/AMP's hybrid state init; PHC: 0, every reset at a random time). Evaluation
            starts every motion at 0, and a start from rest can be the hardest part of a clip to learn.
        adaptive_start: draw the other training start times by recent failures per stretch of each motion
            (BeyondMimic's adaptive sampling, :mod:`phc_lightning.task.start_sampling`) instead of uniformly (PHC).
        adaptive_bin_seconds: width of those stretches (bins), seconds.
        adaptive_uniform_ratio: weight spread evenly over a motion's bins, so every bin keeps being drawn.
        adaptive_alpha: weight of each step's failures in the per-bin moving average.
        adaptive_kernel_size: bins, from a failing one backwards, that its failures make likelier starts.
        adaptive_kernel_decay: weight ratio between neighbouring bins of that kernel.
    """

    w_pos: float = 0.5
    k_pos: float = 100.0
    w_rot: float = 0.3
    k_rot: float = 10.0
    w_vel: float = 0.1
    k_vel: float = 0.1
    w_ang_vel: float = 0.1
    k_ang_vel: float = 0.1
    w_root_pos: float = 0.0
    k_root_pos: float = 10.0
    anchor_relative: bool = False
    power_coef: float = 0.0005
    power_free_steps: int = 3
    enable_early_termination: bool = True
    termination_distance: float = 0.25
    termination_body_mean: bool = False
    eval_failure_distance: float = 0.5
    termination_grace_steps: int = 1
    future_steps: Tuple[int, ...] = (1,)
    start_init_prob: float = 0.0
    adaptive_start: bool = False
    adaptive_bin_seconds: float = 1.0
    adaptive_uniform_ratio: float = 0.1
    adaptive_alpha: float = 0.001
    adaptive_kernel_size: int = 1
    adaptive_kernel_decay: float = 0.8

    def __post_init__(self) -> None:
        """Reject values that would silently give a meaningless reward or termination."""
        steps = tuple(self.future_steps)
        whole = all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        if not (steps and whole and steps[0] == 1 and all(b > a for a, b in zip(steps, steps[1:]))):
            raise ConfigError(f"data.task.future_steps: increasing whole numbers of control steps starting with 1, "
                              f"got {self.future_steps!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (bool, tuple, list)):
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"data.task.{f.name}: must be a finite number >= 0, got {value!r}")
        for name in ("termination_distance", "eval_failure_distance"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.task.{name}: must be > 0 metres, got {getattr(self, name)!r}")
        for name in ("start_init_prob", "adaptive_alpha"):
            if getattr(self, name) > 1:
                raise ConfigError(f"data.task.{name}: must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("adaptive_bin_seconds", "adaptive_uniform_ratio", "adaptive_alpha", "adaptive_kernel_decay"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.task.{name}: must be > 0, got {getattr(self, name)!r}")
        if int(self.adaptive_kernel_size) != self.adaptive_kernel_size or self.adaptive_kernel_size < 1:
            raise ConfigError(f"data.task.adaptive_kernel_size: must be a whole number >= 1, "
                              f"got {self.adaptive_kernel_size!r}")

    def reward_terms(self) -> Dict[str, RewardTerm]:
        """The reward table ``{name: RewardTerm}``; the names are the ``rewards/<name>`` log keys."""
        # anchor_relative: the same kernels against the reference moved onto the sim root (see reward_inputs)
        ref = "anchored_ref" if self.anchor_relative else "ref"
        terms = {
            "body_pos": RewardTerm(body_pos_reward, self.w_pos, ("body_pos", f"{ref}_body_pos"), {"k": self.k_pos}),
            "body_rot": RewardTerm(body_rot_reward, self.w_rot, ("body_rot", f"{ref}_body_rot"), {"k": self.k_rot}),
            "body_vel": RewardTerm(body_vel_reward, self.w_vel, ("body_vel", "ref_body_vel"), {"k": self.k_vel}),
            "body_angvel": RewardTerm(
                body_angvel_reward, self.w_ang_vel, ("body_angvel", "ref_body_angvel"), {"k": self.k_ang_vel}
            ),
        }
        if self.w_root_pos > 0:  # absent at 0, so PHC's table (and its logged terms) stays as it was
            terms["root_pos"] = RewardTerm(root_pos_reward, self.w_root_pos, ("body_pos", "ref_body_pos"),
                                           {"k": self.k_root_pos})
        if self.power_coef > 0:
            terms["power"] = RewardTerm(
                power_penalty,
                self.power_coef,
                ("actuator_forces", "dof_vel", "progress"),
                {"free_steps": self.power_free_steps},
            )
        return terms
