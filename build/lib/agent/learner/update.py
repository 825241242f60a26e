"""The update: PPO epochs over shuffled minibatches of a rollout (A2C: one full-batch step).

Loss = policy loss - ppo.ent_coef x entropy + ppo.vf_coef x value loss + recon.coef x the decoder's loss
+ recon.locate_coef x the locator's loss. Advantages are normalized per minibatch, the policy and value
losses clipped (PPO), the gradient's global norm clipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from agent.config import Config
from agent.learner import recon
from agent.learner.ppo import policy_loss, value_loss
from agent.learner.rollout import RolloutBuffer
from agent.models import Agent
from agent.perception.matching import recon_stats


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and its last checkpoint is left as it was."""


def update_agent(agent: Agent, optimizer: torch.optim.Optimizer, buffer: RolloutBuffer, advantages: torch.Tensor,
                 returns: torch.Tensor, config: Config,
                 average_gradients: Callable[[], None] | None = None) -> dict[str, float]:
    """Trains `agent` on one rollout; returns the logged scalars (`losses/`, `recon/`, `diagnostics/`).

    `average_gradients`, when given, is called after each backward pass and before the gradient is
    clipped: data-parallel training averages the gradients of all ranks there.
    """
    cfg, device = config.ppo, buffer.obs.device
    obs_shape = config.env.obs_shape
    b_obs = buffer.obs.reshape(-1, *obs_shape)
    b_actions, b_logprobs = buffer.actions.reshape(-1), buffer.logprobs.reshape(-1)
    b_values, b_adv, b_returns = buffer.values.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
    b_masks = buffer.object_masks()
    clip = cfg.clip_coef if cfg.is_ppo else None
    epochs = cfg.update_epochs if cfg.is_ppo else 1
    agent.train()
    totals: dict[str, float] = {}
    count = 0
    for _ in range(epochs):
        order = torch.randperm(config.batch_size, device=device)
        for start in range(0, config.batch_size, config.minibatch_size):
            idx = order[start:start + config.minibatch_size]
            mb_obs = b_obs[idx]
            new = agent.evaluate_actions(mb_obs, b_actions[idx], detach_code=cfg.detach_encoder)
            mb_adv = b_adv[idx]
            if cfg.norm_adv and len(idx) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss, approx_kl, clip_fraction = policy_loss(new.logprob, b_logprobs[idx], mb_adv, clip)
            v_loss = value_loss(new.value, b_values[idx], b_returns[idx], clip if cfg.clip_vloss else None)
            entropy = new.entropy.mean()
            mb_masks = b_masks[idx] if b_masks is not None else None
            l_loss = (recon.locate_loss(agent.locator, new.code, mb_masks) if config.recon.locates
                      else torch.zeros((), device=device))
            r_loss, pred, target, dec_masks = recon.decoder_loss(agent, new.code, mb_obs, mb_masks, config.recon)
            loss = (pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss + config.recon.coef * r_loss
                    + config.recon.locate_coef * l_loss)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became non-finite (policy {pg_loss.item():.4g}, value {v_loss.item():.4g}, "
                    f"recon {r_loss.item():.4g}, locate {l_loss.item():.4g}); the last checkpoint is kept as "
                    f"it was: lower ppo.lr or resume from it"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if average_gradients is not None:
                average_gradients()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for key, value in (("losses/policy", pg_loss), ("losses/value", v_loss),
                               ("losses/entropy", entropy), ("losses/recon", r_loss), ("losses/locate", l_loss),
                               ("losses/approx_kl", approx_kl), ("losses/clip_fraction", clip_fraction)):
                totals[key] = totals.get(key, 0.0) + value.item()
            count += 1
    stats = {key: value / count for key, value in totals.items()}
    # The reconstruction scalars describe the last minibatch the decoder read.
    for key, value in recon_stats(pred.detach(), target, dec_masks, config.recon).items():
        stats[f"recon/{key}"] = value
    if config.recon.locates:
        stats["recon/located"] = recon.located_share(agent.locator, new.code.detach(), mb_masks)
    stats["diagnostics/code_saturation"] = float((new.code.detach().abs() > 0.99).float().mean())
    var_returns = b_returns.var()
    stats["diagnostics/explained_variance"] = (
        float(1 - (b_returns - b_values).var() / var_returns) if var_returns > 0 else math.nan
    )
    return stats
