"""The model: normalizer and encoder (the shared tanh code), actor, critic, decoder and locator.

`agent.models.Agent(obs_shape, num_actions, config.model)` builds a fresh agent; the parts live in
`encoder`, `decoder`, `locator` and `actor_critic`, the initialisation in `layers`.
"""

from agent.models.actor_critic import ActionEvaluation, Agent
from agent.models.decoder import DECODER_START_GRAY, Decoder, recon_target
from agent.models.encoder import Encoder, make_normalizer
from agent.models.layers import GAINS, BlockConvTranspose2d, layer_init
from agent.models.locator import LOCATOR_PRIOR_FLOOR, Locator

__all__ = [
    "ActionEvaluation", "Agent", "BlockConvTranspose2d", "DECODER_START_GRAY", "Decoder", "Encoder", "GAINS",
    "LOCATOR_PRIOR_FLOOR", "Locator", "layer_init", "make_normalizer", "recon_target",
]
