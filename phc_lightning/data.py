"""``PHCDataModule``: the data side of training — simulator, motions, tracking env and the rollout datasets.

The env lives here, never in the LightningModule: the module only sees minibatches (training) and finished
evaluation trajectories (validation).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning as L
from torch.utils.data import DataLoader

from phc_lightning.errors import ConfigError
from phc_lightning.evaluation import EvalDataset
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.formats import MotionFileError
from phc_lightning.motion.library import DEFAULT_MAX_DOF_VEL, DEFAULT_VELOCITY_SMOOTHING, MotionLibrary
from phc_lightning.rollout import RolloutDataset
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking

OBS_DIM = 934


class PHCDataModule(L.LightningDataModule):
    """Builds the envs and serves one PPO iteration per training epoch.

    Args:
        motion_file: motions to imitate (`.npz` native or PHC `.pkl`); default: the bundled synthetic motions.
        backend: physics backend name (``mujoco`` = MuJoCo on CPU).
        num_envs: parallel simulated humanoids.
        num_threads: physics threads (default: all cores).
        horizon: env steps per env per PPO iteration.
        update_epochs: passes over each iteration's batch.
        num_minibatches: minibatches per pass.
        gamma: discount factor.
        gae_lambda: GAE lambda.
        target_kl: stop an iteration's updates early once approx KL exceeds this (None: never).
        total_timesteps: env steps after which training stops.
        termination_distance: training episode ends when any body is farther than this from the reference (m).
        eval_failure_distance: evaluation failure when the mean distance of 20 bodies exceeds this (m).
        power_coef: weight of the power penalty -coef * sum|torque * joint velocity| (puffer-phc: 0.0005).
        velocity_smoothing: Gaussian sigma in frames over central-difference reference velocities, as PHC (2);
            0: raw forward differences.
        max_dof_vel: clamp of the reference hinge speeds in rad/s (Euler-rate blow-ups near 90 degree flexion);
            None: no clamp.
        seed: seeds the env (RSI times, motion draws) and the minibatch shuffling.
    """

    def __init__(
        self,
        motion_file: Optional[str] = None,
        backend: str = "mujoco",
        num_envs: int = 256,
        num_threads: Optional[int] = None,
        horizon: int = 32,
        update_epochs: int = 4,
        num_minibatches: int = 4,
        gamma: float = 0.98,
        gae_lambda: float = 0.2,
        target_kl: Optional[float] = None,
        total_timesteps: int = 500_000_000,
        termination_distance: float = 0.25,
        eval_failure_distance: float = 0.5,
        power_coef: float = 0.0005,
        velocity_smoothing: float = DEFAULT_VELOCITY_SMOOTHING,
        max_dof_vel: Optional[float] = DEFAULT_MAX_DOF_VEL,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("num_envs", num_envs), ("horizon", horizon), ("update_epochs", update_epochs),
                            ("num_minibatches", num_minibatches), ("total_timesteps", total_timesteps)):
            if value < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {value}")
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"data.gamma must be in (0, 1], got {gamma}")
        if not 0.0 <= gae_lambda <= 1.0:
            raise ConfigError(f"data.gae_lambda must be in [0, 1], got {gae_lambda}")
        if (horizon * num_envs) % num_minibatches:
            raise ConfigError(
                f"data.num_minibatches={num_minibatches} must divide horizon*num_envs={horizon * num_envs}"
            )
        self.save_hyperparameters()
        self.motion_file = motion_file or BUNDLED_MOTIONS
        self.obs_dim = OBS_DIM
        self.motions: Optional[MotionLibrary] = None
        self.env: Optional[HumanoidTracking] = None
        self.rollout: Optional[RolloutDataset] = None

    def setup(self, stage: str) -> None:
        """Load motions and start the simulator once (idempotent across fit/validate)."""
        if self.env is not None:
            return
        hp = self.hparams
        try:
            task = TaskConfig(
                termination_distance=hp.termination_distance,
                eval_failure_distance=hp.eval_failure_distance,
                power_coef=hp.power_coef,
            )
            self.motions = MotionLibrary(
                self.motion_file, device="cpu", velocity_smoothing=hp.velocity_smoothing, max_dof_vel=hp.max_dof_vel
            )
            sim = make_backend(hp.backend, hp.num_envs, device="cpu", num_threads=hp.num_threads)
        except MotionFileError:
            raise
        except ValueError as err:  # a task value or backend name the config got wrong
            raise ConfigError(f"data: {err}") from err
        self.env = HumanoidTracking(sim, self.motions, task, seed=hp.seed)
        self.rollout = RolloutDataset(
            self.env,
            get_module=lambda: self.trainer.lightning_module,
            horizon=hp.horizon,
            update_epochs=hp.update_epochs,
            num_minibatches=hp.num_minibatches,
            gamma=hp.gamma,
            gae_lambda=hp.gae_lambda,
            target_kl=hp.target_kl,
            total_timesteps=hp.total_timesteps,
            seed=hp.seed,
            stop_training=self._stop_training,
        )

    def _stop_training(self) -> None:
        self.trainer.should_stop = True

    def train_dataloader(self) -> DataLoader:
        """One pass = one PPO iteration; ``batch_size=None`` because the dataset yields whole minibatches."""
        return DataLoader(self.rollout, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """Evaluation: every motion once, full length, deterministic actions, in chunks of ``num_envs``."""
        dataset = EvalDataset(self.env, get_module=lambda: self.trainer.lightning_module, on_done=self._after_eval)
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
        """What exact resume needs from the data side: env episodes and physics, RNGs of draws and shuffling."""
        if self.env is None:
            return {}
        return {
            "env": self.env.state_dict(),
            "shuffle_rng": self.rollout.generator.get_state(),
            "resume_rollout": self.rollout.next_obs is not None,
            "motion_weights": self.motions.sampling_weights.cpu().clone(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (Lightning calls this on resume, after :meth:`setup`)."""
        if not state or self.env is None:
            return
        if self.trainer is not None and self.trainer.state.fn != "fit":
            return  # validation starts every motion from t=0 and needs none of the training episodes
        saved_motions = state["motion_weights"].numel()
        if saved_motions != self.motions.num_motions or state["env"]["obs"].shape[0] != self.env.num_envs:
            raise ConfigError(
                f"--ckpt_path: the checkpoint's run had {saved_motions} motions and "
                f"{state['env']['obs'].shape[0]} envs, this config has {self.motions.num_motions} motions and "
                f"{self.env.num_envs} envs; resume with the same data settings, or warm-start a new run with "
                "--model.init_from"
            )
        self.env.load_state_dict(state["env"])
        self.rollout.generator.set_state(state["shuffle_rng"])
        self.rollout.next_obs = self.env.obs if state["resume_rollout"] else None
        self.motions.set_sampling_weights(state["motion_weights"])
