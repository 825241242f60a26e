import math

import pytest
import torch

from agent.learner.ppo import compute_gae, policy_loss, value_loss


def test_gae_matches_hand_computed_case_with_episode_boundary():
    # One env, three steps; the observation of step 2 starts a new game (dones[2] = 1).
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [2.0]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    next_value, next_done = torch.tensor([4.0]), torch.tensor([0.0])
    adv, ret = compute_gae(rewards, values, dones, next_value, next_done, gamma, lam)
    # Step 2 bootstraps from next_value; step 1 ends a game (no bootstrap); step 0 from step 1.
    d2 = 3.0 + 0.9 * 4.0 - 2.0
    d1 = 2.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2, a1 = d2, d1
    a0 = d0 + gamma * lam * a1
    assert adv[:, 0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[:, 0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 2.0])


def test_gae_does_not_bootstrap_past_a_final_done():
    rewards = torch.ones(2, 1)
    values = torch.zeros(2, 1)
    adv, _ = compute_gae(rewards, values, torch.zeros(2, 1), torch.tensor([100.0]), torch.tensor([1.0]), 1.0, 1.0)
    assert adv[:, 0].tolist() == pytest.approx([2.0, 1.0])


def test_ppo_policy_loss_clips_large_ratios():
    old = torch.log(torch.tensor([0.5, 0.5]))
    new = torch.log(torch.tensor([1.0, 0.1]))  # ratios 2.0 and 0.2
    adv = torch.tensor([1.0, -1.0])
    loss, _, clip_fraction = policy_loss(new, old, adv, clip_coef=0.2)
    # Positive advantage: min(2.0, 1.2) * 1 -> 1.2; negative: max(-0.2, -0.8) -> objective -0.8.
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2)
    assert clip_fraction.item() == 1.0


def test_ppo_policy_loss_equals_surrogate_inside_the_clip_range():
    old = torch.zeros(3)
    new = torch.tensor([0.05, -0.05, 0.0])
    adv = torch.tensor([1.0, 2.0, -1.0])
    loss, kl, clip_fraction = policy_loss(new, old, adv, clip_coef=0.2)
    assert loss.item() == pytest.approx(-(new.exp() * adv).mean().item())
    assert clip_fraction.item() == 0.0
    assert kl.item() > 0


def test_a2c_policy_loss_is_minus_logp_times_advantage():
    new = torch.tensor([math.log(0.25), math.log(0.5)])
    loss, _, _ = policy_loss(new, new.clone(), torch.tensor([2.0, -1.0]), clip_coef=None)
    assert loss.item() == pytest.approx(-(math.log(0.25) * 2.0 - math.log(0.5)) / 2)


def test_value_loss_clipping_takes_the_larger_error():
    new, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([2.0])
    assert value_loss(new, old, ret, None).item() == 0.0
    # Clipped prediction is 0.1, error 1.9: the pessimistic max keeps it.
    assert value_loss(new, old, ret, 0.1).item() == pytest.approx(0.5 * 1.9**2)
