"""The agent: the shared encoder and the four heads that read its code (actor, critic, decoder, locator)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Categorical

from agent.config import ModelConfig
from agent.models.decoder import Decoder
from agent.models.encoder import Encoder, make_normalizer
from agent.models.layers import GAINS, layer_init
from agent.models.locator import Locator


def _head(features_dim: int, hidden: int, out: int, gain: float) -> nn.Module:
    if hidden == 0:
        return layer_init(nn.Linear(features_dim, out), gain)
    return nn.Sequential(
        layer_init(nn.Linear(features_dim, hidden), GAINS["trunk"]), nn.ReLU(),
        layer_init(nn.Linear(hidden, out), gain),
    )


class ActionEvaluation(NamedTuple):
    """What the learner needs of the policy for a batch of observations and the actions taken there."""

    logprob: torch.Tensor
    """(N,) log-probability of each action."""
    entropy: torch.Tensor
    """(N,) the policy's entropy, nats."""
    value: torch.Tensor
    """(N,) the critic's value."""
    code: torch.Tensor
    """(N, features_dim) the shared code, for the decoder's and the locator's losses."""


class Agent(nn.Module):
    """Normalizer, shared encoder, and the four heads that read its code: actor, critic, decoder and
    locator (the last two only in training)."""

    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int, cfg: ModelConfig):
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        self.normalizer = make_normalizer(obs_shape, cfg)
        self.encoder = Encoder(obs_shape, cfg)
        self.actor = _head(cfg.features_dim, cfg.head_hidden, num_actions, GAINS["actor"])
        self.critic = _head(cfg.features_dim, cfg.head_hidden, 1, GAINS["critic"])
        self.decoder = Decoder(self.encoder, cfg)
        self.locator = Locator(cfg.features_dim, obs_shape[1:], cfg.locator_cell)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 observations (N, stack, h, w) -> code (N, features_dim)."""
        return self.encoder(self.normalizer(x))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.encode(x)).squeeze(-1)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        """Samples an action (or scores `action`); returns action, log-prob, entropy, value."""
        code = self.encode(x)
        dist = Categorical(logits=self.actor(code))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(code).squeeze(-1)

    def evaluate_actions(self, x: torch.Tensor, actions: torch.Tensor,
                         detach_code: bool = False) -> ActionEvaluation:
        """The policy's log-probability and entropy at `actions`, the value and the code, for uint8
        observations (N, stack, h, w). With `detach_code`, the actor's and critic's gradients stop at the
        code (the encoder then learns from the decoder's and the locator's losses alone)."""
        code = self.encode(x)
        heads_in = code.detach() if detach_code else code
        dist = Categorical(logits=self.actor(heads_in))
        return ActionEvaluation(dist.log_prob(actions), dist.entropy(), self.critic(heads_in).squeeze(-1), code)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's picture of the newest frame, (N, 1, h, w) in [0, 1]."""
        return self.decoder(self.encode(x))
