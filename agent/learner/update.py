"""The update: PPO epochs over shuffled minibatches of a rollout (A2C: one full-batch step), then, with
`recon.aux_steps`, the auxiliary steps.

Loss = policy loss - ppo.ent_coef x entropy + ppo.vf_coef x value loss + recon.coef x the decoder's loss +
recon.locate_coef x the locator's loss (a term whose coefficient is 0 is not computed). Advantages are
normalized per minibatch, the policy and value losses clipped (PPO), the gradient's global norm clipped. The
auxiliary steps (`aux_update`) train on the rollout's frames with objects: recon.coef x the decoder's loss +
recon.locate_coef x the locator's + recon.aux_clone_coef x KL(policy before them || policy now); with
`recon.aux_detach` the decoder's and the locator's losses alone, on the code detached.
"""

from __future__ import annotations

import dataclasses
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
            l_loss = (recon.locate_loss(agent.locator, new.code, mb_masks, config.recon.locate_pos_weight)
                      if config.recon.locates else torch.zeros((), device=device))
            if config.recon.decodes:
                r_loss, pred, target, dec_masks = recon.decoder_loss(agent, new.code, mb_obs, mb_masks,
                                                                     config.recon)
            else:
                r_loss = torch.zeros((), device=device)
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
    if config.recon.decodes:  # the reconstruction scalars describe the last minibatch the decoder read
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


def aux_update(agent: Agent, optimizer: torch.optim.Optimizer, buffer: RolloutBuffer, config: Config,
               average_gradients: Callable[[], None] | None = None) -> dict[str, float]:
    """`recon.aux_steps` steps of the decoder's and the locator's losses, each on `recon.aux_batch` frames
    drawn from the rollout's frames with an object and as many without, the policy held in place by a
    behaviour-cloning KL term (with `recon.aux_detach`: on the code of the clean frames, detached, which
    trains the decoder and the locator alone); returns `losses/aux_*` scalars. No-op (an empty dict) without
    masks or without a loss to train (`recon.auxiliary`).

    `optimizer` is the phase's own, not PPO's: an Adam whose momentum PPO's steps set would carry PPO's
    direction into these steps, whose gradients are a hundredth of PPO's."""
    cfg = config.recon
    masks = buffer.object_masks()
    if not cfg.auxiliary or masks is None:
        return {}
    obs = buffer.obs.flatten(0, 1)
    device = obs.device
    # The pool: every frame with an object, and as many without (at least aux_batch frames in all).
    has_object = masks.flatten(1).any(dim=1)
    with_object = has_object.nonzero().flatten()
    without = (~has_object).nonzero().flatten()
    keep = max(len(with_object), cfg.aux_batch - len(with_object))
    pool = torch.cat([with_object, without[torch.randperm(len(without), device=device)[:keep]]])
    agent.train()
    with torch.no_grad():  # the detached steps' code; else the policy the steps must not move
        codes = torch.cat([agent.encode(obs[part]) for part in pool.split(256)])
        old_logits = None if cfg.aux_detach else agent.actor(codes)
    totals = {"losses/aux_recon": 0.0, "losses/aux_locate": 0.0, "losses/aux_clone": 0.0}
    whole = dataclasses.replace(cfg, decode_share=1.0)
    if cfg.aux_detach:  # the code of the clean frames: perturbed ones would need the encoder again
        whole = dataclasses.replace(whole, aug_noise_std=0.0, aug_shift=0)
    for step in range(cfg.aux_steps):
        pick = torch.randint(len(pool), (min(cfg.aux_batch, len(pool)),), device=device)
        idx = pool[pick]
        mb_obs, mb_masks = obs[idx], masks[idx]
        code = codes[pick] if cfg.aux_detach else agent.encode(mb_obs)
        r_loss = (recon.decoder_loss(agent, code, mb_obs, mb_masks, whole)[0] if cfg.decodes
                  else torch.zeros((), device=device))
        l_loss = (recon.locate_loss(agent.locator, code, mb_masks, cfg.locate_pos_weight) if cfg.locates
                  else torch.zeros((), device=device))
        clone = (torch.zeros((), device=device) if cfg.aux_detach else
                 torch.nn.functional.kl_div(torch.log_softmax(agent.actor(code), -1),
                                            torch.log_softmax(old_logits[pick], -1), log_target=True,
                                            reduction="batchmean"))
        loss = cfg.coef * r_loss + cfg.locate_coef * l_loss + cfg.aux_clone_coef * clone
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the auxiliary loss became non-finite at step {step + 1}; the last "
                                     f"checkpoint is kept as it was")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if average_gradients is not None:
            average_gradients()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), config.ppo.max_grad_norm)
        optimizer.step()
        for key, value in (("losses/aux_recon", r_loss), ("losses/aux_locate", l_loss), ("losses/aux_clone", clone)):
            totals[key] += value.item() / cfg.aux_steps
    return totals
