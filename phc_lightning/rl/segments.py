"""Minibatches of whole ``bptt_horizon``-step segments for recurrent policies (cleanrl ``ppo_atari_lstm``,
rsl_rl ``recurrent_mini_batch_generator``).

The rollout's ``[T, N]`` steps are cut into ``T / bptt_horizon`` segments per env, each a contiguous run of one env's
steps. Minibatches shuffle whole segments, never single steps, and carry what replaying a segment needs: the
recurrent state collection fed to its first step, and where inside it an episode started (the step after a
termination or truncation), where replay zeroes the state as collection did. So no segment carries memory across an
episode boundary. A minibatch is flat and time-major, ``L = bptt_horizon`` steps of ``M`` segments::

    {"obs": [L * M, D], ... every rollout key ..., "recurrent_state": [M, S], "episode_starts": [L * M] bool}
"""

from __future__ import annotations

from typing import Dict, Iterator

import torch

from phc_lightning.core import rng
from phc_lightning.core.errors import ConfigError
from phc_lightning.rl.recurrent import STARTS_KEY, STATE_KEY

Tensor = torch.Tensor


def episode_starts(dones: Tensor, bptt_horizon: int) -> Tensor:
    """``[T, N]`` bool: an episode starts at step ``t`` inside its segment (``dones[t - 1]``); False at each
    segment's first step, whose stored state already is the one collection used (zeroed if it was a start)."""
    starts = torch.zeros_like(dones, dtype=torch.bool)
    starts[1:] = dones[:-1].bool()
    starts[::bptt_horizon] = False
    return starts


def to_segments(x: Tensor, bptt_horizon: int) -> Tensor:
    """``[T, N, ...] -> [L, K * N, ...]`` with ``L = bptt_horizon``; segment ``k * N + n`` is env ``n``'s steps
    ``k * L ... (k + 1) * L - 1``."""
    t, n = x.shape[:2]
    x = x.reshape(t // bptt_horizon, bptt_horizon, n, *x.shape[2:]).transpose(0, 1)
    return x.reshape(bptt_horizon, (t // bptt_horizon) * n, *x.shape[3:])


def segment_minibatches(
    data: Dict[str, Tensor],
    segment_states: Tensor,
    dones: Tensor,
    bptt_horizon: int,
    num_minibatches: int,
    update_epochs: int,
    generator: torch.Generator,
) -> Iterator[Dict[str, Tensor]]:
    """``update_epochs`` passes of ``num_minibatches`` minibatches of shuffled whole segments.

    Args:
        data: rollout tensors, time-major ``[T, N, ...]`` (``T`` a multiple of ``bptt_horizon``).
        segment_states: ``[T / bptt_horizon, N, S]`` state collection fed to every segment's first step.
        dones: ``[T, N]`` bool, the episode ended at step ``t`` (terminated or truncated).
        bptt_horizon: segment length ``L``.
        num_minibatches: minibatches per pass; must divide the ``T / L * N`` segments.
        update_epochs: passes.
        generator: the shuffling RNG, on the device of ``segment_states``.
    """
    num_segments = segment_states.shape[0] * segment_states.shape[1]
    if num_segments % num_minibatches:
        raise ConfigError(
            f"data.num_minibatches={num_minibatches} must divide the {num_segments} segments of a recurrent policy "
            f"(horizon / bptt_horizon x num_envs)"
        )
    segments = {key: to_segments(value, bptt_horizon) for key, value in data.items()}
    starts = to_segments(episode_starts(dones, bptt_horizon), bptt_horizon)
    states = segment_states.reshape(num_segments, segment_states.shape[-1])
    per_batch = num_segments // num_minibatches
    for _ in range(update_epochs):
        perm = rng.randperm(num_segments, generator, states.device, "segment shuffle")
        for i in range(num_minibatches):
            ids = perm[i * per_batch : (i + 1) * per_batch]
            minibatch = {key: value[:, ids].flatten(0, 1) for key, value in segments.items()}
            minibatch[STATE_KEY] = states[ids]
            minibatch[STARTS_KEY] = starts[:, ids].flatten(0, 1)
            yield minibatch
