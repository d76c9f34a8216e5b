"""``HumanoidTracking``: the PHC motion-tracking task on top of any :class:`~phc_lightning.sim.base.PhysicsBackend`.

One control step (30 Hz), all envs batched on ``device``:

1. PD targets ``(N, 69)`` → ``backend.step`` (a policy's actions become PD targets through its
   :class:`~phc_lightning.task.actions.ActionInterface`, which may add :attr:`HumanoidTracking.ref_next_dof_pos`);
2. the reference time advances by ``control_dt``; reward and failure compare the sim with the reference
   at that time;
3. ``terminated`` = tracking failure, ``truncated`` = motion over (or the backend flagged the env unstable);
4. the observation is taken against the *next* reference frame (``t + dt``); finished envs are reset
   (reference state init) and their observation replaced, the pre-reset one is kept in ``final_obs``.

Train mode starts episodes at a random time of each env's motion; eval mode starts at ``t = 0`` and plays the
motion to its end, failing on the 20-body mean distance rule. An env keeps its motion across resets until
:meth:`HumanoidTracking.assign_motions` gives it another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Optional

import torch

from phc_lightning.core import rng, skeleton
from phc_lightning.core.threads import one_cpu_thread
from phc_lightning.sim.base import PhysicsBackend, SimState
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.observations import compute_obs, compute_task_obs, observation_size
from phc_lightning.task.rewards import RewardManager, reward_inputs
from phc_lightning.task.start_sampling import AdaptiveStartSampler
from phc_lightning.task.terminations import eval_failure, motion_finished, train_failure

if TYPE_CHECKING:
    from phc_lightning.motion.library import MotionLibrary

Tensor = torch.Tensor


@dataclass
class StepResult:
    """What :meth:`HumanoidTracking.step` returns (N envs, K of which finished this step).

    Attributes:
        obs: ``(N, 934)`` observation to act on next, after the auto-reset of finished envs.
        reward: ``(N,)`` total reward of this step.
        terminated: ``(N,)`` bool, tracking failure (do not bootstrap).
        truncated: ``(N,)`` bool, motion completed or env reset for instability (bootstrap from ``final_obs``).
        final_obs: ``(N, 934)`` observation at the end of the step before the auto-reset (== ``obs`` where not done).
        info: ``rewards/<term>`` ``(N,)`` weighted term values; ``done`` ``(N,)`` bool, the envs that finished and
            were reset (``terminated | truncated``); ``episode_return`` / ``episode_length`` ``(N,)`` of the episode
            each env played up to this step (read them where ``done``); ``done_env_ids`` ``(K,)`` the finished envs'
            indices, only where the backend reads masks on the host anyway (CPU MuJoCo,
            :meth:`~phc_lightning.sim.base.PhysicsBackend.host_indices`); ``unstable`` ``(N,)`` bool; ``body_pos`` /
            ``ref_body_pos`` ``(N, 24, 3)`` sim and reference positions at this step, before the auto-reset;
            ``state_features`` ``(N, F)`` when the env was built with a ``state_features`` function (of the same
            pre-reset state).
    """

    obs: Tensor
    reward: Tensor
    terminated: Tensor
    truncated: Tensor
    final_obs: Tensor
    info: Dict[str, Tensor] = field(default_factory=dict)


def _canonical(device: object) -> torch.device:
    """``device`` with its index filled in, so that ``"cuda"`` and ``"cuda:0"`` compare equal."""
    return torch.empty(0, device=torch.device(device)).device


def _rows(state: SimState, env_ids: Tensor) -> SimState:
    """The rows ``env_ids`` of every field of ``state``."""
    return SimState(**{name: getattr(state, name)[env_ids] for name in SimState.__dataclass_fields__})


class HumanoidTracking:
    """N humanoids tracking reference motions; see the module docstring for the step order.

    Attributes:
        num_envs: number of envs N (the backend's).
        obs_dim: 934, plus 576 per extra future reference frame (``config.future_steps``).
        num_dofs: 69, the size of the PD targets :meth:`step` takes.
        device: where every tensor lives (the backend's device).
        motion_ids: ``(N,)`` long, the motion each env tracks.
        motion_times: ``(N,)`` float, the reference time the sim is matched against (seconds).
        progress: ``(N,)`` long, control steps since the env's last reset.
        eval_mode: whether episodes start at t = 0 and fail by the evaluation rule.
        obs: ``(N, 934)`` the last observation returned by :meth:`reset` / :meth:`step`.
        ref_next_dof_pos: ``(N, 69)`` hinge angles of the reference frame that ``obs`` targets (residual actions
            add their offsets to these).
    """

    num_dofs: int = skeleton.NUM_DOFS

    def __init__(
        self,
        backend: PhysicsBackend,
        motions: MotionLibrary,
        config: TaskConfig = TaskConfig(),  # noqa: B008 (frozen dataclass: a shared default is safe)
        seed: int = 0,
        state_features: Optional[Callable[[SimState], Tensor]] = None,
    ) -> None:
        """Bind a backend and a motion library; each env draws a motion. Call :meth:`reset` before stepping.

        Args:
            backend: physics of N humanoids; its device is the task's device.
            motions: reference motions, on the same device as the backend.
            config: reward weights and termination distances.
            seed: seed of the generator behind motion draws and random start times.
            state_features: features ``(N, F)`` of the post-step state that :meth:`step` returns in
                ``info["state_features"]`` (AMP observations); computed before the auto-reset overwrites the state.
        """
        self.backend = backend
        self.motions = motions
        self.config = config
        self.num_envs = int(backend.num_envs)
        self.device = _canonical(backend.device)
        if _canonical(motions.device) != self.device:
            raise ValueError(f"HumanoidTracking: motion library on {motions.device} but backend on {self.device}")
        self.control_dt = float(backend.control_dt)
        self.obs_dim = observation_size(len(config.future_steps))
        # offsets of the extra reference frames beyond the next one, seconds
        self._lookahead = [step * self.control_dt for step in config.future_steps[1:]]
        self.eval_mode = False
        self.generator = rng.new_generator(seed, self.device)
        self.state_features = state_features
        self.reward_manager = RewardManager(config.reward_terms())
        self.start_sampler: Optional[AdaptiveStartSampler] = None
        if config.adaptive_start:
            self.start_sampler = AdaptiveStartSampler(
                motions.lengths.to(self.device), config.adaptive_bin_seconds, config.adaptive_uniform_ratio,
                config.adaptive_alpha, int(config.adaptive_kernel_size), config.adaptive_kernel_decay,
            )

        n = self.num_envs
        self.motion_ids = motions.sample_motions(n, generator=self.generator).to(self.device, torch.long)
        motions.make_resident(self.motion_ids)  # a streaming library builds these motions' reference buffers
        self.motion_start_times = torch.zeros(n, device=self.device)
        self.motion_times = torch.zeros(n, device=self.device)
        self.progress = torch.zeros(n, dtype=torch.long, device=self.device)
        self.episode_return = torch.zeros(n, device=self.device)
        self.episode_length = torch.zeros(n, dtype=torch.long, device=self.device)
        self.obs = torch.zeros(n, self.obs_dim, device=self.device)
        # hinge angles of the reference frame the current observation targets (for residual actions)
        self.ref_next_dof_pos = torch.zeros(n, self.num_dofs, device=self.device)

    # ------------------------------------------------------------------ public API

    def reset(self, env_ids: Optional[Tensor] = None) -> Tensor:
        """Reference-state-init envs ``env_ids`` (all if None) and return the observation of *all* envs ``(N, 934)``.

        Train mode starts each env at a random time of its own motion; eval mode at t = 0.
        """
        env_ids = self._as_env_ids(env_ids)
        self._reset_envs(env_ids)
        self.obs = self._observe(self.backend.state())
        return self.obs

    def step(self, pd_targets: Tensor) -> StepResult:
        """Advance every env one control step towards hinge targets ``pd_targets (N, 69)`` (radians)."""
        # The env's tensors are small: splitting each op over CPU threads costs more than it saves, and idle
        # OpenMP workers spinning next to MuJoCo's own threads slow the physics down. One thread here.
        with one_cpu_thread(self.device):
            return self._step(pd_targets)

    def _step(self, pd_targets: Tensor) -> StepResult:
        if tuple(pd_targets.shape) != (self.num_envs, self.num_dofs):
            raise ValueError(
                f"HumanoidTracking.step: PD targets must have shape ({self.num_envs}, {self.num_dofs}), "
                f"got {tuple(pd_targets.shape)}"
            )
        self.backend.step(pd_targets.to(self.device, torch.float32))
        self.progress += 1
        # Time from the step count, not summed increments, so it never drifts over long motions.
        elapsed = self.progress.to(self.motion_times.dtype)
        torch.add(self.motion_start_times, elapsed, alpha=self.control_dt, out=self.motion_times)

        sim = self.backend.state()
        ref = self.motions.get_state(self.motion_ids, self.motion_times)
        inputs = reward_inputs(sim, ref, self.backend.actuator_forces(), self.progress,
                               anchored=self.config.anchor_relative)
        reward, terms = self.reward_manager.compute(inputs)

        terminated = self._failed(sim.body_pos, ref.body_pos)
        truncated = motion_finished(self.motion_times, self.motions.lengths[self.motion_ids]) & ~terminated
        # An env the backend had to rescue carries meaningless numbers: end it as a time limit, reward 0.
        unstable = self.backend.unstable().to(self.device, torch.bool)
        terminated = terminated & ~unstable
        truncated = truncated | unstable
        if self.start_sampler is not None and not self.eval_mode:
            self.start_sampler.record(self.motion_ids, self.motion_times, terminated)
        reward = torch.where(unstable, torch.zeros_like(reward), reward)
        terms = {name: torch.where(unstable, torch.zeros_like(v), v) for name, v in terms.items()}

        final_obs = self._observe(sim)
        final_obs = torch.where(unstable.unsqueeze(-1), torch.nan_to_num(final_obs, 0.0, 0.0, 0.0), final_obs)
        info: Dict[str, Tensor] = {f"rewards/{name}": value for name, value in terms.items()}
        info["unstable"] = unstable
        # Clone: a backend may hand out views of buffers that the auto-reset below overwrites.
        info["body_pos"] = sim.body_pos.clone()
        info["ref_body_pos"] = ref.body_pos
        if self.state_features is not None:
            info["state_features"] = self.state_features(sim)

        self.episode_return += reward
        self.episode_length += 1
        done = terminated | truncated
        info["done"] = done
        info["episode_return"] = self.episode_return.clone()
        info["episode_length"] = self.episode_length.clone()

        done_env_ids = self.backend.host_indices(done)
        if done_env_ids is None:  # fixed shapes: nothing here waits for the device
            self._reset_where(done)
            obs = torch.where(done.unsqueeze(-1), self._observe(self.backend.state()), final_obs)
        else:  # the backend read the mask on the host: work on the finished envs' rows only
            info["done_env_ids"] = done_env_ids
            obs = final_obs
            if done_env_ids.numel() > 0:
                self._reset_envs(done_env_ids)
                obs = final_obs.clone()
                obs[done_env_ids] = self._observe(self.backend.state(), done_env_ids)
        self.obs = obs
        return StepResult(obs, reward, terminated, truncated, final_obs, info)

    def set_eval(self, enabled: bool) -> None:
        """Switch between train and eval rules.

        The failure rule changes at once; start times change at the next reset, so call :meth:`reset` or
        :meth:`assign_motions` afterwards to start every episode as the new mode expects.
        """
        self.eval_mode = bool(enabled)

    def assign_motions(self, motion_ids: Tensor, env_ids: Optional[Tensor] = None) -> Tensor:
        """Give envs ``env_ids`` (all if None) the motions ``motion_ids``, reset them, return all obs ``(N, 934)``.

        A streaming motion library then holds the reference buffers of exactly the envs' motions (it rebuilds them
        here when those changed)."""
        env_ids = self._as_env_ids(env_ids)
        motion_ids = torch.as_tensor(motion_ids, device=self.device).long().reshape(-1)
        if motion_ids.shape != env_ids.shape:
            raise ValueError(
                f"HumanoidTracking.assign_motions: {motion_ids.numel()} motion ids for {env_ids.numel()} envs"
            )
        if motion_ids.numel() and (motion_ids.min() < 0 or motion_ids.max() >= self.motions.num_motions):
            raise ValueError(
                f"HumanoidTracking.assign_motions: motion ids must be in [0, {self.motions.num_motions}), "
                f"got [{int(motion_ids.min())}, {int(motion_ids.max())}]"
            )
        self.motion_ids[env_ids] = motion_ids
        self.motions.make_resident(self.motion_ids)
        return self.reset(env_ids)

    def rng_state(self) -> Tensor:
        """State of the generator behind motion draws and random start times (a CPU byte tensor)."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        """Restore a state from :meth:`rng_state` (e.g. when resuming from a checkpoint)."""
        self.generator.set_state(state.cpu())

    # Per-env tensors that, with the physics state, fully determine what the env does next.
    _STATE_FIELDS = ("motion_ids", "motion_start_times", "motion_times", "progress", "episode_return",
                     "episode_length", "obs", "ref_next_dof_pos")

    def state_dict(self) -> Dict[str, object]:
        """Everything needed to continue these episodes exactly (tensors and primitives only)."""
        state: Dict[str, object] = {name: getattr(self, name).detach().cpu().clone() for name in self._STATE_FIELDS}
        state["eval_mode"] = self.eval_mode
        state["rng"] = self.rng_state()
        state["physics"] = self.backend.get_physics_state()
        if self.start_sampler is not None:
            state["start_bin_failures"] = self.start_sampler.failures.detach().cpu().clone()
        return state

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore :meth:`state_dict` output from an env with the same number of envs."""
        for name in self._STATE_FIELDS:
            value = state[name]
            current = getattr(self, name)
            if value.shape != current.shape:
                raise ValueError(f"HumanoidTracking.load_state_dict: {name} has shape {tuple(value.shape)}, "
                                 f"this env has {tuple(current.shape)} (different num_envs?)")
            current.copy_(value.to(current.device))
        self.motions.make_resident(self.motion_ids)  # the saved episodes' motions: the same buffers as when saved
        self.eval_mode = bool(state["eval_mode"])
        self.set_rng_state(state["rng"])
        self.backend.set_physics_state(state["physics"])
        saved_failures = state.get("start_bin_failures")
        if self.start_sampler is not None and saved_failures is not None:
            if saved_failures.shape != self.start_sampler.failures.shape:
                raise ValueError(f"HumanoidTracking.load_state_dict: start_bin_failures has shape "
                                 f"{tuple(saved_failures.shape)}, this env's motions have "
                                 f"{tuple(self.start_sampler.failures.shape)} (different motions?)")
            self.start_sampler.failures.copy_(saved_failures.to(self.device))

    def check_physics(self) -> None:
        """Raise an error the backend noticed on the device but did not read back while stepping (MuJoCo Warp:
        overflowed contact buffers); one host read, called once per rollout."""
        self.backend.check_errors()

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    # ------------------------------------------------------------------ internals

    def _all_env_ids(self) -> Tensor:
        return torch.arange(self.num_envs, device=self.device)

    def _as_env_ids(self, env_ids: Optional[Tensor]) -> Tensor:
        if env_ids is None:
            return self._all_env_ids()
        env_ids = torch.as_tensor(env_ids, device=self.device).long().reshape(-1)
        if env_ids.numel() and (env_ids.min() < 0 or env_ids.max() >= self.num_envs):
            raise ValueError(f"HumanoidTracking: env ids must be in [0, {self.num_envs}), got {env_ids.tolist()}")
        return env_ids

    def _start_times(self, ids: Tensor) -> Tensor:
        """Start times ``(K,)`` of new episodes on motions ``ids (K,)``: random in train, 0 in eval."""
        if self.eval_mode:
            return torch.zeros(ids.shape, device=self.device)
        if self.start_sampler is not None:
            times = self.start_sampler.sample(ids, generator=self.generator)
        else:
            times = self.motions.sample_times(ids, generator=self.generator).to(self.device, torch.float32)
        # The frame-0 share applies with either sampler; the draw comes after the times (and none is made at 0), so
        # PHC's setting and the default sampler keep their random stream.
        if self.config.start_init_prob > 0:
            at_start = rng.rand(ids.shape, self.generator, self.device, "start_init_prob")
            times = torch.where(at_start < self.config.start_init_prob, torch.zeros_like(times), times)
        return times

    def _reset_where(self, done: Tensor) -> None:
        """:meth:`_reset_envs` of the envs where ``done (N,)`` is set, in fixed shapes (no host read, whatever the
        number of finished envs): start times are drawn for every env and kept where ``done``, so the env's
        generator advances by draws for all N envs per step, not for the finished ones only (as on the CPU)."""
        times = self._start_times(self.motion_ids)
        self.motion_start_times.copy_(torch.where(done, times, self.motion_start_times))
        self.motion_times.copy_(torch.where(done, times, self.motion_times))
        self.progress.masked_fill_(done, 0)
        self.episode_return.masked_fill_(done, 0.0)
        self.episode_length.masked_fill_(done, 0)
        self.backend.set_state_where(done, self.motions.get_state(self.motion_ids, times))

    def _reset_envs(self, env_ids: Tensor) -> None:
        """Put envs on their reference at the start time (random in train, 0 in eval); clear episode counters."""
        if env_ids.numel() == 0:
            return
        ids = self.motion_ids[env_ids]
        times = self._start_times(ids)
        self.motion_start_times[env_ids] = times
        self.motion_times[env_ids] = times
        self.progress[env_ids] = 0
        self.episode_return[env_ids] = 0.0
        self.episode_length[env_ids] = 0
        self.backend.set_state_from(env_ids, self.motions.get_state(ids, times))

    def _observe(self, sim: SimState, env_ids: Optional[Tensor] = None) -> Tensor:
        """Observation ``(K, obs_dim)`` of envs ``env_ids`` (all if None) against the next reference frame (t + dt),
        then the task features of each further frame of ``config.future_steps``."""
        ids, times = self.motion_ids, self.motion_times
        if env_ids is not None:
            ids, times, sim = ids[env_ids], times[env_ids], _rows(sim, env_ids)
        ref_next = self.motions.get_state(ids, times + self.control_dt)
        if env_ids is None:
            self.ref_next_dof_pos = ref_next.dof_pos
        else:
            self.ref_next_dof_pos[env_ids] = ref_next.dof_pos
        obs = compute_obs(sim, ref_next)
        if not self._lookahead:
            return obs
        ahead = [compute_task_obs(sim, self.motions.get_state(ids, times + offset)) for offset in self._lookahead]
        return torch.cat([obs, *ahead], dim=-1)

    def _failed(self, body_pos: Tensor, ref_body_pos: Tensor) -> Tensor:
        """``(N,)`` bool tracking failure under the current mode's rule, after the grace steps."""
        cfg = self.config
        if self.eval_mode:
            failed = eval_failure(body_pos, ref_body_pos, skeleton.EVAL_BODIES, cfg.eval_failure_distance)
        elif cfg.enable_early_termination and cfg.termination_body_mean:
            failed = eval_failure(body_pos, ref_body_pos, skeleton.EVAL_BODIES, cfg.termination_distance)
        elif cfg.enable_early_termination:
            failed = train_failure(body_pos, ref_body_pos, cfg.termination_distance)
        else:
            failed = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return failed & (self.progress > cfg.termination_grace_steps)
