"""What one collection saw: episode returns and lengths, outcome counts, reward terms (logged once per iteration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch

from phc_lightning.task.env import StepResult

Tensor = torch.Tensor


@dataclass
class EpochStats:
    """What the last collection saw; handed to the learner with the iteration's first minibatch."""

    env_steps: int = 0
    collect_time: float = 0.0
    episode_returns: List[float] = field(default_factory=list)
    episode_lengths: List[float] = field(default_factory=list)
    num_truncated: int = 0
    num_terminated: int = 0
    num_unstable: int = 0
    reward_terms: Dict[str, float] = field(default_factory=dict)

    def as_log_dict(self) -> Dict[str, float]:
        """Flat ``charts/*``, ``rewards/*`` scalars and ``perf/collect_time``."""
        out = {"perf/collect_time": self.collect_time}
        finished = self.num_truncated + self.num_terminated
        if self.episode_returns:
            out["charts/episode_return"] = sum(self.episode_returns) / len(self.episode_returns)
            out["charts/episode_length"] = sum(self.episode_lengths) / len(self.episode_lengths)
        if finished:
            # share of finished episodes that reached the end of their motion rather than failing
            out["charts/truncation_rate"] = self.num_truncated / finished
        out["charts/unstable_envs"] = float(self.num_unstable)
        out.update({"rewards/" + k: v for k, v in self.reward_terms.items()})
        return out


class DeviceStats:
    """:class:`EpochStats` of one collection, accumulated on the env's device and read after it with two host reads.

    The values equal what per-step ``float()`` / ``.tolist()`` reads would give: term means are summed in float64
    in step order, and the returns and lengths of the episodes that ended are listed in step order, then env order.
    Every step keeps all envs' returns, lengths and which ended (fixed shapes); the ended ones are picked after.
    """

    def __init__(self, device: torch.device) -> None:
        self.counts = torch.zeros(3, dtype=torch.long, device=device)  # unstable, terminated, truncated
        self.term_sums: Dict[str, Tensor] = {}
        self.done: List[Tensor] = []
        self.returns: List[Tensor] = []
        self.lengths: List[Tensor] = []

    def add(self, result: StepResult, unstable: Tensor) -> None:
        """Count one env step's outcomes."""
        for key, val in result.info.items():
            if key.startswith("rewards/"):
                name = key[len("rewards/") :]
                mean = val.mean().double()
                self.term_sums[name] = self.term_sums[name] + mean if name in self.term_sums else mean
        if "done" in result.info:
            self.done.append(result.info["done"])
            self.returns.append(result.info["episode_return"])
            self.lengths.append(result.info["episode_length"])
        truncated = result.truncated & ~result.terminated
        self.counts += torch.stack([unstable.sum(), result.terminated.sum(), truncated.sum()])

    def read(self, horizon: int, num_envs: int) -> EpochStats:
        """The ended episodes' rows (one host read), then everything in one device-to-host copy; reward terms
        averaged over the ``horizon`` steps."""
        names = list(self.term_sums)
        parts = [self.counts.double()] + [self.term_sums[name].reshape(1) for name in names]
        num_episodes = 0
        if self.done:
            episodes = torch.stack([torch.stack(self.returns).double(), torch.stack(self.lengths).double()], dim=-1)
            episodes = episodes[torch.stack(self.done)]  # (episodes, 2): step order, then env order
            num_episodes = episodes.shape[0]
            parts += [episodes[:, 0], episodes[:, 1]]
        host = torch.cat(parts).tolist()
        terms_end = 3 + len(names)
        return EpochStats(
            env_steps=horizon * num_envs,
            episode_returns=host[terms_end : terms_end + num_episodes],
            episode_lengths=host[terms_end + num_episodes :],
            num_unstable=int(host[0]),
            num_terminated=int(host[1]),
            num_truncated=int(host[2]),
            reward_terms={name: total / horizon for name, total in zip(names, host[3:terms_end])},
        )
