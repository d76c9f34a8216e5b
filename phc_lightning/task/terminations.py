"""Episode-end tests of the tracking task: failure (terminated, no bootstrap) and motion end (truncated).

PHC resets an env when it fails *or* its motion is over, but only the failure is a true termination:
a finished motion is a time limit and the value of its final observation is bootstrapped.
"""

from __future__ import annotations

from typing import Sequence

import torch

from phc_lightning.core import skeleton
from phc_lightning.core.indices import index_tensor

Tensor = torch.Tensor

# Steps are accumulated as ``start + k * dt`` in float32; a tolerance far below one control step keeps the
# last frame of a motion from being missed by one rounding ulp (which would add a frozen extra step).
TIME_TOLERANCE = 1e-4


def body_distances(sim_body_pos: Tensor, ref_body_pos: Tensor) -> Tensor:
    """Euclidean distance of each body to its reference ``(N, B)``, from positions ``(N, B, 3)``."""
    return (sim_body_pos - ref_body_pos).norm(dim=-1)


def train_failure(sim_body_pos: Tensor, ref_body_pos: Tensor, threshold: float = 0.25) -> Tensor:
    """``(N,)`` bool: any body farther than ``threshold`` metres from the reference (PHC training rule).

    Args:
        sim_body_pos: simulated body positions ``(N, 24, 3)``.
        ref_body_pos: reference body positions ``(N, 24, 3)`` at the same time.
        threshold: termination distance in metres.
    """
    return (body_distances(sim_body_pos, ref_body_pos) > threshold).any(dim=-1)


def eval_failure(
    sim_body_pos: Tensor,
    ref_body_pos: Tensor,
    body_ids: Sequence[int] = skeleton.EVAL_BODIES,
    threshold: float = 0.5,
) -> Tensor:
    """``(N,)`` bool: mean distance over ``body_ids`` (20 bodies, no hands/toes) above ``threshold`` (UHC/PHC eval).

    Args:
        sim_body_pos: simulated body positions ``(N, 24, 3)``.
        ref_body_pos: reference body positions ``(N, 24, 3)`` at the same time.
        body_ids: bodies averaged over.
        threshold: failure distance in metres.
    """
    ids = index_tensor(body_ids, sim_body_pos.device)  # built once per device: runs every evaluation step
    return body_distances(sim_body_pos[:, ids], ref_body_pos[:, ids]).mean(dim=-1) > threshold


def motion_finished(motion_times: Tensor, motion_lengths: Tensor, tolerance: float = TIME_TOLERANCE) -> Tensor:
    """``(N,)`` bool: the reference time reached the end of the motion (``t >= length``) — a truncation.

    Args:
        motion_times: current reference time of each env ``(N,)`` seconds.
        motion_lengths: length of each env's motion ``(N,)`` seconds.
        tolerance: slack for float rounding of the accumulated time, seconds.
    """
    return motion_times >= motion_lengths - tolerance
