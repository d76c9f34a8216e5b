"""Rollout collection and the IterableDataset that turns one PPO iteration into one Lightning epoch.

Each pass over :class:`RolloutDataset` collects ``horizon x num_envs`` transitions with the current policy
(stochastic actions, no grad), computes GAE, and yields ``update_epochs x num_minibatches`` shuffled minibatches.
Load it with ``DataLoader(dataset, batch_size=None, num_workers=0)``: the envs live in the main process.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch.utils.data import IterableDataset

from phc_lightning.ppo import compute_gae
from phc_lightning.task.env import HumanoidTracking

Tensor = torch.Tensor


@dataclass
class RolloutBuffer:
    """Transitions of one iteration, time-major.

    ==================  ===================  ============================================================
    field               shape                meaning
    ==================  ===================  ============================================================
    ``obs``             (T, N, obs_dim)      raw (unnormalized) observation the action was taken from
    ``actions``         (T, N, act_dim)      sampled actions (before the action interface clips them)
    ``logprobs``        (T, N)               log-prob of ``actions`` under the collecting policy
    ``values``          (T, N)               V(obs)
    ``rewards``         (T, N)               reward of the step
    ``terminated``      (T, N) bool          failure: the bootstrap is cut
    ``truncated``       (T, N) bool          motion completed / env reset for stability: bootstrapped
    ``next_values``     (T, N)               V(s_{t+1}); at truncations V(final observation), for an env the
                                             backend had to reset V(s_t); 0 at terminations
    ==================  ===================  ============================================================
    """

    obs: Tensor
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    next_values: Tensor

    @classmethod
    def empty(cls, horizon: int, num_envs: int, obs_dim: int, act_dim: int, device: torch.device) -> RolloutBuffer:
        """Preallocated zeros."""

        def z(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        return cls(
            obs=z(horizon, num_envs, obs_dim),
            actions=z(horizon, num_envs, act_dim),
            logprobs=z(horizon, num_envs),
            values=z(horizon, num_envs),
            rewards=z(horizon, num_envs),
            terminated=z(horizon, num_envs, dtype=torch.bool),
            truncated=z(horizon, num_envs, dtype=torch.bool),
            next_values=z(horizon, num_envs),
        )


@dataclass
class EpochStats:
    """What the last iteration saw; logged by the module at epoch end."""

    env_steps: int = 0
    collect_time: float = 0.0
    learn_time: float = 0.0
    episode_returns: List[float] = field(default_factory=list)
    episode_lengths: List[float] = field(default_factory=list)
    num_truncated: int = 0
    num_terminated: int = 0
    num_unstable: int = 0
    reward_terms: Dict[str, float] = field(default_factory=dict)
    minibatches: int = 0

    def as_log_dict(self) -> Dict[str, float]:
        """Flat ``charts/*``, ``rewards/*`` and ``perf/*`` scalars."""
        total = self.collect_time + self.learn_time
        out = {
            "charts/SPS": self.env_steps / total if total > 0 else 0.0,
            "perf/collect_time": self.collect_time,
            "perf/learn_time": self.learn_time,
            "perf/collect_fraction": self.collect_time / total if total > 0 else 0.0,
        }
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


class RolloutDataset(IterableDataset):
    """One PPO iteration per pass: collect, GAE, then shuffled minibatches.

    Args:
        env: the vectorized tracking env (lives in this process).
        get_module: returns the current ``PHCModule`` (the policy changes between passes).
        horizon: steps per env per iteration.
        update_epochs: passes over the batch.
        num_minibatches: minibatches per pass; ``horizon * num_envs`` must divide evenly.
        gamma: discount.
        gae_lambda: GAE lambda.
        target_kl: stop the remaining minibatches of an iteration once approx KL exceeds this.
        total_timesteps: stop training (``trainer.should_stop``) once this many env steps were collected.
        seed: seeds the minibatch shuffling.
        stop_training: called once ``total_timesteps`` is reached (the datamodule sets ``trainer.should_stop``).
    """

    def __init__(
        self,
        env: HumanoidTracking,
        get_module: Callable[[], torch.nn.Module],
        horizon: int,
        update_epochs: int,
        num_minibatches: int,
        gamma: float,
        gae_lambda: float,
        target_kl: Optional[float] = None,
        total_timesteps: Optional[int] = None,
        seed: int = 0,
        stop_training: Optional[Callable[[], None]] = None,
    ) -> None:
        super().__init__()
        batch = horizon * env.num_envs
        if batch % num_minibatches:
            raise ValueError(
                f"data.num_minibatches={num_minibatches} must divide horizon*num_envs={batch} "
                f"(horizon={horizon}, num_envs={env.num_envs})"
            )
        self.env = env
        self.get_module = get_module
        self.horizon = horizon
        self.update_epochs = update_epochs
        self.num_minibatches = num_minibatches
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.target_kl = target_kl
        self.total_timesteps = total_timesteps
        self.stop_training = stop_training
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.next_obs: Optional[Tensor] = None
        self.stats = EpochStats()
        self._iteration_obs: Optional[Tensor] = None
        self._iteration_returns: Optional[Tensor] = None
        self._yielded = self._trained = 0
        self._exhausted = False
        self._start = self._collected = 0.0

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        module = self.get_module()
        self._start = time.perf_counter()
        buf = self.collect(module)
        self._collected = time.perf_counter()
        advantages, returns = compute_gae(
            buf.rewards, buf.values, buf.next_values, buf.terminated, buf.truncated, self.gamma, self.gae_lambda
        )
        flat = {
            "obs": buf.obs.flatten(0, 1),
            "actions": buf.actions.flatten(0, 1),
            "logprobs": buf.logprobs.flatten(),
            "values": buf.values.flatten(),
            "advantages": advantages.flatten(),
            "returns": returns.flatten(),
        }
        self._iteration_obs, self._iteration_returns = flat["obs"], flat["returns"]
        self._yielded, self._trained, self._exhausted = 0, 0, False
        batch_size = flat["values"].numel()
        mb_size = batch_size // self.num_minibatches
        for _ in range(self.update_epochs):
            perm = torch.randperm(batch_size, generator=self.generator).to(flat["values"].device)
            for i in range(self.num_minibatches):
                mb_inds = perm[i * mb_size : (i + 1) * mb_size]
                self._yielded += 1
                yield {k: v[mb_inds] for k, v in flat.items()}
            # Lightning prefetches one batch, so this KL is from one minibatch earlier: close enough to stop on.
            last_kl = getattr(module, "last_approx_kl", None)
            if self.target_kl is not None and last_kl is not None and last_kl > self.target_kl:
                break
        self._exhausted = True

    def minibatch_trained(self, module: torch.nn.Module) -> None:
        """Called after every optimizer step; closes the iteration after its last minibatch.

        This cannot happen at the end of ``__iter__``: Lightning prefetches one batch ahead, so the generator
        finishes before the last minibatch is trained.
        """
        self._trained += 1
        if self._exhausted and self._trained == self._yielded:
            self._finish(module)

    def _finish(self, module: torch.nn.Module) -> None:
        # Normalizer stats move only after the update, so collection and learning of one iteration see the same
        # normalization (the stored log-probs stay valid).
        module.update_normalizers(self._iteration_obs.to(module.device), self._iteration_returns.to(module.device))
        self._iteration_obs = self._iteration_returns = None
        self.stats.minibatches = self._trained
        self.stats.collect_time = self._collected - self._start
        self.stats.learn_time = time.perf_counter() - self._collected
        if self.total_timesteps is not None and int(module.env_steps) >= self.total_timesteps:
            if self.stop_training is not None:
                self.stop_training()

    @torch.no_grad()
    def collect(self, module: torch.nn.Module) -> RolloutBuffer:
        """Step every env ``horizon`` times with stochastic actions from ``module``."""
        env = self.env
        if self.next_obs is None:
            self.next_obs = env.reset()
            module.update_obs_normalizer(self.next_obs.to(module.device))  # first stats from the RSI reset states
        buf = RolloutBuffer.empty(self.horizon, env.num_envs, env.obs_dim, module.action_dim, self.next_obs.device)
        stats = EpochStats()
        term_sums: Dict[str, float] = defaultdict(float)
        was_training = module.training
        module.eval()
        for t in range(self.horizon):
            obs = self.next_obs
            # The env may live on another device than the policy (MuJoCo on CPU, networks on a GPU); the buffer
            # stays with the env and Lightning moves each minibatch to the module.
            actions, logprobs, values = (x.to(obs.device) for x in module.act(obs.to(module.device)))
            # PD targets where the env lives: the actions are moved there anyway, the reference already is.
            result = env.step(module.pd_targets(actions, env.ref_next_dof_pos))
            buf.obs[t] = obs
            buf.actions[t] = actions
            buf.logprobs[t] = logprobs
            buf.values[t] = values
            buf.rewards[t] = result.reward
            buf.terminated[t] = result.terminated
            buf.truncated[t] = result.truncated & ~result.terminated
            # V(s_{t+1}) of the same episode: at truncations the value of the final observation (only those rows
            # need a critic pass); elsewhere it is filled from the next step's values below.
            # An env the backend had to reset has no meaningful final observation: bootstrap from V(s_t), the
            # last sane one.
            unstable = result.info["unstable"].to(obs.device)
            ended = result.truncated & ~result.terminated & ~unstable
            if bool(ended.any()):
                buf.next_values[t, ended] = module.get_value(result.final_obs[ended].to(module.device)).to(obs.device)
            buf.next_values[t, unstable] = values[unstable]
            stats.num_unstable += int(unstable.sum())
            self.next_obs = result.obs
            for key, val in result.info.items():
                if key.startswith("rewards/"):
                    term_sums[key[len("rewards/") :]] += float(val.mean())
            if "episode_return" in result.info and result.info["episode_return"].numel():
                stats.episode_returns.extend(result.info["episode_return"].tolist())
                stats.episode_lengths.extend(result.info["episode_length"].float().tolist())
            stats.num_terminated += int(result.terminated.sum())
            stats.num_truncated += int((result.truncated & ~result.terminated).sum())
        # Non-final steps bootstrap from the value the policy computed at t+1; the last from the current obs.
        done = buf.terminated | buf.truncated
        last_value = module.get_value(self.next_obs.to(module.device)).to(self.next_obs.device)
        following = torch.cat([buf.values[1:], last_value.unsqueeze(0)])
        buf.next_values = torch.where(done, buf.next_values, following)
        buf.next_values[buf.terminated] = 0.0
        module.train(was_training)
        steps = self.horizon * env.num_envs
        module.env_steps += steps
        stats.env_steps = steps
        stats.reward_terms = {k: v / self.horizon for k, v in term_sums.items()}
        self.stats = stats
        return buf
