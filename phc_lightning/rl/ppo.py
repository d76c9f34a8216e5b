"""Pure PPO math: GAE with separate terminations and truncations, the clipped losses and diagnostics.

Every function is stateless and works on whatever device its inputs live on. Formulas follow cleanrl
(``ppo_continuous_action.py``) except for time limits: a truncated step is bootstrapped from the value of
its real final observation instead of being cut like a failure (see ``compute_gae``). Shapes: ``T`` rollout
steps, ``N`` environments, ``B`` flattened minibatch, ``A`` action dimensions.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch

Tensor = torch.Tensor


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> Tuple[Tensor, Tensor]:
    """Generalized advantage estimation over a rollout.

    Args:
        rewards: ``[T, N]`` reward received after the action at step ``t``.
        values: ``[T, N]`` V(s_t) recorded while acting.
        next_values: ``[T, N]`` V of the observation reached by step ``t``: V(s_{t+1}) for ordinary steps (and for
            the last step, the bootstrap value), V(final observation before auto-reset) where ``truncated[t]``.
            Ignored where ``terminated[t]``.
        terminated: ``[T, N]`` bool, the episode ended in failure at step ``t`` (no bootstrap).
        truncated: ``[T, N]`` bool, the episode ended by time limit at step ``t`` (bootstrap from ``next_values``).
        gamma: discount factor.
        gae_lambda: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``[T, N]`` in the dtype of ``values``; ``returns = advantages + values``.
    """
    if not (rewards.shape == values.shape == next_values.shape == terminated.shape == truncated.shape):
        raise ValueError(
            f"compute_gae: shapes differ: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, next_values "
            f"{tuple(next_values.shape)}, terminated {tuple(terminated.shape)}, truncated {tuple(truncated.shape)}"
        )
    not_terminated = 1.0 - terminated.to(values.dtype)
    # Any episode boundary stops the recursion: the next row belongs to a fresh episode after auto-reset.
    not_done = 1.0 - (terminated.bool() | truncated.bool()).to(values.dtype)
    deltas = rewards + gamma * next_values * not_terminated - values
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        last_gae = deltas[t] + gamma * gae_lambda * not_done[t] * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def normalize_advantages(advantages: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero-mean, unit-std advantages over the whole tensor (one minibatch), ``[B] -> [B]``."""
    # Population std: a single-sample minibatch gives 0 instead of NaN.
    return (advantages - advantages.mean()) / (advantages.std(correction=0) + eps)


def policy_loss(new_logprob: Tensor, old_logprob: Tensor, advantages: Tensor, clip_coef: float) -> Tensor:
    """Clipped surrogate objective, as a loss to minimise.

    Args:
        new_logprob: ``[B]`` log pi_new(a|s), summed over action dimensions.
        old_logprob: ``[B]`` log pi_old(a|s) recorded while acting.
        advantages: ``[B]`` (already normalised if wanted).
        clip_coef: epsilon of the ratio clip ``[1 - eps, 1 + eps]``.

    Returns:
        Scalar ``mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps)))`` with ``r = exp(new - old)``.
    """
    ratio = (new_logprob - old_logprob).exp()
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    return torch.max(loss_unclipped, loss_clipped).mean()


@torch.no_grad()
def approx_kl(new_logprob: Tensor, old_logprob: Tensor) -> Tuple[Tensor, Tensor]:
    """KL(old || new) estimators from http://joschu.net/blog/kl-approx.html, ``[B], [B] -> (scalar, scalar)``.

    Returns:
        ``(old_approx_kl, approx_kl)``: the naive ``mean(-log r)`` and the unbiased, lower-variance
        ``mean((r - 1) - log r)``.
    """
    log_ratio = new_logprob - old_logprob
    return (-log_ratio).mean(), ((log_ratio.exp() - 1.0) - log_ratio).mean()


@torch.no_grad()
def clip_fraction(new_logprob: Tensor, old_logprob: Tensor, clip_coef: float) -> Tensor:
    """Fraction of samples whose ratio lies outside ``[1 - clip_coef, 1 + clip_coef]``, ``[B], [B] -> scalar``."""
    ratio = (new_logprob - old_logprob).exp()
    return ((ratio - 1.0).abs() > clip_coef).float().mean()


def value_loss(new_values: Tensor, old_values: Tensor, returns: Tensor, clip_coef: Optional[float]) -> Tensor:
    """Value loss, clipped around the rollout values like cleanrl.

    Args:
        new_values: ``[B]`` current critic output.
        old_values: ``[B]`` critic output recorded while acting.
        returns: ``[B]`` GAE returns (targets).
        clip_coef: half-width of the allowed change of the prediction; ``None`` for plain ``0.5 * MSE``.

    Returns:
        Scalar ``0.5 * mean(max((v - R)^2, (v_old + clip(v - v_old, -c, c) - R)^2))``.
    """
    loss_unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * loss_unclipped.mean()
    values_clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    loss_clipped = (values_clipped - returns) ** 2
    return 0.5 * torch.max(loss_unclipped, loss_clipped).mean()


def entropy_loss(entropy: Tensor) -> Tensor:
    """Mean policy entropy ``[B] -> scalar`` (the module subtracts ``ent_coef`` times this)."""
    return entropy.mean()


def bound_loss(mu: Tensor, soft_bound: float = 0.9) -> Tensor:
    """PHC's penalty on action means leaving ``[-soft_bound, soft_bound]``.

    Args:
        mu: ``[B, A]`` Gaussian means (before any action clipping).
        soft_bound: bound below which the penalty (and its gradient) is exactly zero.

    Returns:
        Scalar ``mean_B(sum_A(clamp(mu - b, min=0)^2 + clamp(mu + b, max=0)^2))``.
    """
    above = torch.clamp(mu - soft_bound, min=0.0) ** 2
    below = torch.clamp(mu + soft_bound, max=0.0) ** 2
    return (above + below).sum(dim=-1).mean()


def clipped_ppo_terms(
    new_logprob: Tensor,
    entropy: Tensor,
    action_mean: Tensor,
    new_values: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    old_values: Tensor,
    returns: Tensor,
    *,
    collected: int,
    clip_coef: float,
    value_clip: Optional[float],
    soft_bound: float,
    norm_adv: bool,
) -> Dict[str, Tensor]:
    """Every PPO term of one minibatch of ``B`` rows, from the new forward pass and the rollout's data.

    Args:
        new_logprob, entropy: ``[B]`` of the current policy, summed over action dimensions.
        action_mean: ``[B, A]`` its Gaussian means.
        new_values: ``[B]`` current critic output; ``old_values`` and ``returns`` ``[B]`` in the same units.
        old_logprob, advantages: ``[B]`` from the rollout (advantages normalized here if ``norm_adv``).
        collected: the first ``collected`` rows are the ones the policy collected; the trust-region diagnostics
            (early stop, adaptive lr) leave out the rest, mirror images whose behaviour log-prob is their original's
            and far from a policy not yet symmetric (rsl_rl measures its KL on the original samples too).
        clip_coef, value_clip, soft_bound: as in :func:`policy_loss`, :func:`value_loss`, :func:`bound_loss`.

    Returns:
        ``policy``, ``value``, ``entropy``, ``bound`` (scalars with grad) and ``approx_kl``, ``old_approx_kl``,
        ``clipfrac``.
    """
    if norm_adv:
        advantages = normalize_advantages(advantages)
    own, old = new_logprob[:collected], old_logprob[:collected]
    old_kl, kl = approx_kl(own, old)
    return {
        "policy": policy_loss(new_logprob, old_logprob, advantages, clip_coef),
        "value": value_loss(new_values, old_values, returns, value_clip),
        "entropy": entropy_loss(entropy),
        "bound": bound_loss(action_mean, soft_bound),
        "approx_kl": kl,
        "old_approx_kl": old_kl,
        "clipfrac": clip_fraction(own, old, clip_coef),
    }


def l2_init_loss(params: Iterable[Tensor], init_params: Iterable[Tensor]) -> Tensor:
    """Sum of squared differences between parameters and their initial values (the anchor).

    Args:
        params: current parameter tensors.
        init_params: matching anchor tensors, same order and shapes.

    Returns:
        Scalar ``sum_i ||p_i - p0_i||^2``.
    """
    params, init_params = list(params), list(init_params)
    if len(params) != len(init_params):
        raise ValueError(f"l2_init_loss: {len(params)} parameters but {len(init_params)} anchor tensors")
    if not params:
        raise ValueError("l2_init_loss: no parameters given")
    return torch.stack([((p - p0) ** 2).sum() for p, p0 in zip(params, init_params)]).sum()


@torch.no_grad()
def explained_variance(y_pred: Tensor, y_true: Tensor) -> Tensor:
    """``1 - Var(y_true - y_pred) / Var(y_true)`` over all elements; NaN when ``Var(y_true) == 0``.

    Args:
        y_pred: ``[B]`` predictions (critic values).
        y_true: ``[B]`` targets (returns).

    Returns:
        Scalar tensor: 1 for perfect predictions, 0 for predicting the mean, negative when worse.
    """
    var_true = y_true.var(correction=0)
    ratio = (y_true - y_pred).var(correction=0) / var_true
    return torch.where(var_true == 0, torch.full_like(ratio, float("nan")), 1.0 - ratio)


@torch.no_grad()
def grad_norm(params: Iterable[Tensor], device: torch.device) -> Tensor:
    """Global L2 norm of the gradients of ``params`` (the quantity ``clip_grad_norm_`` clips); 0 on ``device``
    when none has a gradient."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    if not norms:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack(norms))
