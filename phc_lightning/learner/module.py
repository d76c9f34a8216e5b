"""``PHCModule``: the PHC actor-critic trained with PPO under Lightning manual optimization.

The module owns the networks, the action interface (what an action means as PD targets), the observation and value
normalizers, the env-step counter and the L2-to-init anchor; it knows nothing about environments, GAE or files. The
rollout side (:mod:`phc_lightning.rollout.dataset`) calls :meth:`act`, :meth:`pd_targets` and :meth:`get_value` while
collecting, :meth:`update_normalizers` after the update, and feeds flat minibatches to :meth:`training_step`::

    batch = {"obs": [B, D], "actions": [B, A], "logprobs": [B], "values": [B], "advantages": [B], "returns": [B]}

A recurrent policy (``recurrent``) gets whole segments instead, time-major, with each segment's start state and
episode starts (:mod:`phc_lightning.rl.segments`); its memory is carried by the caller through :meth:`act_step`.
``A`` is the number of controlled hinges (57 with PHC's frozen hands and toes): frozen hinges are not part of the
action distribution, so they add nothing to log-probs, entropy or the bound loss. One Lightning epoch is one PPO
iteration; every minibatch is one optimizer step. Loss definitions live in :mod:`phc_lightning.rl.ppo`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import lightning as L
import torch
from jsonargparse.typing import PositiveFloat, PositiveInt

from phc_lightning.amp.config import AMPConfig, as_amp_config
from phc_lightning.amp.learner import AMPLearner
from phc_lightning.core import skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.evaluation_hooks import TrackingEvaluation
from phc_lightning.learner.hook_check import check_hooks_kept
from phc_lightning.learner.iteration_hooks import IterationHooks
from phc_lightning.learner.l2_anchor import L2Anchor, fit_checkpoint_to_anchor
from phc_lightning.learner.resume import WARM_STARTED_FROM, settle_checkpoint
from phc_lightning.learner.warm_start import load_policy_weights
from phc_lightning.rl import distributed, ppo
from phc_lightning.rl.networks import sample_actions
from phc_lightning.rl.normalization import RunningNorm
from phc_lightning.rl.recurrent import STARTS_KEY, STATE_KEY, check_state, critic_modules, make_actor_critic
from phc_lightning.task.actions import ActionInterface
from phc_lightning.task.mirror import mirror_for_policy
from phc_lightning.task.observations import OBS_DIM

Tensor = torch.Tensor

BATCH_KEYS = ("obs", "actions", "logprobs", "values", "advantages", "returns")
"""Keys every ``training_step`` batch must hold."""

LOSS_KEYS = ("policy", "value", "entropy", "bound", "l2_init", "approx_kl", "old_approx_kl", "clipfrac",
             "explained_variance")
"""Entries of :meth:`PHCModule.compute_losses` that are logged as ``losses/<key>`` (with ``grad_norm``); ``l2_init``
only where ``l2_init_coef`` is non-zero."""

DEFAULT_HIDDEN = (2048, 1536, 1024, 1024, 512, 512)
"""puffer-phc actor and critic hidden sizes (GPU scale; CPU configs pass smaller ones)."""


class PHCModule(AMPLearner, IterationHooks, TrackingEvaluation, L.LightningModule):
    """Actor-critic + PPO losses for humanoid motion tracking (puffer-phc defaults, DESIGN section 4)."""

    def __init__(
        self,
        obs_dim: PositiveInt = OBS_DIM,
        residual_actions: bool = False,
        action_scale: float = math.pi,
        dof_action_scale: Optional[Dict[str, float]] = None,
        frozen_bodies: Sequence[str] = skeleton.FROZEN_BODIES,
        actor_hidden: Sequence[int] = DEFAULT_HIDDEN,
        critic_hidden: Sequence[int] = DEFAULT_HIDDEN,
        layer_norm: bool = True,
        init_log_std: float = -2.9,
        learnable_log_std: bool = False,
        learning_rate: PositiveFloat = 1e-4,
        critic_learning_rate: Optional[PositiveFloat] = None,
        adam_eps: PositiveFloat = 1e-5,
        clip_coef: PositiveFloat = 0.01,
        target_kl: Optional[PositiveFloat] = None,
        critic_full_update: bool = False,
        value_clip: Optional[PositiveFloat] = 0.2,
        vf_coef: float = 1.2,
        ent_coef: float = 0.0,
        bound_coef: float = 10.0,
        soft_bound: float = 0.9,
        l2_init_coef: float = 0.0,
        max_grad_norm: float = 10.0,
        norm_adv: bool = True,
        normalize_value: bool = False,
        obs_clip: PositiveFloat = 10.0,
        init_from: Optional[str] = None,
        recurrent: Optional[Literal["actor", "critic", "both"]] = None,
        lstm_hidden: PositiveInt = 512,
        mlp_dtype: Literal["float32", "bfloat16"] = "float32",
        mirror_augment: bool = False,
        amp: AMPConfig = AMPConfig(),  # noqa: B008 - frozen, so one shared default is safe
    ) -> None:
        """Build networks and normalizer.

        Args:
            obs_dim: observation size (the tracking task's, 934; the CLI links it from the data side).
            residual_actions: PD target = next reference frame's hinge angles + scaled action (PHC: false, the
                scaled action alone, so a zero action is the T-pose).
            action_scale: radians per unit action of every controlled hinge (PHC: pi).
            dof_action_scale: per-DoF exceptions by DoF name, e.g. ``{"L_Knee_y": 5.0}``; null means PHC's
                (knee flexion 5), ``{}`` none.
            frozen_bodies: bodies whose hinges are held at 0 and left out of the action (PHC: toes and hands).
            actor_hidden: actor MLP hidden sizes.
            critic_hidden: critic MLP hidden sizes.
            layer_norm: LayerNorm before the last hidden activation of both MLPs.
            init_log_std: log standard deviation of the Gaussian policy (initial value if learnable).
            learnable_log_std: train the log standard deviation instead of keeping it fixed (PHC: fixed).
            learning_rate: Adam learning rate of the actor (annealing or KL adaptation is ``LRAnnealing``'s job).
            critic_learning_rate: Adam learning rate of the critic; null: the same as ``learning_rate``. Schedules
                scale both by the same factor.
            adam_eps: Adam epsilon.
            clip_coef: PPO ratio clip epsilon.
            target_kl: skip the rest of an iteration's optimizer steps once a minibatch's approx KL exceeds this
                (null: never); also the KL that ``LRAnnealing(schedule="adaptive_kl")`` steers to, unless given its own.
            critic_full_update: ``target_kl`` stops the actor only: the minibatches after the stop still train the
                critic on the value loss alone (PHC and rsl_rl train the critic for every epoch; false: the stop
                ends the critic's steps too, after two or three here). Several processes need
                ``--trainer.strategy ddp_find_unused_parameters_true`` (the actor gets no gradient in those steps).
            value_clip: value-prediction clip around the rollout values (in normalized units when
                ``normalize_value``); null for unclipped 0.5 * MSE.
            vf_coef: weight of the value loss.
            ent_coef: weight of the entropy bonus (subtracted from the loss).
            bound_coef: weight of the penalty on action means beyond +-soft_bound.
            soft_bound: bound of that penalty.
            l2_init_coef: weight of the squared distance of the policy weights to their initial (or ``init_from``)
                values, logged as ``losses/l2_init``; 0: the term is off (no anchor kept, nothing computed or
                logged).
            max_grad_norm: global gradient-norm clip; <= 0 disables clipping.
            norm_adv: normalize advantages per minibatch.
            normalize_value: the critic predicts returns normalized by running return statistics (PHC), so the
                value loss and ``value_clip`` mean the same at every return scale.
            obs_clip: normalized observations are clipped to +-obs_clip.
            init_from: warm start: copy policy, critic and both normalizers from this checkpoint (same network
                sizes and ``normalize_value``); the L2-to-init anchor is then those weights. Optimizer and counters
                start fresh. Read once: checkpoints record it as ``warm_started_from``, which nothing reads again.
            recurrent: an LSTM layer in front of the ``actor``, the ``critic`` or ``both`` MLPs (each env's memory
                is carried by the rollout and reset at its episode boundaries, see :mod:`phc_lightning.rl.recurrent`);
                null: plain MLPs.
            lstm_hidden: LSTM hidden size (DESIGN: 512, 1 layer); unused without ``recurrent``.
            mlp_dtype: matrix-product dtype of the actor and critic MLPs (``bfloat16``: autocast, float32 weights;
                PHC: float32). Rollout, update and evaluation all use it.
            mirror_augment: train on every minibatch and its left-right mirror image (observations and actions
                mirrored, the same advantages, returns and old log-probs; rsl_rl's symmetry augmentation), and
                let the observation normalizer see both (PHC: off). Not with a recurrent policy.
            amp: adversarial motion prior (off by default): ``--model.amp.enabled true``; a nested ``amp:`` block
                in YAML (:class:`~phc_lightning.amp.config.AMPConfig`).
        """
        check_hooks_kept(type(self), PHCModule)
        super().__init__()
        amp = as_amp_config(amp)
        # Plain values only (checkpoints load with weights_only=True): AMP as a dict; the warm-start source renamed,
        # so resuming or loading never reads that file again (it may be gone).
        self.save_hyperparameters(ignore=["amp", "init_from"])
        self.hparams["amp"] = amp.as_dict()
        if init_from:
            self.hparams[WARM_STARTED_FROM] = str(init_from)
        self.automatic_optimization = False
        self.action_interface = ActionInterface(residual_actions, action_scale, dof_action_scale, frozen_bodies)
        self.action_dim = self.action_interface.num_actions
        self.mirror = mirror_for_policy(mirror_augment, self.action_interface.controlled, recurrent, obs_dim)
        """Mirrors observations and actions when ``mirror_augment`` (:mod:`phc_lightning.task.mirror`), else None."""
        self.obs_norm = RunningNorm(obs_dim, clip=obs_clip)
        # Returns are unbounded in principle: no clip, only the scaling.
        self.value_norm = RunningNorm(1, clip=float("inf")) if normalize_value else None
        self.policy = make_actor_critic(obs_dim, self.action_dim, actor_hidden, critic_hidden, recurrent, lstm_hidden,
                                        layer_norm=layer_norm, init_log_std=init_log_std,
                                        learnable_log_std=learnable_log_std, mlp_dtype=mlp_dtype)
        self.recurrent_state_size: int = int(getattr(self.policy, "state_size", 0))
        """Width of each env's recurrent state (0: no LSTM), see :meth:`act_step`."""
        self.actor_state_size: int = int(getattr(self.policy, "actor_state_size", 0))
        """Width of the actor's part of it (0: no actor LSTM), see :meth:`act_deterministic`."""
        self._init_amp(amp, adam_eps)  # after the policy: its initialization is the same with AMP on or off
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.long))
        # At coefficient 0 the term is not part of the loss: no anchor is kept, computed or logged.
        self.l2_anchor: Optional[L2Anchor] = L2Anchor(self.policy) if l2_init_coef else None
        if init_from:
            load_policy_weights(self, init_from)
        self.reset_l2_anchor()
        self._init_evaluation()
        self.last_approx_kl: float = float("nan")
        """approx_kl of the most recent optimizer step (NaN for a skipped minibatch); ``LRAnnealing`` adapts to it."""
        self._init_iteration()

    # ------------------------------------------------------------------ acting (called by the rollout)

    def act(
        self, obs: Tensor, deterministic: bool = False, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """``(actions [N, A], logprob [N], value [N])`` of raw observations ``obs [N, obs_dim]``: a sample drawn from
        ``generator`` (the rollout keeps its own; None: the global RNG), or the Gaussian mean if ``deterministic``.
        Actions are unclipped (the env clips to [-1, 1]); ``logprob`` is their log-density summed over action
        dimensions. The caller picks the grad mode."""
        if self.recurrent_state_size:
            raise ValueError("PHCModule.act: a recurrent policy needs each env's state: call act_step(obs, state)")
        obs_norm = self._normalize(obs)
        dist = self.policy.distribution(obs_norm)
        actions = sample_actions(dist, deterministic, generator)
        return actions, dist.log_prob(actions).sum(-1), self._denormalize_value(self.policy.value(obs_norm))

    def act_step(
        self, obs: Tensor, state: Tensor, deterministic: bool = False, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`act` that also carries each env's recurrent state ``[N, recurrent_state_size]`` (zeros at an
        episode's start; ``[N, 0]`` without an LSTM, when this is :meth:`act`) and returns the next one."""
        if not self.recurrent_state_size:
            return (*self.act(obs, deterministic, generator), state)
        state = check_state(state, obs.shape[0], self.recurrent_state_size)
        dist, values, next_state = self.policy.step(self._normalize(obs), state)
        actions = sample_actions(dist, deterministic, generator)
        return actions, dist.log_prob(actions).sum(-1), self._denormalize_value(values), next_state

    def act_deterministic(self, obs: Tensor, actor_state: Tensor) -> Tuple[Tensor, Tensor]:
        """The Gaussian mean ``[N, A]`` and the next actor state of raw observations ``[N, obs_dim]`` under the actor's
        recurrent state ``[N, actor_state_size]`` (``[N, 0]`` without an actor LSTM): evaluation and videos, which
        never need the critic, so it does not run."""
        obs_norm = self._normalize(obs)
        if self.actor_state_size:
            return self.policy.actor_step(obs_norm, check_state(actor_state, obs.shape[0], self.actor_state_size))
        return self.policy.actor(obs_norm), actor_state

    def get_value(self, obs: Tensor, state: Optional[Tensor] = None) -> Tensor:
        """Critic value of raw observations ``[N, obs_dim] -> [N]``, in return units (a recurrent policy: under
        each env's ``state``, as in :meth:`act_step`)."""
        if self.recurrent_state_size:
            state = check_state(state, obs.shape[0], self.recurrent_state_size)
            return self._denormalize_value(self.policy.critic_value(self._normalize(obs), state))
        return self._denormalize_value(self.policy.value(self._normalize(obs)))

    def pd_targets(self, actions: Tensor, ref_dof_pos: Optional[Tensor] = None) -> Tensor:
        """PD targets ``[N, 69]`` (radians) of actions ``[N, A]`` under this policy's action interface.

        ``ref_dof_pos`` ``[N, 69]``: hinge angles of the reference frame the actions aim at (residual actions).
        """
        return self.action_interface.pd_targets(actions, ref_dof_pos)

    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic policy ``[N, obs_dim] -> [N, A]`` (the Gaussian mean), for export and inference."""
        if getattr(self.policy, "actor_memory", None) is not None:
            raise ValueError("PHCModule.forward: a recurrent actor needs each env's state: call act_step(obs, state)")
        return self.policy.actor(self._normalize(obs))

    def update_normalizers(self, obs: Tensor, returns: Tensor) -> None:
        """After an iteration's update: merge its raw observations ``[B, obs_dim]`` and returns ``[B]`` (of every
        rank when several processes train, so all of them normalize identically)."""
        if self.mirror is not None:  # symmetric statistics: the update sees both halves of its minibatches
            obs = torch.cat([obs, self.mirror.obs(obs)])
        distributed.update_norm_across_ranks(self.obs_norm, obs)
        if self.value_norm is not None:
            distributed.update_norm_across_ranks(self.value_norm, returns.reshape(-1, 1))

    def normalize_value(self, values: Tensor) -> Tensor:
        """Return-unit values ``[B]`` to the critic's units (identity without ``normalize_value``)."""
        return values if self.value_norm is None else self.value_norm(values.unsqueeze(-1)).squeeze(-1)

    def _denormalize_value(self, values: Tensor) -> Tensor:
        return values if self.value_norm is None else self.value_norm.denormalize(values.unsqueeze(-1)).squeeze(-1)

    def _normalize(self, obs: Tensor) -> Tensor:
        if obs.dim() != 2 or obs.shape[1] != self.hparams.obs_dim:
            raise ValueError(f"PHCModule: expected obs of shape [N, {self.hparams.obs_dim}], got {tuple(obs.shape)}")
        return self.obs_norm(obs)

    def reset_l2_anchor(self) -> None:
        """Snapshot the current policy parameters as the anchor of the L2-to-init term (e.g. after a warm start);
        nothing at ``l2_init_coef`` 0, where no anchor is kept."""
        if self.l2_anchor is not None:
            self.l2_anchor.reset(self.policy)

    def l2_init_distance(self) -> Tensor:
        """Sum of squared differences between the policy parameters and the anchor (scalar); a ValueError at
        ``l2_init_coef`` 0."""
        if self.l2_anchor is None:
            raise ValueError("PHCModule.l2_init_distance: model.l2_init_coef is 0, so no L2-to-init anchor is kept")
        return self.l2_anchor.distance(self.policy)

    # ------------------------------------------------------------------ PPO update

    def compute_losses(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Forward a minibatch and compute the total loss and every logged term.

        Args:
            batch: flat minibatch with :data:`BATCH_KEYS` (shapes in the module docstring).

        Returns:
            ``"loss"`` (total, with grad) and the scalar terms of :data:`LOSS_KEYS`.
        """
        required = BATCH_KEYS + ((STATE_KEY, STARTS_KEY) if self.recurrent_state_size else ())
        missing = [key for key in required if key not in batch]
        if missing:
            raise KeyError(f"PHCModule.training_step: batch is missing {missing} (has {sorted(batch)})")
        hp = self.hparams
        collected = batch["logprobs"].shape[0]  # the rows the policy collected (the rest: their mirror image)
        batch, dist, new_values = self._forward(batch)
        out = ppo.clipped_ppo_terms(
            dist.log_prob(batch["actions"]).sum(-1), dist.entropy().sum(-1), dist.mean, new_values,
            batch["logprobs"], batch["advantages"], self.normalize_value(batch["values"]),
            self.normalize_value(batch["returns"]), collected=collected, clip_coef=hp.clip_coef,
            value_clip=hp.value_clip, soft_bound=hp.soft_bound, norm_adv=hp.norm_adv,
        )
        out["loss"] = (out["policy"] + hp.vf_coef * out["value"] - hp.ent_coef * out["entropy"]
                       + hp.bound_coef * out["bound"])
        out["explained_variance"] = ppo.explained_variance(y_pred=batch["values"], y_true=batch["returns"])
        if self.l2_anchor is not None:
            out["l2_init"] = self.l2_init_distance()
            out["loss"] = out["loss"] + hp.l2_init_coef * out["l2_init"]
        return out

    def _forward(self, batch: Dict[str, Tensor], actor: bool = True) -> Tuple[Dict[str, Tensor], Any, Tensor]:
        """``(batch, action distribution, values)`` of a minibatch: the batch with its mirror image appended when
        ``mirror_augment``; values in critic units (normalized returns when ``normalize_value``). ``actor=False``
        skips the actor's forward where it can (the distribution is then None)."""
        if self.mirror is not None:
            batch = self.mirror.with_image(batch, BATCH_KEYS)
        obs_norm = self._normalize(batch["obs"])
        if self.recurrent_state_size:  # whole segments, replayed from their stored start states
            dist, values = self.policy.unroll(obs_norm, batch[STATE_KEY], batch[STARTS_KEY])
            return batch, dist, values
        return batch, self.policy.distribution(obs_norm) if actor else None, self.policy.value(obs_norm)

    def _critic_step(self, batch: Dict[str, Tensor]) -> Tensor:
        """A step of the value loss alone (``critic_full_update`` after the KL stop): the actor, its log-std
        included, gets no gradient, so Adam leaves its weights and moments as they are."""
        opt, _ = self.policy_and_disc_optimizers()
        batch, _, new_values = self._forward(batch, actor=False)
        v_loss = ppo.value_loss(new_values, self.normalize_value(batch["values"]),
                                self.normalize_value(batch["returns"]), self.hparams.value_clip)
        self.manual_backward(self.hparams.vf_coef * v_loss)
        self._clip_and_step(opt)
        self._learn_end = time.perf_counter()
        self.log("losses/critic_only_value", v_loss.detach(), on_step=False, on_epoch=True,
                 batch_size=batch["obs"].shape[0], sync_dist=True)
        return v_loss.detach()

    def _clip_and_step(self, opt: Any) -> None:
        """Clip the gradients by their global norm (``max_grad_norm`` > 0), step the policy optimizer, clear them."""
        if self.hparams.max_grad_norm > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad()

    def training_step(self, batch: Dict[str, Tensor], batch_idx: int = 0) -> Optional[Tensor]:
        """One optimizer step on one minibatch: losses -> backward -> grad norm -> clip -> step -> log.

        Returns:
            The detached total loss; None for a minibatch skipped by ``target_kl``.
        """
        if self._kl_stopped:  # not `return -1` from on_train_batch_start: that would also skip the epoch's eval
            self.last_approx_kl = float("nan")
            return self._critic_step(batch) if self.hparams.critic_full_update else None
        opt, disc_opt = self.policy_and_disc_optimizers()
        losses = self.compute_losses(batch)
        amp = self.amp_losses(batch) if disc_opt is not None else None
        self.manual_backward(losses["loss"] if amp is None else losses["loss"] + amp["loss"])
        # before clipping, so the log shows how often the clip bites
        grad_norm = ppo.grad_norm(self.policy.parameters(), self.device)
        self._clip_and_step(opt)
        if disc_opt is not None:
            disc_opt.step()
            disc_opt.zero_grad()

        # the mean over ranks: every rank must take the same early stop (a rank that skips while another steps would
        # hang DDP's all-reduce) and LRAnnealing must set the same lr everywhere
        self.last_approx_kl = distributed.mean_across_ranks(float(losses["approx_kl"]))
        self._minibatches_trained += 1
        self._learn_end = time.perf_counter()
        if self.hparams.target_kl is not None and self.last_approx_kl > self.hparams.target_kl:
            self._kl_stopped = True
        logs = {f"losses/{key}": losses[key].detach() for key in LOSS_KEYS if key in losses}
        logs["losses/grad_norm"] = grad_norm
        logs["charts/action_std"] = self.policy.log_std.detach().exp().mean()
        if amp is not None:
            logs.update(self.amp_log_dict(amp))
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=batch["obs"].shape[0], sync_dist=True)
        return losses["loss"].detach()

    def configure_optimizers(self) -> Union[torch.optim.Optimizer, List[torch.optim.Optimizer]]:
        """Adam over the policy parameters: actor (with a learnable log-std) and critic as two param groups; with
        AMP, ``[that, the discriminator's Adam]`` (returned, so checkpoints hold and resume both). The normalizers
        and the anchor are buffers, never optimized."""
        hp = self.hparams
        critic = [p for part in critic_modules(self.policy) for p in part.parameters()]
        critic_ids = {id(p) for p in critic}
        actor = [p for p in self.policy.parameters() if id(p) not in critic_ids]
        critic_lr = hp.learning_rate if hp.critic_learning_rate is None else hp.critic_learning_rate
        groups = [{"params": actor, "lr": hp.learning_rate}, {"params": critic, "lr": critic_lr}]
        policy_opt = torch.optim.Adam(groups, lr=hp.learning_rate, eps=hp.adam_eps)
        return policy_opt if self.discriminator is None else [policy_opt, self.disc_optimizer()]

    # ------------------------------------------------------------------ Lightning hooks
    # Everything training needs from a hook is here, as calls of named helpers; a subclass that overrides one of
    # these must call super() (hook_check.LEARNER_HOOKS, checked when the module is built).

    def setup(self, stage: str) -> None:
        """TF32 tensor-core matmuls when the trainer runs on CUDA: several times faster than fp32 for wide networks,
        and PPO's noisy gradients do not need the last mantissa bits (puffer-phc and Isaac Lab do the same)."""
        if self.trainer.strategy.root_device.type == "cuda":
            torch.set_float32_matmul_precision("high")

    def on_fit_start(self) -> None:
        """Several processes: evaluations during fit must not wait on per-forward buffer broadcasts, and the critic's
        own steps need DDP to let the actor go without a gradient."""
        distributed.stop_buffer_broadcast(self.trainer.strategy.model)
        if self.hparams.critic_full_update and not distributed.finds_unused_parameters(self.trainer.strategy.model):
            raise ConfigError("model.critic_full_update: with several processes the actor gets no gradient in the "
                              "critic's own steps; run with --trainer.strategy ddp_find_unused_parameters_true")

    def on_train_batch_start(self, batch: Dict[str, Any], batch_idx: int) -> None:
        """The first minibatch opens the iteration (its env steps are counted)."""
        self._open_iteration(batch, batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Dict[str, Any], batch_idx: int) -> None:
        """The last one closes it (normalizers, logs), before the epoch-end evaluation and any checkpoint."""
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._close_iteration()

    def on_train_epoch_end(self) -> None:
        """A data source without a length closes the iteration here (a closed one is not closed twice)."""
        self._close_iteration()

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: Dict[str, Tensor], batch_idx: int = 0) -> None:
        self._accumulate_eval(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Refuse another network, action interface or AMP setting; a changed lr wins (learner/resume.py)."""
        self.check_amp_checkpoint(checkpoint)
        settle_checkpoint(checkpoint, self.hparams, str(getattr(self._trainer, "ckpt_path", None) or "CKPT"))
        fit_checkpoint_to_anchor(checkpoint["state_dict"], self.l2_anchor)
