"""The actor-critic maths: GAE and the policy and value losses of PPO and A2C."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a (T, N) rollout.

    `dones[t]` is 1 where the observation of step t starts a new game (or, for learning, a new life):
    the value of that observation must not be bootstrapped into step t-1. `next_value` and `next_done`
    describe the observation after the last step.

    Returns (advantages, returns), both (T, N).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            not_done, following = 1.0 - next_done, next_value
        else:
            not_done, following = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * following * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        advantages[t] = last
    return advantages, advantages + values


def policy_loss(
    new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor, clip_coef: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (or, with clip_coef None, A2C's -logp * A).

    Returns (loss, approx_kl, clip_fraction); the last two are diagnostics.
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
    if clip_coef is None:
        return -(new_logprob * advantages).mean(), approx_kl, torch.zeros_like(approx_kl)
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_coef).float().mean()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)
    return torch.max(unclipped, clipped).mean(), approx_kl, clip_fraction


def value_loss(
    new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """0.5 * squared error, optionally clipped around the rollout's values (PPO)."""
    unclipped = (new_value - returns).square()
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped_value = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
    clipped = (clipped_value - returns).square()
    return 0.5 * torch.max(unclipped, clipped).mean()
