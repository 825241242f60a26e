import math

import pytest
import torch

from agent.config import ModelConfig
from agent.models import DECODER_START_GRAY, GAINS, Agent, recon_target


@pytest.mark.parametrize("shape", [(4, 64, 144), (4, 84, 84), (4, 210, 160)])
def test_output_shapes_for_crop_resize_and_native(shape):
    agent = Agent(shape, 14, ModelConfig())
    x = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    action, logprob, entropy, value = agent.get_action_and_value(x)
    assert action.shape == logprob.shape == entropy.shape == value.shape == (3,)
    assert agent.get_value(x).shape == (3,)
    recon = agent.reconstruct(x)
    assert recon.shape == (3, 1, shape[1], shape[2])
    assert recon.min() >= 0 and recon.max() <= 1
    assert recon_target(x).shape == recon.shape


def test_code_is_tanh_bounded_and_64_wide():
    agent = Agent((4, 64, 144), 14, ModelConfig())
    with torch.no_grad():
        agent.encoder.code[1].weight.mul_(100)  # saturate: values must still stay inside (-1, 1)
    code = agent.encode(torch.randint(0, 256, (5, 4, 64, 144), dtype=torch.uint8))
    assert code.shape == (5, 64)
    assert code.abs().max() <= 1.0
    assert code.abs().max() > 0.99


def test_initial_policy_is_near_uniform_and_scores_given_actions():
    agent = Agent((4, 64, 144), 14, ModelConfig())
    x = torch.randint(0, 256, (4, 4, 64, 144), dtype=torch.uint8)
    _, _, entropy, _ = agent.get_action_and_value(x)
    assert entropy.min().item() > math.log(14) - 0.01
    action = torch.tensor([0, 3, 13, 7])
    out_action, logprob, _, _ = agent.get_action_and_value(x, action)
    assert torch.equal(out_action, action)
    logits = agent.actor(agent.encode(x))
    assert torch.allclose(logprob, torch.log_softmax(logits, -1)[torch.arange(4), action])


def test_heads_use_the_table_of_gains():
    agent = Agent((4, 64, 144), 14, ModelConfig(head_hidden=0))
    # Orthogonal init with gain g: the largest singular value of a wide matrix equals g.
    assert torch.linalg.matrix_norm(agent.actor.weight, 2).item() == pytest.approx(GAINS["actor"], rel=1e-4)
    assert torch.linalg.matrix_norm(agent.critic.weight, 2).item() == pytest.approx(GAINS["critic"], rel=1e-4)


def test_a_trunk_that_shrinks_the_input_to_nothing_is_refused():
    with pytest.raises(ValueError, match="shrinks"):
        Agent((4, 8, 8), 14, ModelConfig())


def test_a_fresh_decoder_draws_the_walls_gray():
    torch.manual_seed(0)
    agent = Agent((4, 64, 144), 14, ModelConfig())
    picture = agent.reconstruct(torch.randint(0, 256, (8, 4, 64, 144), dtype=torch.uint8)) * 255
    assert DECODER_START_GRAY == 85
    assert abs(picture.mean().item() - 85) < 1.0 and picture.std().item() < 2.0
