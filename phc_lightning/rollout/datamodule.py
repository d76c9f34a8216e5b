"""``PHCDataModule``: the data side of training — simulator, motions, tracking env and the rollout datasets.

The env lives here, never in the LightningModule: the module only sees minibatches (training) and finished
evaluation trajectories (validation).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Optional, Tuple

import lightning as L
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)
from torch.utils.data import DataLoader

from phc_lightning.amp.collection import AMPCollector
from phc_lightning.amp.config import as_amp_config
from phc_lightning.amp.observations import amp_step_features
from phc_lightning.core.errors import ConfigError
from phc_lightning.core.seeding import derive_seed
from phc_lightning.evaluation.playback import EvalDataset
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import DEFAULT_MAX_DOF_VEL, DEFAULT_VELOCITY_SMOOTHING, MotionLibrary
from phc_lightning.motion.raw_motion import MotionFileError
from phc_lightning.rl import distributed
from phc_lightning.rollout.dataset import RolloutDataset
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking
from phc_lightning.task.observations import observation_size

UnitIntervalLeftOpen = restricted_number_type("UnitIntervalLeftOpen", float, [(">", 0), ("<=", 1)])


class PHCDataModule(L.LightningDataModule):
    """Builds the envs and serves one PPO iteration per training epoch.

    Args:
        motion_file: motions to imitate (`.npz` native or PHC `.pkl`); default: the bundled synthetic motions.
        backend: physics backend name: ``mujoco`` (MuJoCo on CPU) or ``mujoco_warp`` (MuJoCo Warp, one world per
            env; needs the ``[warp]`` extra).
        device: where the physics, the motion library, the task tensors, the rollout buffer and its minibatches live
            (``cpu``, ``cuda``, ``cuda:1``); null: the backend's own default (CPU for ``mujoco``, CUDA when present
            for ``mujoco_warp``). On the trainer's GPU, batches never leave it.
        num_envs: parallel simulated humanoids of each process (with ``--trainer.devices N --trainer.num_nodes M``
            every one of the N*M processes runs ``num_envs`` envs of its own, as rsl_rl does).
        num_threads: physics threads (default: all cores).
        horizon: env steps per env per PPO iteration.
        update_epochs: passes over each iteration's batch.
        num_minibatches: minibatches per pass.
        gamma: discount factor.
        gae_lambda: GAE lambda.
        total_timesteps: env steps (of all processes together) after which training stops.
        task: reward weights and sharpness, termination and evaluation-failure distances, power penalty
            (``--data.task.w_pos 0.6``; a ``task:`` block in YAML).
        velocity_smoothing: Gaussian sigma in frames over central-difference reference velocities, as PHC (2);
            0: raw forward differences.
        max_dof_vel: clamp of the reference hinge speeds in rad/s (Euler-rate blow-ups near 90 degree flexion);
            None: no clamp.
        seed: seeds the env (RSI times, motion draws), the action noise and the minibatch shuffling; null: derived
            from ``seed_everything``.
        bptt_horizon: a recurrent policy (``model.recurrent``) trains on whole segments of this many steps, shuffled
            as segments (must divide ``horizon``; ``num_minibatches`` must divide ``horizon / bptt_horizon *
            num_envs``); null: the whole horizon. Unused without ``model.recurrent``.
        resident_motions: the most motions whose full per-frame reference buffers (1.8 kB a frame) are held at
            once, at least ``num_envs``; null: ``num_envs``. A motion file with at most this many motions is all
            resident; a larger one (AMASS) streams: the motions stay in host memory as loaded (0.4 kB a frame) and
            each process builds the buffers of the motions its envs track (at most ``num_envs``), again whenever
            they are redrawn (``MotionResampling``, resume, evaluation chunks). Sampling weights and failure
            statistics cover every motion either way.
        amp: adversarial motion prior settings, :class:`~phc_lightning.amp.config.AMPConfig` fields (null: off); the
            CLI copies ``model.amp`` here (set that one).
    """

    def __init__(
        self,
        motion_file: Optional[str] = None,
        backend: str = "mujoco",
        device: Optional[str] = None,
        num_envs: PositiveInt = 256,
        num_threads: Optional[PositiveInt] = None,
        horizon: PositiveInt = 32,
        update_epochs: PositiveInt = 4,
        num_minibatches: PositiveInt = 4,
        gamma: UnitIntervalLeftOpen = 0.98,
        gae_lambda: ClosedUnitInterval = 0.2,
        total_timesteps: PositiveInt = 500_000_000,
        task: TaskConfig = TaskConfig(),  # noqa: B008 - frozen, so one shared default is safe
        velocity_smoothing: NonNegativeFloat = DEFAULT_VELOCITY_SMOOTHING,
        max_dof_vel: Optional[PositiveFloat] = DEFAULT_MAX_DOF_VEL,
        seed: Optional[int] = None,
        bptt_horizon: Optional[PositiveInt] = None,
        resident_motions: Optional[PositiveInt] = None,
        amp: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        if resident_motions is not None and resident_motions < num_envs:
            raise ConfigError(f"data.resident_motions={resident_motions} must be at least data.num_envs={num_envs} "
                              "(every env's motion is resident)")
        if (horizon * num_envs) % num_minibatches:
            raise ConfigError(
                f"data.num_minibatches={num_minibatches} must divide horizon*num_envs={horizon * num_envs}"
            )
        if bptt_horizon is not None and horizon % bptt_horizon:
            raise ConfigError(f"data.bptt_horizon={bptt_horizon} must divide data.horizon={horizon}")
        # Checkpoints keep plain values only (they load with weights_only=True): the task as a dict.
        self.save_hyperparameters(ignore=["task", "amp"])
        self.hparams["task"] = asdict(task)
        self.task = task
        self.amp = as_amp_config(amp)
        self.hparams["amp"] = self.amp.as_dict()
        self.motion_file = motion_file or BUNDLED_MOTIONS
        self.obs_dim = observation_size(len(task.future_steps))
        self.motions: Optional[MotionLibrary] = None
        self.env: Optional[HumanoidTracking] = None
        self.rollout: Optional[RolloutDataset] = None

    def setup(self, stage: str) -> None:
        """Load motions and start the simulator once (idempotent across fit/validate)."""
        if self.env is not None:
            return
        hp = self.hparams
        try:
            # the physics first: its device (the backend's default when none is given) is everyone's device
            sim = make_backend(hp.backend, hp.num_envs, device=hp.device, num_threads=hp.num_threads)
        except ValueError as err:  # a backend name or device the config got wrong
            raise ConfigError(f"data: {err}") from err
        try:
            # Validation plays the motions chunk by chunk (EvalDataset), so it holds them as loaded and builds
            # per-frame buffers for one chunk at a time; training holds those of the envs' motions when the set is
            # larger than resident_motions (a streaming library): AMASS-sized sets fit in memory.
            self.motions = MotionLibrary(
                self.motion_file, device=sim.device, velocity_smoothing=hp.velocity_smoothing,
                max_dof_vel=hp.max_dof_vel, index_only=stage == "validate",
                resident_motions=hp.resident_motions or hp.num_envs,
            )
            env_motions = self.motions
            if self.motions.index_only:  # the env needs motions to start with; evaluation brings its own chunks
                env_motions = self.motions.subset([0])
        except MotionFileError:
            sim.close()
            raise
        except ValueError as err:
            sim.close()
            raise ConfigError(f"data: {err}") from err
        rank, world = self._rank_and_world()
        self.env = HumanoidTracking(sim, env_motions, self.task, seed=derive_seed(hp.seed, "env", rank),
                                    state_features=amp_step_features if self.amp.enabled else None)
        amp = None
        if self.amp.enabled:
            minibatch_rows = hp.horizon * hp.num_envs // hp.num_minibatches
            amp = AMPCollector(self.amp, env_motions, self.env.control_dt, minibatch_rows,
                               seed=derive_seed(hp.seed, "amp", rank))
        self.rollout = RolloutDataset(
            self.env,
            get_policy=lambda: self.trainer.lightning_module,
            horizon=hp.horizon,
            update_epochs=hp.update_epochs,
            num_minibatches=hp.num_minibatches,
            gamma=hp.gamma,
            gae_lambda=hp.gae_lambda,
            total_timesteps=hp.total_timesteps,
            seed=derive_seed(hp.seed, "rollout", rank),
            world_size=world,
            bptt_horizon=hp.bptt_horizon,
            amp=amp,
        )

    def _rank_and_world(self) -> Tuple[int, int]:
        """This process's global rank and the number of processes (``0, 1`` without a trainer)."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        """One pass = one PPO iteration; ``batch_size=None`` because the dataset yields whole minibatches."""
        return DataLoader(self.rollout, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """Evaluation: every motion once, full length, deterministic actions, in chunks of ``num_envs``; with
        several processes each plays its share of the motions (every motion once overall)."""
        rank, world = self._rank_and_world()
        dataset = EvalDataset(self.env, get_module=lambda: self.trainer.lightning_module, on_done=self._after_eval,
                              rank=rank, world_size=world, motions=self.motions)
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def _after_eval(self) -> None:
        # The env was restored to its pre-evaluation episodes; training continues from their observations.
        if self.rollout is not None and self.rollout.next_obs is not None:
            self.rollout.next_obs = self.env.obs

    def teardown(self, stage: str) -> None:
        """Close the simulator (threads, native memory)."""
        if self.env is not None and stage in ("fit", "validate"):
            self.env.close()
            self.env = None

    def state_dict(self) -> Dict[str, Any]:
        """What exact resume needs from the data side: env episodes and physics, the rollout's RNGs and counters,
        the motion sampling weights. Lightning stores it in every checkpoint, whichever callback writes it.

        With several processes every rank's state goes to rank 0, which writes the checkpoint (Lightning calls this
        on every rank, in every ``trainer.save_checkpoint``): ``{"world_size": W, "ranks": [state of rank 0, ...]}``
        there, so a resumed W-process run continues exactly; the other ranks return ``{}`` (their checkpoint dict is
        never written), so they never hold another rank's state (an AMP replay buffer is ~0.8 GB a rank).
        """
        if self.env is None:
            return {}
        state = {
            "env": self.env.state_dict(),
            "rollout": self.rollout.state_dict(),
            "motion_weights": self.motions.sampling_weights.cpu().clone(),
        }
        world = self._rank_and_world()[1]
        if world == 1:
            return state
        ranks = distributed.gather_to_first(distributed.to_cpu(state))
        return {} if ranks is None else {"world_size": world, "ranks": ranks}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (Lightning calls this on resume, after :meth:`setup`)."""
        if not state or self.env is None:
            return
        if self.trainer is not None and self.trainer.state.fn != "fit":
            return  # validation starts every motion from t=0 and needs none of the training episodes
        rank, world = self._rank_and_world()
        saved_world = int(state.get("world_size", 1))
        if saved_world != world:
            raise ConfigError(
                f"--ckpt_path: the checkpoint's run trained with {saved_world} process(es), this one has {world} "
                "(trainer.devices x trainer.num_nodes); resume with the same, or warm-start a new run with "
                "--model.init_from"
            )
        if "ranks" in state:
            state = state["ranks"][rank]
        saved_motions = state["motion_weights"].numel()
        if saved_motions != self.motions.num_motions or state["env"]["obs"].shape[0] != self.env.num_envs:
            raise ConfigError(
                f"--ckpt_path: the checkpoint's run had {saved_motions} motions and "
                f"{state['env']['obs'].shape[0]} envs, this config has {self.motions.num_motions} motions and "
                f"{self.env.num_envs} envs; resume with the same data settings, or warm-start a new run with "
                "--model.init_from"
            )
        self.env.load_state_dict(state["env"])
        self.rollout.load_state_dict(state["rollout"])
        self.motions.set_sampling_weights(state["motion_weights"])
