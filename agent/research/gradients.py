"""How hard each term of the loss pulls on the shared encoder: the norm of its gradient over the encoder's
parameters, each term with its coefficient, on one minibatch of a fresh rollout of the agent's own play.

When the decoder's or the locator's term is orders of magnitude below PPO's, the code is PPO's alone,
whatever the decoder is asked to draw.
"""

from __future__ import annotations

import torch

from agent.config import Config
from agent.env.game import GameEnv
from agent.learner import recon
from agent.learner.ppo import compute_gae, policy_loss, value_loss
from agent.learner.rollout import RolloutBuffer, collect_rollout
from agent.models import Agent


def encoder_gradient_norms(agent: Agent, config: Config, seed: int = 0, rollouts: int = 2,
                           minibatch: int = 256) -> dict[str, float]:
    """Gradient norms at the encoder of the policy, value (x ppo.vf_coef), entropy (x ppo.ent_coef),
    decoder (x recon.coef) and locator (x recon.locate_coef) terms (these two when their coefficient is
    above 0), on `minibatch` frames of the last of `rollouts` rollouts of the config's size played by
    `agent` from games of `seed`."""
    env = GameEnv(config.env, seed)
    buffer = RolloutBuffer.allocate(config, env.reset(), torch.device("cpu"))
    with torch.random.fork_rng():  # the actions are sampled from `seed`, the caller's stream is left alone
        torch.manual_seed(seed)
        try:
            for _ in range(rollouts):
                collect_rollout(agent, env, buffer, config, 0, lambda *_: None)
        finally:
            env.close()
    with torch.no_grad():
        next_value = agent.get_value(buffer.next_obs)
    advantages, returns = compute_gae(buffer.rewards, buffer.values, buffer.dones, next_value, buffer.next_done,
                                      config.ppo.gamma, config.ppo.gae_lambda)
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(config.batch_size, generator=generator)[:minibatch]
    obs = buffer.obs.flatten(0, 1)[idx]
    masks = buffer.object_masks()
    masks = masks[idx] if masks is not None else None
    agent.train()
    new = agent.evaluate_actions(obs, buffer.actions.flatten()[idx])
    adv = advantages.flatten()[idx]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    cfg = config.ppo
    terms = {
        "policy": policy_loss(new.logprob, buffer.logprobs.flatten()[idx], adv, cfg.clip_coef)[0],
        "value": cfg.vf_coef * value_loss(new.value, buffer.values.flatten()[idx], returns.flatten()[idx],
                                          cfg.clip_coef),
        "entropy": cfg.ent_coef * new.entropy.mean(),
    }
    if config.recon.decodes:
        terms["decoder"] = config.recon.coef * recon.decoder_loss(agent, new.code, obs, masks, config.recon)[0]
    if config.recon.locates:
        terms["locator"] = config.recon.locate_coef * recon.locate_loss(agent.locator, new.code, masks,
                                                                         config.recon.locate_pos_weight)
    params = list(agent.encoder.parameters())
    norms = {}
    for name, loss in terms.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum((g.square().sum() for g in grads if g is not None),
                                           torch.zeros(()))))
    agent.eval()
    return norms
