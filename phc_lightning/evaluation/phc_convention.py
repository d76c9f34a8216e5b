"""PHC's own evaluation bookkeeping (``im_eval``), reproduced beside ours in the same playback.

PHC's player (``phc/learning/im_amp_players.py``, ``IMAMPPlayerContinuous._post_step``) plays ``num_envs`` motions
at once and records every env's body positions at every step. It differs from our convention (errors stop at a
motion's failure) in what a failed motion contributes: PHC resets the failed env, which replays its motion from
t = 0, and keeps recording it until the whole chunk of envs stops; it then keeps the first ``num_steps - 1``
recorded frames of every env, failure, reset and replay included. docs/evaluation.md has the full comparison.

:class:`PHCChunk` follows that rule step by step, so the errors can be summed as the motions play (no
trajectories held) and no motion is played twice.
"""

from __future__ import annotations

from typing import Dict

import torch

Tensor = torch.Tensor

OURS = "ours"
PHC = "phc"
PHC_PREFIX = "phc/"
"""Summary keys of PHC's convention: ``phc/success_rate``, ``phc/mpjpe_g``, ... (logged as ``eval/phc/...``)."""

CONVENTIONS: Dict[str, str] = {
    OURS: "each motion played once from t=0 to its end or its failure (mean error of the 20 bodies without hands "
          "and toes > 0.5 m); errors over the frames it played up to and including the failure frame, mean over "
          "24 bodies, mm, frame-weighted over motions",
    PHC: "PHC im_eval (im_amp_players.py _post_step + smpl_sim compute_metrics_lite): the same failure rule; a "
         "failed motion is reset and replayed from t=0 and its first num_steps - 1 recorded frames count, "
         "replays included, as long as its chunk of num_envs motions plays; mean over 24 bodies, mm, "
         "frame-weighted over motions",
}
"""What the figures of each convention mean, for the summary JSON (details: docs/evaluation.md)."""


def convention_of(key: str) -> str:
    """The convention of a summary key: ``"phc"`` for ``phc/...`` keys, else ``"ours"``."""
    return PHC if key.startswith(PHC_PREFIX) else OURS


def phc_num_steps(num_frames: Tensor, fps: Tensor, control_dt: float) -> Tensor:
    """PHC's ``MotionLibBase.get_motion_num_steps``: ``ceil(num_frames * control rate / fps)`` per motion (long).

    A relative slack of 1e-6 keeps float rounding from adding a step (30 fps at 30 Hz gives ``num_frames``).
    """
    steps = num_frames.double() / (fps.double() * float(control_dt))
    return torch.ceil(steps * (1.0 - 1e-6)).long()


class PHCChunk:
    """PHC's bookkeeping of one chunk of envs playing their motions together, one control step at a time.

    PHC's rules (``_post_step``, ``k`` = the step index from 0, one behind the env's step counter):

    - failure: a termination at step ``k <= num_steps - 1`` (later ones are replays after the motion's end);
    - the chunk stops after the step ``k`` at which no real env is alive (not failed) or ``k + 1 >=`` the largest
      ``num_steps`` of the envs still alive;
    - an env's errors are those of its recorded frames ``k < num_steps - 1`` (all of them with the failure, the
      reset and the replays in between).

    Args:
        num_steps: ``[N]`` :func:`phc_num_steps` of each env's motion.
        real: ``[N]`` bool, envs that hold a motion of the evaluated set (not a spare env filling the last chunk;
            PHC's ``bound``).
    """

    def __init__(self, num_steps: Tensor, real: Tensor) -> None:
        self.num_steps = num_steps.long()
        self.real = real.bool().to(self.num_steps.device)
        self.failed = torch.zeros_like(self.real)
        # A 0-dim bool on the envs' device: the bookkeeping of a step never waits for the device.
        self.running = self.real.any()

    def record(self, step: int, terminated: Tensor) -> Tensor:
        """Fold in step ``step``'s terminations ``[N]`` bool; return ``[N]`` bool: envs whose frame of this step
        counts in PHC's errors."""
        counted = self.real & (step < self.num_steps - 1) & self.running
        self.failed |= self.real & terminated.to(self.real.device).bool() & (step <= self.num_steps - 1)
        alive = self.real & ~self.failed
        longest_alive = torch.where(alive, self.num_steps, torch.zeros_like(self.num_steps)).max()  # 0: none alive
        self.running = self.running & (step + 1 < longest_alive)
        return counted

    def wants_frames(self, step: int) -> Tensor:
        """Whether step ``step`` still has a frame that PHC would count (the chunk plays and an env has frames left),
        a 0-dim bool tensor."""
        return self.running & (self.real & (step < self.num_steps - 1)).any()
