"""PPO math: GAE with terminations vs truncations, clipped losses, bound/L2 terms, diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phc_lightning.rl import ppo


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """Forward-sum definition, env by env: A_t = sum_l (gamma*lambda)^l delta_{t+l} up to the episode's end."""
    num_steps, num_envs = rewards.shape
    advantages = np.zeros((num_steps, num_envs))
    for n in range(num_envs):
        for t in range(num_steps):
            total, discount = 0.0, 1.0
            for k in range(t, num_steps):
                bootstrap = 0.0 if terminated[k, n] else next_values[k, n]
                delta = rewards[k, n] + gamma * bootstrap - values[k, n]
                total += discount * delta
                if terminated[k, n] or truncated[k, n]:
                    break  # the next row is another episode
                discount *= gamma * gae_lambda
            advantages[t, n] = total
    return advantages, advantages + values


def test_gae_matches_reference_loop_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    num_steps, num_envs, gamma, gae_lambda = 7, 5, 0.98, 0.9
    rewards = rng.normal(size=(num_steps, num_envs))
    values = rng.normal(size=(num_steps, num_envs))
    terminated = rng.random((num_steps, num_envs)) < 0.2
    truncated = (rng.random((num_steps, num_envs)) < 0.2) & ~terminated
    assert terminated.any() and truncated.any()
    # Ordinary steps bootstrap from the next row's value; the last row from a separate V(s_T).
    next_values = np.concatenate([values[1:], rng.normal(size=(1, num_envs))])
    # Truncations bootstrap from V(final obs), which is NOT the next row (that is a reset state) ...
    next_values[truncated] = rng.normal(size=truncated.sum()) + 10.0
    # ... and terminations must ignore whatever is stored there.
    next_values[terminated] = 1e6

    expected_adv, expected_ret = reference_gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)
    adv, ret = ppo.compute_gae(
        *(torch.as_tensor(a) for a in (rewards, values, next_values, terminated, truncated)), gamma, gae_lambda
    )
    np.testing.assert_allclose(adv.numpy(), expected_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), expected_ret, rtol=1e-12, atol=1e-12)


def test_gae_hand_computed_termination_cuts_and_truncation_bootstraps():
    # gamma = lambda = 0.5, so gamma * lambda = 0.25. Rewards 1, values 2 everywhere. T=3, N=2.
    # env 0 terminates at t=1 (next_values[1] = 99 must be ignored):
    #   d2 = 1 + 0.5*4 - 2 = 1          A2 = 1
    #   d1 = 1 + 0     - 2 = -1         A1 = -1             (episode ends: no A2 term)
    #   d0 = 1 + 0.5*2 - 2 = 0          A0 = 0 + 0.25*(-1) = -0.25
    # env 1 is truncated at t=1 with V(final obs) = 6 (the next row's value 2 belongs to a reset state):
    #   d2 = 1 + 0.5*4 - 2 = 1          A2 = 1
    #   d1 = 1 + 0.5*6 - 2 = 2          A1 = 2              (bootstrapped, but recursion still cut)
    #   d0 = 1 + 0.5*2 - 2 = 0          A0 = 0 + 0.25*2 = 0.5
    rewards = torch.ones(3, 2)
    values = torch.full((3, 2), 2.0)
    next_values = torch.tensor([[2.0, 2.0], [99.0, 6.0], [4.0, 4.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, True], [False, False]])
    adv, ret = ppo.compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.5, gae_lambda=0.5)
    expected = torch.tensor([[-0.25, 0.5], [-1.0, 2.0], [1.0, 1.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + 2.0)


def test_gae_rejects_mismatched_shapes():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        ppo.compute_gae(x, x, x[:3], x.bool(), x.bool(), 0.99, 0.95)


# Four samples, clip 0.2: ratios r = [1.5, 0.5, 0.5, 1.1], advantages A = [1, -1, 1, 1].
RATIOS = torch.tensor([1.5, 0.5, 0.5, 1.1], dtype=torch.float64)
ADVANTAGES = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
OLD_LOGPROB = torch.tensor([-1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
NEW_LOGPROB = OLD_LOGPROB + RATIOS.log()


def test_policy_loss_hand_computed():
    # per sample max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   r=1.5, A=1:  max(-1.5, -1.2) = -1.2   (clipped: no extra credit beyond 1.2)
    #   r=0.5, A=-1: max( 0.5,  0.8) =  0.8   (clipped: no extra credit below 0.8)
    #   r=0.5, A=1:  max(-0.5, -0.8) = -0.5   (unclipped: the pessimistic bound keeps the full penalty)
    #   r=1.1, A=1:  max(-1.1, -1.1) = -1.1   (inside the clip range)
    # mean = (-1.2 + 0.8 - 0.5 - 1.1) / 4 = -0.5
    loss = ppo.policy_loss(NEW_LOGPROB, OLD_LOGPROB, ADVANTAGES, clip_coef=0.2)
    assert loss.item() == pytest.approx(-0.5)


def test_kl_estimators_and_clip_fraction_hand_computed():
    # approx_kl = mean((r-1) - log r) = (0.0945349 + 0.1931472 + 0.1931472 + 0.0046898) / 4 = 0.1213798
    # old_approx_kl = mean(-log r) = (-0.4054651 + 0.6931472 + 0.6931472 - 0.0953102) / 4 = 0.2213798
    old_kl, kl = ppo.approx_kl(NEW_LOGPROB, OLD_LOGPROB)
    assert kl.item() == pytest.approx(0.1213798, abs=1e-6)
    assert old_kl.item() == pytest.approx(0.2213798, abs=1e-6)
    # |r - 1| > 0.2 for 1.5, 0.5, 0.5 but not 1.1 -> 3/4
    assert ppo.clip_fraction(NEW_LOGPROB, OLD_LOGPROB, 0.2).item() == pytest.approx(0.75)


def test_value_loss_hand_computed_clipped_and_plain():
    old_values = torch.tensor([1.0, 1.0, 1.0])
    new_values = torch.tensor([1.5, 0.9, 1.5])
    returns = torch.tensor([2.0, 0.0, 0.0])
    # clip 0.2 -> clipped predictions [1.2, 0.9, 1.2]
    #   s0: unclipped (1.5-2)^2 = 0.25, clipped (1.2-2)^2 = 0.64 -> 0.64
    #   s1: change -0.1 is inside the clip: 0.81 both             -> 0.81
    #   s2: unclipped (1.5-0)^2 = 2.25, clipped (1.2-0)^2 = 1.44  -> 2.25
    # 0.5 * mean(0.64, 0.81, 2.25) = 0.5 * 3.70 / 3 = 0.6166667
    assert ppo.value_loss(new_values, old_values, returns, 0.2).item() == pytest.approx(0.6166667, abs=1e-6)
    # None: 0.5 * mean(0.25, 0.81, 2.25) = 0.5 * 3.31 / 3 = 0.5516667
    assert ppo.value_loss(new_values, old_values, returns, None).item() == pytest.approx(0.5516667, abs=1e-6)


def test_entropy_loss_is_mean_entropy():
    assert ppo.entropy_loss(torch.tensor([1.0, 2.0, 6.0])).item() == pytest.approx(3.0)


def test_bound_loss_value_and_gradient_only_outside_soft_bound():
    # row 0: (1.0-0.9)^2 + (-1.2+0.9)^2 + 0 = 0.01 + 0.09 = 0.10 ; row 1 inside the bound: 0 ; mean = 0.05
    mu = torch.tensor([[1.0, -1.2, 0.5], [0.3, -0.9, 0.89]], requires_grad=True)
    loss = ppo.bound_loss(mu, soft_bound=0.9)
    assert loss.item() == pytest.approx(0.05)
    loss.backward()
    # d/dmu = 2 * excess / batch(2): [0.1, -0.3, 0] ; inside (and exactly at) the bound: 0
    torch.testing.assert_close(mu.grad, torch.tensor([[0.1, -0.3, 0.0], [0.0, 0.0, 0.0]]))


def test_l2_init_loss_sums_squared_differences():
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    init = [torch.tensor([0.0, 2.0]), torch.tensor([[1.0]])]
    assert ppo.l2_init_loss(params, init).item() == pytest.approx(1.0 + 4.0)
    assert ppo.l2_init_loss(params, params).item() == 0.0
    with pytest.raises(ValueError, match="anchor"):
        ppo.l2_init_loss(params, init[:1])


def test_explained_variance_argument_order_and_nan():
    y_true = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert ppo.explained_variance(y_pred=y_true.clone(), y_true=y_true).item() == pytest.approx(1.0)
    # Predicting the mean explains nothing -> 0. With the arguments swapped this would be NaN.
    assert ppo.explained_variance(y_pred=torch.full((4,), 2.5), y_true=y_true).item() == pytest.approx(0.0)
    assert math.isnan(ppo.explained_variance(y_pred=y_true, y_true=torch.full((4,), 2.5)).item())


def test_normalize_advantages_zero_mean_unit_std():
    adv = torch.tensor([3.0, 7.0, 11.0, -5.0, 100.0])
    out = ppo.normalize_advantages(adv)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out.std(correction=0).item() == pytest.approx(1.0, abs=1e-6)
    assert ppo.normalize_advantages(torch.tensor([4.0])).item() == 0.0  # single sample: no NaN


def test_clipped_ppo_terms_are_the_single_terms_and_the_diagnostics_see_only_collected_rows():
    gen = torch.Generator().manual_seed(0)
    rows, mirrored = 6, 6
    new_lp, old_lp, adv, ent, new_v, old_v, ret = (torch.randn(rows + mirrored, generator=gen) for _ in range(7))
    mean = torch.randn(rows + mirrored, 3, generator=gen)
    old_lp[rows:] += 5.0  # the mirror images' behaviour log-probs: far from the policy
    terms = ppo.clipped_ppo_terms(new_lp, ent, mean, new_v, old_lp, adv, old_v, ret, collected=rows, clip_coef=0.2,
                                  value_clip=None, soft_bound=0.9, norm_adv=True)
    torch.testing.assert_close(terms["policy"],
                               ppo.policy_loss(new_lp, old_lp, ppo.normalize_advantages(adv), 0.2))
    torch.testing.assert_close(terms["value"], ppo.value_loss(new_v, old_v, ret, None))
    torch.testing.assert_close(terms["entropy"], ent.mean())
    torch.testing.assert_close(terms["bound"], ppo.bound_loss(mean, 0.9))
    old_kl, kl = ppo.approx_kl(new_lp[:rows], old_lp[:rows])
    torch.testing.assert_close(terms["approx_kl"], kl)
    torch.testing.assert_close(terms["old_approx_kl"], old_kl)
    torch.testing.assert_close(terms["clipfrac"], ppo.clip_fraction(new_lp[:rows], old_lp[:rows], 0.2))
    raw = ppo.clipped_ppo_terms(new_lp, ent, mean, new_v, old_lp, adv, old_v, ret, collected=rows, clip_coef=0.2,
                                value_clip=None, soft_bound=0.9, norm_adv=False)
    torch.testing.assert_close(raw["policy"], ppo.policy_loss(new_lp, old_lp, adv, 0.2))
