"""The data side of AMP: the agent's AMP observation history during collection, the discriminator reward mixed
into the task reward before GAE, the agent replay buffer, and demo samples for every minibatch.

:class:`~phc_lightning.rollout.dataset.RolloutDataset` calls, per iteration::

    amp.begin(env, horizon)                  # before the first step: histories of freshly reset envs; the last
                                             # iteration's kept agent samples enter the replay buffer
    amp.record(t, result, env)               # after every env step
    rewards, stats = amp.mix_rewards(policy, task_rewards)   # before GAE
    amp.store_replay()                       # which of the iteration's agent samples the replay buffer keeps
    minibatch.update(amp.minibatch(mb_inds))  # agent, replay and demo samples of each minibatch

The replay buffer holds earlier iterations' samples only: the rows an iteration keeps are chosen when it is collected
(the same draw as storing them at once) and stored when the next iteration starts, after this iteration's update
(ASE stores after the update), so a minibatch's replay samples never come from its own rollout. Until then they are
``pending``, part of the saved state.

The env computes the 196 features of its post-step, pre-reset state (``HumanoidTracking(state_features=...)``):
an env that finishes an episode is reset inside ``step``, and its AMP history restarts from the reference motion
at the new start time (the same demo function as the discriminator's demo samples).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Tuple

import torch

from phc_lightning.amp.config import AMPConfig
from phc_lightning.amp.observations import AMP_OBS_STEP_DIM, amp_obs_dim, demo_amp_obs, sample_demo_amp_obs
from phc_lightning.amp.replay import ReplayBuffer
from phc_lightning.core import rng
from phc_lightning.core.threads import one_cpu_thread
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.task.env import HumanoidTracking, StepResult

Tensor = torch.Tensor

STEP_FEATURES_KEY = "state_features"
"""``StepResult.info`` key of the post-step, pre-reset state features the env computes when asked to."""

MINIBATCH_KEYS = ("amp_obs", "amp_obs_replay", "amp_obs_demo")
"""Minibatch keys the discriminator update reads: agent samples of the rollout, of the replay buffer, demos."""

_REWARD_CHUNK = 65536  # rows per discriminator forward when rewarding a whole iteration


class DiscriminatorPolicy(Protocol):
    """What the data side asks of the learner (``PHCModule`` with AMP on implements it)."""

    device: torch.device

    def disc_reward(self, amp_obs: Tensor) -> Tensor:
        """Discriminator reward ``[B]`` of stacked agent AMP observations ``[B, history * 196]`` (no grad)."""


class AMPCollector:
    """AMP state of one process's envs and its random streams (demo draws, replay buffer), saved for exact resume.

    Args:
        config: the AMP settings (``enabled`` must be true).
        motions: the motion library demos come from (the env's).
        control_dt: seconds per env step, the spacing of history steps.
        num_minibatch_rows: rows of an ordinary minibatch (``horizon * num_envs / num_minibatches``).
        seed: seeds the demo draws and the replay buffer.
    """

    def __init__(
        self, config: AMPConfig, motions: MotionLibrary, control_dt: float, num_minibatch_rows: int, seed: int = 0
    ) -> None:
        self.config = config
        self.motions = motions
        self.control_dt = float(control_dt)
        self.history = int(config.history)
        self.obs_dim = amp_obs_dim(self.history)
        self.batch_rows = min(config.disc_batch_size or num_minibatch_rows, num_minibatch_rows)
        self.device = motions.device
        self.demo_generator = rng.new_generator(seed, self.device)
        self.replay = ReplayBuffer(config.replay_size, self.obs_dim, config.replay_keep_prob, self.device, seed + 1)
        self.frames: Optional[Tensor] = None  # (N, history, 196) agent history, newest first
        self.obs: Optional[Tensor] = None  # (T, N, history * 196) this iteration's agent samples
        self.pending: Optional[Tensor] = None  # (K, history * 196) kept for the replay buffer, stored next iteration

    # ------------------------------------------------------------------ collection

    def begin(self, env: HumanoidTracking, horizon: int) -> None:
        """Before an iteration's first step: envs reset since the last step (``progress == 0``: a fresh start, a
        resampling, or the auto-reset of the last step) start their history on their reference motion; the samples the
        last iteration kept enter the replay buffer (after that iteration's update)."""
        if self.pending is not None:
            self.replay.insert(self.pending)
            self.pending = None
        n = env.num_envs
        with one_cpu_thread(env.device):
            fresh = env.progress == 0
            reference = self._reference_frames(env, torch.arange(n, device=env.device))
            self.frames = reference if self.frames is None else torch.where(fresh[:, None, None], reference,
                                                                            self.frames)
        self.obs = torch.zeros(horizon, n, self.obs_dim, device=env.device)

    def record(self, t: int, result: StepResult, env: HumanoidTracking) -> None:
        """Push the step's state features onto every env's history, keep the stacked sample of step ``t``, then
        restart the histories of the envs the step reset."""
        with one_cpu_thread(env.device):
            features = result.info[STEP_FEATURES_KEY]
            self.frames = torch.cat([features.unsqueeze(1), self.frames[:, :-1]], dim=1)
            self.obs[t] = self.frames.flatten(1)
            done_ids = result.info.get("done_env_ids")
            if done_ids is None:  # fixed shapes: every env's reference history, kept where the env was reset
                reference = self._reference_frames(env, torch.arange(env.num_envs, device=env.device))
                self.frames = torch.where(result.info["done"][:, None, None], reference, self.frames)
            elif done_ids.numel():  # the backend read the mask on the host already: the reset envs' rows only
                self.frames[done_ids] = self._reference_frames(env, done_ids)

    def _reference_frames(self, env: HumanoidTracking, env_ids: Tensor) -> Tensor:
        ids, times = env.motion_ids[env_ids], env.motion_times[env_ids]
        return demo_amp_obs(self.motions, ids, times, self.history, self.control_dt).view(
            -1, self.history, AMP_OBS_STEP_DIM
        )

    # ------------------------------------------------------------------ after collection

    @torch.no_grad()
    def mix_rewards(self, policy: DiscriminatorPolicy, task_rewards: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        """``task_reward_weight * task + disc_reward_weight * disc`` ``(T, N)``, and the means of both parts
        (``rewards/task``, ``rewards/disc``, unweighted)."""
        flat = self.obs.flatten(0, 1)
        disc = torch.cat([
            policy.disc_reward(flat[i : i + _REWARD_CHUNK].to(policy.device)).to(flat.device)
            for i in range(0, flat.shape[0], _REWARD_CHUNK)
        ]).view_as(task_rewards)
        cfg = self.config
        mixed = cfg.task_reward_weight * task_rewards + cfg.disc_reward_weight * disc
        means = torch.stack([task_rewards.mean(), disc.mean()]).tolist()  # one host read
        return mixed, {"rewards/task": means[0], "rewards/disc": means[1]}

    def store_replay(self) -> None:
        """Choose which of this iteration's agent samples the replay buffer keeps (each with ``replay_keep_prob``);
        they are stored when the next iteration begins, so this iteration's minibatches never replay them."""
        self.pending = self.replay.select(self.obs.flatten(0, 1))

    def minibatch(self, mb_inds: Tensor) -> Dict[str, Tensor]:
        """Discriminator inputs of a minibatch: the agent samples of its first ``batch_rows`` transitions (the
        indices are shuffled already), as many from the replay buffer and freshly drawn demos."""
        rows = self.batch_rows
        agent = self.obs.flatten(0, 1)[mb_inds[:rows].to(self.obs.device)]
        with one_cpu_thread(self.device):  # also faster at 2048 rows on 2 busy cores (254 vs 755 ms)
            demo = sample_demo_amp_obs(self.motions, rows, self.history, self.control_dt, self.demo_generator)
        return {"amp_obs": agent, "amp_obs_replay": self.replay.sample(rows), "amp_obs_demo": demo}

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> Dict[str, Any]:
        """Agent histories, demo RNG, replay buffer and the samples pending for it (CPU tensors and ints)."""
        return {
            "frames": None if self.frames is None else self.frames.cpu().clone(),
            "demo_rng": self.demo_generator.get_state(),
            "replay": self.replay.state_dict(),
            "pending": None if self.pending is None else self.pending.cpu().clone(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        frames = state["frames"]
        self.frames = None if frames is None else frames.to(self.device)
        self.demo_generator.set_state(state["demo_rng"])
        self.replay.load_state_dict(state["replay"])
        pending = state.get("pending")  # checkpoints from before the deferral stored at once: nothing pending
        self.pending = None if pending is None else pending.to(self.device)
