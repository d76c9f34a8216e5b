"""Rollout collection and the IterableDataset that turns one PPO iteration into one Lightning epoch.

Each pass over :class:`RolloutDataset` collects ``horizon x num_envs`` transitions with the current policy
(stochastic actions, no grad), computes GAE, and yields ``update_epochs x num_minibatches`` shuffled minibatches
(of single steps, or of whole ``bptt_horizon``-step segments for a recurrent policy, whose per-env state the
dataset carries across iterations and zeroes wherever an episode ends or the envs are reset).
Load it with ``DataLoader(dataset, batch_size=None, num_workers=0)``: the envs live in the main process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Protocol, Tuple

import torch
from torch.utils.data import IterableDataset

from phc_lightning.core import rng
from phc_lightning.rl.ppo import compute_gae
from phc_lightning.rl.segments import segment_minibatches
from phc_lightning.rollout.stats import DeviceStats, EpochStats
from phc_lightning.task.env import HumanoidTracking

if TYPE_CHECKING:
    from phc_lightning.amp.collection import AMPCollector

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
    ``segment_states``  (T/L, N, S)          recurrent state fed to step ``k * L`` (``L = bptt_horizon``;
                                             ``S = 0`` without an LSTM)
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
    segment_states: Optional[Tensor] = None

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


class RolloutPolicy(Protocol):
    """What collection needs from a policy (``PHCModule`` implements it); collection never writes into it."""

    action_dim: int
    device: torch.device
    training: bool

    def train(self, mode: bool = True) -> Any:
        """Collection runs the policy in eval mode and restores the mode after."""

    recurrent_state_size: int
    """Width ``S`` of each env's recurrent state (0: no memory); the rollout carries it and zeroes it at resets."""

    def act_step(
        self, obs: Tensor, state: Tensor, deterministic: bool = False, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(actions [N, A], logprob [N], value [N], next state [N, S])`` of raw observations ``[N, obs_dim]``
        and states ``[N, S]``."""

    def get_value(self, obs: Tensor, state: Optional[Tensor] = None) -> Tensor:
        """Critic value ``[N]`` of raw observations (under states ``[N, S]``), in return units."""

    def pd_targets(self, actions: Tensor, ref_dof_pos: Tensor) -> Tensor:
        """PD targets ``[N, 69]`` of actions under the policy's action interface."""


_ROW_KEY = "_row"

ITERATION_KEY = "iteration"
"""Key of the first minibatch of every iteration that carries :class:`IterationSummary` fields (a dict)."""


def iteration_summary(obs: Tensor, returns: Tensor, env_steps: int, total_timesteps: Optional[int],
                      stats: Dict[str, float]) -> Dict:
    """What the learner needs once per iteration, handed over with the first minibatch.

    Args:
        obs: the raw observation of every transition of the iteration ``[B, obs_dim]`` (the buffer's rows, each
            once), merged into the observation normalizer after the update.
        returns: GAE returns ``[B]``, merged into the value normalizer after the update.
        env_steps: env steps this iteration collected (of every process); the learner counts them, the one env-step
            counter of a run.
        total_timesteps: the learner stops training after the iteration its count reaches this (None: never).
        stats: ``charts/*``, ``rewards/*`` and ``perf/collect_time`` scalars of the collection.
    """
    return {"obs": obs, "returns": returns, "env_steps": env_steps, "total_timesteps": total_timesteps,
            "stats": stats}


class RolloutDataset(IterableDataset):
    """One PPO iteration per pass: collect, GAE, then ``update_epochs x num_minibatches`` shuffled minibatches.

    The dataset has a length (the number of minibatches of an iteration), so Lightning fetches batches one at a
    time instead of prefetching: collection happens when the first minibatch is fetched, which is after every
    ``on_train_epoch_start`` hook, in every epoch, also the first one after a resume.

    Args:
        env: the vectorized tracking env (lives in this process).
        get_policy: returns the current policy (it changes between passes), a :class:`RolloutPolicy`.
        horizon: steps per env per iteration.
        update_epochs: passes over the batch.
        num_minibatches: minibatches per pass; ``horizon * num_envs`` must divide evenly.
        gamma: discount.
        gae_lambda: GAE lambda.
        total_timesteps: handed to the learner with every summary: it stops after the iteration whose env steps
            reach this many (the learner keeps the run's env-step count; the dataset keeps none).
        seed: seeds the action sampling and the minibatch shuffling.
        world_size: processes collecting alike (Lightning DDP, each with its own ``num_envs`` envs): the summary's
            ``env_steps`` (and so ``total_timesteps``) count all of them.
        bptt_horizon: a recurrent policy trains on segments of this many steps (must divide ``horizon``; None: the
            whole horizon); unused by a policy without memory.
        amp: the data side of AMP (None: off): agent AMP histories, the discriminator reward mixed in before GAE
            (asked of the policy, a :class:`~phc_lightning.amp.collection.DiscriminatorPolicy`), replay and demo
            samples added to every minibatch.
    """

    def __init__(
        self,
        env: HumanoidTracking,
        get_policy: Callable[[], RolloutPolicy],
        horizon: int,
        update_epochs: int,
        num_minibatches: int,
        gamma: float,
        gae_lambda: float,
        total_timesteps: Optional[int] = None,
        seed: int = 0,
        world_size: int = 1,
        bptt_horizon: Optional[int] = None,
        amp: Optional[AMPCollector] = None,
    ) -> None:
        super().__init__()
        bptt_horizon = bptt_horizon or horizon
        if horizon % bptt_horizon:
            raise ValueError(f"data.bptt_horizon={bptt_horizon} must divide data.horizon={horizon}")
        batch = horizon * env.num_envs
        if batch % num_minibatches:
            raise ValueError(
                f"data.num_minibatches={num_minibatches} must divide horizon*num_envs={batch} "
                f"(horizon={horizon}, num_envs={env.num_envs})"
            )
        self.env = env
        self.get_policy = get_policy
        self.horizon = horizon
        self.update_epochs = update_epochs
        self.num_minibatches = num_minibatches
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.total_timesteps = total_timesteps
        self.world_size = world_size
        self.bptt_horizon = bptt_horizon
        self.amp = amp
        # Minibatch order is drawn where the buffer lives (the env's device): no index copy to the device per pass.
        self.generator = rng.new_generator(seed, env.device)
        # Action noise has its own stream (created on the policy's device), so a resume does not depend on the
        # global RNG, which any library may draw from.
        self._action_seed = seed + 1
        self.action_generator: Optional[torch.Generator] = None
        self._action_rng_state: Optional[Tensor] = None
        self.next_obs: Optional[Tensor] = None
        self.policy_state: Optional[Tensor] = None
        """Each env's recurrent state ``[N, S]`` for ``next_obs``; None: zeros (every episode starts afresh)."""
        self.stats = EpochStats()

    def __len__(self) -> int:
        """Minibatches per iteration (Lightning does not prefetch from a dataset with a length)."""
        return self.update_epochs * self.num_minibatches

    def restart_from(self, obs: Tensor) -> None:
        """Every env was reset outside collection (e.g. onto new motions, ``MotionResampling``): the next iteration
        continues from their observations ``obs [N, obs_dim]``, each env with a blank recurrent memory."""
        self.next_obs = obs
        self.policy_state = None

    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        policy = self.get_policy()
        start = time.perf_counter()
        buf = self.collect(policy)  # a fresh start (no observations to continue from) resets the envs first
        amp_stats: Dict[str, float] = {}
        if self.amp is not None:  # the mixed reward is what GAE sees
            buf.rewards, amp_stats = self.amp.mix_rewards(policy, buf.rewards)
            self.amp.store_replay()
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
        steps = self.horizon * self.env.num_envs * self.world_size  # every rank collects as many as this one
        self.stats.collect_time = time.perf_counter() - start
        stats = self.stats.as_log_dict()
        stats.update(amp_stats)
        summary = iteration_summary(flat["obs"], flat["returns"], steps, self.total_timesteps, stats)
        # Each row's index into the flat batch travels with the minibatch: AMP takes its agent samples by it.
        flat[_ROW_KEY] = torch.arange(flat["values"].numel(), device=flat["values"].device)
        if policy.recurrent_state_size:
            data = {k: v.view(self.horizon, self.env.num_envs, *v.shape[1:]) for k, v in flat.items()}
            minibatches = segment_minibatches(data, buf.segment_states, buf.terminated | buf.truncated,
                                              self.bptt_horizon, self.num_minibatches, self.update_epochs,
                                              self.generator)
        else:
            minibatches = self._shuffled_steps(flat)
        for minibatch in minibatches:
            rows = minibatch.pop(_ROW_KEY)
            if self.amp is not None:
                minibatch.update(self.amp.minibatch(rows))
            if summary is not None:
                minibatch[ITERATION_KEY], summary = summary, None
            yield minibatch

    def _shuffled_steps(self, flat: Dict[str, Tensor]) -> Iterator[Dict[str, Tensor]]:
        """Minibatches of single steps shuffled over the whole batch (a policy without memory)."""
        batch_size = flat["values"].numel()
        mb_size = batch_size // self.num_minibatches
        for _ in range(self.update_epochs):
            perm = rng.randperm(batch_size, self.generator, flat["values"].device, "minibatch shuffle")
            for i in range(self.num_minibatches):
                mb_inds = perm[i * mb_size : (i + 1) * mb_size]
                yield {k: v[mb_inds] for k, v in flat.items()}

    def _actions_rng(self, device: torch.device) -> torch.Generator:
        if self.action_generator is None or self.action_generator.device != device:
            self.action_generator = rng.new_generator(self._action_seed, device)
            if self._action_rng_state is not None:
                self.action_generator.set_state(self._action_rng_state)
                self._action_rng_state = None
        return self.action_generator

    def state_dict(self) -> Dict[str, Any]:
        """RNG states and the carried rollout of the data side of training (tensors and primitives); the env-step
        count is the learner's (``PHCModule.env_steps``)."""
        actions_rng = self._action_rng_state
        if self.action_generator is not None:
            actions_rng = self.action_generator.get_state()
        state = {
            "shuffle_rng": self.generator.get_state(),
            "action_rng": actions_rng,
            "resume_rollout": self.next_obs is not None,
        }
        if self.policy_state is not None and self.policy_state.numel():
            state["policy_state"] = self.policy_state.detach().cpu().clone()
        if self.amp is not None:
            state["amp"] = self.amp.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the env's own state is restored separately (before this)."""
        self.generator.set_state(state["shuffle_rng"])
        self.action_generator = None
        self._action_rng_state = state["action_rng"]
        self.next_obs = self.env.obs if state["resume_rollout"] else None
        self.policy_state = state.get("policy_state") if state["resume_rollout"] else None
        if self.amp is not None:
            self.amp.load_state_dict(state["amp"])

    @torch.no_grad()
    def collect(self, module: RolloutPolicy) -> RolloutBuffer:
        """Step every env ``horizon`` times with stochastic actions from ``module`` (no grad, eval mode).

        Nothing in the loop, the env's steps and resets included, reads a tensor's value on the host: on a GPU every
        such read would wait for the step's kernels. Every shape is fixed, the statistics are accumulated where the
        env lives, and the few reads of an iteration (statistics, which envs' motions ended, the physics' deferred
        errors) come after the loop.
        """
        env = self.env
        if self.next_obs is None:
            self.restart_from(env.reset())
        state = self.policy_state
        if state is None:
            state = torch.zeros(env.num_envs, module.recurrent_state_size, device=module.device)
        state = state.to(module.device)
        segment_states = []
        noise_rng = self._actions_rng(module.device)
        device = self.next_obs.device
        buf = RolloutBuffer.empty(self.horizon, env.num_envs, env.obs_dim, module.action_dim, device)
        stats = DeviceStats(device)
        # Every step's final observations and recurrent states, for the envs whose motion ends: kept whole (fixed
        # shapes), the truncated rows are picked after the loop. `ended`: truncated, not by the backend's rescue.
        final_obs = torch.zeros_like(buf.obs)
        final_states = torch.zeros(self.horizon, env.num_envs, module.recurrent_state_size, device=state.device)
        ended = torch.zeros_like(buf.truncated)
        was_training = module.training
        module.eval()
        if self.amp is not None:
            self.amp.begin(env, self.horizon)
        for t in range(self.horizon):
            obs = self.next_obs
            if t % self.bptt_horizon == 0:
                segment_states.append(state)
            # The env may live on another device than the policy (MuJoCo on CPU, networks on a GPU); the buffer
            # stays with the env and Lightning moves each minibatch to the module.
            actions, logprobs, values, next_state = module.act_step(obs.to(module.device), state, generator=noise_rng)
            actions, logprobs, values = (x.to(obs.device) for x in (actions, logprobs, values))
            # PD targets where the env lives: the actions are moved there anyway, the reference already is.
            result = env.step(module.pd_targets(actions, env.ref_next_dof_pos))
            buf.obs[t] = obs
            buf.actions[t] = actions
            buf.logprobs[t] = logprobs
            buf.values[t] = values
            buf.rewards[t] = result.reward
            buf.terminated[t] = result.terminated
            buf.truncated[t] = result.truncated & ~result.terminated
            # V(s_{t+1}) of the same episode: at truncations V(final observation), evaluated after the loop from
            # the finished envs' final observations kept here; 0 at terminations; elsewhere the next step's value
            # (below). An env the backend had to reset has no meaningful final observation: bootstrap from V(s_t),
            # the last sane one.
            unstable = result.info["unstable"].to(obs.device)
            buf.next_values[t] = torch.where(unstable, values, buf.next_values[t])
            final_obs[t] = result.final_obs
            final_states[t] = next_state
            ended[t] = buf.truncated[t] & ~unstable
            stats.add(result, unstable)
            if self.amp is not None:
                self.amp.record(t, result, env)
            self.next_obs = result.obs
            # The envs that ended were reset: their next episode starts with a blank memory.
            ended_envs = (result.terminated | result.truncated).to(state.device)
            state = next_state.masked_fill(ended_envs.unsqueeze(-1), 0.0)
        self.policy_state = state
        buf.segment_states = torch.stack(segment_states).to(self.next_obs.device)
        env.check_physics()  # before anything trains on the iteration
        self._bootstrap_truncations(module, buf, ended, final_obs, final_states)
        # Non-final steps bootstrap from the value the policy computed at t+1; the last from the current obs.
        done = buf.terminated | buf.truncated
        last_value = module.get_value(self.next_obs.to(module.device), state).to(self.next_obs.device)
        following = torch.cat([buf.values[1:], last_value.unsqueeze(0)])
        buf.next_values = torch.where(done, buf.next_values, following)
        buf.next_values.masked_fill_(buf.terminated, 0.0)
        module.train(was_training)
        self.stats = stats.read(self.horizon, env.num_envs)
        return buf

    @staticmethod
    def _bootstrap_truncations(
        module: RolloutPolicy, buf: RolloutBuffer, ended: Tensor, final_obs: Tensor, final_states: Tensor
    ) -> None:
        """``next_values[t]`` = V(final observation) of the envs whose motion ended at step ``t`` (``ended (T, N)``;
        ``final_obs (T, N, D)``, ``final_states (T, N, S)`` the recurrent memory after the final step).

        Two host reads for the whole iteration (where and how many per step); the critic then sees exactly the rows,
        in the order, of a per-step ``final_obs[truncated]`` pass, so the values are bit for bit those of evaluating
        every step as it happens, and the indices never leave the device.
        """
        flat = ended.flatten().nonzero().squeeze(-1)  # (t * N + env) of every truncation
        per_step = ended.sum(dim=1).tolist()
        obs_rows, state_rows = final_obs.flatten(0, 1), final_states.flatten(0, 1)
        for rows, count in zip(flat.split(per_step), per_step):
            if count:
                state = state_rows[rows.to(state_rows.device)]  # the memory of the episode that ended
                values = module.get_value(obs_rows[rows].to(module.device), state)
                buf.next_values.view(-1)[rows] = values.to(buf.next_values.device)
