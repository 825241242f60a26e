import math

import pytest
import torch

from agent.config import ModelConfig
from agent.device import place
from agent.learner.recon import locate_loss
from agent.models import (
    DECODER_START_GRAY,
    GAINS,
    LOCATOR_PRIOR_FLOOR,
    Agent,
    BlockConvTranspose2d,
    Locator,
    recon_target,
)


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


def test_evaluate_actions_scores_the_given_actions_and_can_stop_the_heads_gradient_at_the_code():
    torch.manual_seed(0)
    agent = Agent((4, 64, 144), 14, ModelConfig())
    x = torch.randint(60, 110, (4, 4, 64, 144), dtype=torch.uint8)
    actions = torch.tensor([0, 3, 7, 13])
    _, logprob, entropy, value = agent.get_action_and_value(x, actions)
    out = agent.evaluate_actions(x, actions)
    assert torch.allclose(out.logprob, logprob) and torch.allclose(out.entropy, entropy)
    assert torch.allclose(out.value, value) and torch.allclose(out.code, agent.encode(x))
    detached = agent.evaluate_actions(x, actions, detach_code=True)
    (detached.logprob.sum() + detached.value.sum()).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert agent.actor[0].weight.grad is not None


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


def test_place_keeps_conv_weights_channels_last_on_the_cpu():
    agent = Agent((4, 64, 144), 14, ModelConfig())
    assert place(agent, torch.device("cpu")) is agent
    conv = agent.encoder.trunk[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randint(0, 256, (2, 4, 64, 144), dtype=torch.uint8)
    assert agent.reconstruct(x).shape == (2, 1, 64, 144)


@pytest.mark.parametrize(("layer", "output_padding", "shape"), [
    ((32, 1, 8, 4), (0, 0), (3, 32, 15, 35)),  # the decoder's last transposed conv
    ((6, 2, 4, 2), (1, 0), (2, 6, 5, 7)),  # a row past the last block, which only the bias reaches
    ((6, 2, 3, 2), (1, 1), (2, 6, 5, 7)),  # a kernel not a whole number of strides: not folded
])
def test_the_folded_transposed_conv_computes_what_the_plain_one_does(layer, output_padding, shape):
    torch.manual_seed(0)
    plain = torch.nn.ConvTranspose2d(*layer, output_padding=output_padding)
    block = BlockConvTranspose2d(*layer, output_padding=output_padding)
    block.load_state_dict(plain.state_dict())
    place(block, torch.device("cpu"))  # channels_last weights, as the agent keeps them
    x = torch.randn(shape)
    x_plain, x_block = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_plain, y_block = plain(x_plain), block(x_block)
    assert y_block.shape == y_plain.shape
    torch.testing.assert_close(y_block, y_plain, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(y_plain)
    y_plain.backward(grad)
    y_block.backward(grad)
    torch.testing.assert_close(x_block.grad, x_plain.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block.weight.grad, plain.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(block.bias.grad, plain.bias.grad, atol=1e-4, rtol=1e-4)


def test_the_decoders_last_layer_is_folded_and_keeps_its_checkpoint_keys():
    agent = Agent((4, 64, 144), 14, ModelConfig())
    deconvs = [m for m in agent.decoder.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [type(m) for m in deconvs] == [torch.nn.ConvTranspose2d] * 2 + [BlockConvTranspose2d]
    assert agent.decoder.deconv[4] is deconvs[-1] and deconvs[-1].weight.shape == (32, 1, 8, 8)
    assert {"decoder.deconv.4.weight", "decoder.deconv.4.bias"} <= agent.state_dict().keys()


def test_locator_targets_mark_the_cells_a_mask_touches():
    locator = Locator(64, (64, 144), (8, 4))
    assert locator.grid == (8, 36) and locator.linear.out_features == 8 * 36
    masks = torch.zeros(2, 64, 144, dtype=torch.bool)
    masks[0, 29:33, 19:26] = True  # rows 29-32: cell rows 3 and 4; columns 19-25: cell columns 4-6
    cells = locator.targets(masks).view(2, 8, 36)
    assert cells[0].nonzero().tolist() == [[3, 4], [3, 5], [3, 6], [4, 4], [4, 5], [4, 6]]
    assert not cells[1].any()
    # Cells that do not divide the frame: the last row and column of cells are partial, not dropped.
    partial = Locator(64, (10, 10), (4, 4))
    assert partial.grid == (3, 3)
    corner = torch.zeros(1, 10, 10, dtype=torch.bool)
    corner[0, 9, 9] = True
    assert partial.targets(corner).view(3, 3).nonzero().tolist() == [[2, 2]]


def test_a_fresh_locator_guesses_each_cells_share_and_leaves_the_code_alone():
    locator = Locator(64, (64, 144), (8, 4))
    floor = math.log(LOCATOR_PRIOR_FLOOR / (1 - LOCATOR_PRIOR_FLOOR))
    code = torch.rand(4, 64, requires_grad=True)
    assert torch.allclose(locator(code), torch.full((4, 288), floor))
    masks = torch.zeros(4, 64, 144, dtype=torch.bool)
    masks[0, 30:32, 20:24] = True  # cell (3, 5), in one frame of four
    locator.fit_prior(masks, chunk=3)
    prior = locator(code).detach().view(4, 8, 36)
    assert prior[:, 3, 5].tolist() == pytest.approx([math.log(0.25 / 0.75)] * 4, rel=1e-5)
    assert torch.allclose(prior[:, 0, 0], torch.full((4,), floor))  # never seen: the floor
    loss = locate_loss(locator, code, masks)
    # Known answer: the frame with the knife scores -log(0.25) at its cell, the three others -log(0.75).
    softplus = torch.nn.functional.softplus
    expected = (-math.log(0.25) - 3 * math.log(0.75) + 4 * 287 * softplus(torch.tensor(floor)).item()) / (4 * 288)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert code.grad.abs().max() == 0  # zero weights: no first push on the tanh code
    assert locator.linear.weight.grad.abs().max() > 0  # but the head itself learns


def test_the_locator_teaches_the_code_where_a_planted_object_is():
    torch.manual_seed(0)
    agent = Agent((4, 16, 48), 3, ModelConfig(channels=[8, 8], kernels=[4, 3], strides=[2, 1], locator_cell=[8, 4]))
    params = list(agent.encoder.parameters()) + list(agent.locator.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)

    # One frame per place a 4 px knife fits, 11 gray levels darker than the wall.
    obs = torch.full((44, 4, 16, 48), 85, dtype=torch.uint8)
    masks = torch.zeros(44, 16, 48, dtype=torch.bool)
    for x in range(44):
        obs[x, :, 9:11, x:x + 4] = 74
        masks[x, 9:11, x:x + 4] = True
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        idx = torch.randint(0, 44, (32,), generator=gen)
        loss = locate_loss(agent.locator, agent.encode(obs[idx]), masks[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        guess = agent.locator(agent.encode(obs)).argmax(1)
    assert agent.locator.targets(masks).gather(1, guess[:, None]).mean() > 0.9  # the best guess is a knife cell
