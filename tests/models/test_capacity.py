import pytest
import torch
from torch import nn

from agent.config import ModelConfig
from agent.models import Agent
from agent.models.capacity import agent_outputs, capacity_report, format_capacity


def _model():
    # conv: 4*3*3*3 + 4 = 112 parameters; linear: 16*5 + 5 = 85; batch norm: 2*4 params, 2*4 + 1 buffers.
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5))


def test_counts_parameters_per_layer_and_the_data_ratio():
    report = capacity_report(_model(), samples=10, inputs_per_sample=3 * 4 * 4, outputs_per_sample=5)
    assert [(layer["name"], layer["params"]) for layer in report["layers"]] == [("0", 112), ("1", 8), ("4", 85)]
    assert report["layers"][0]["shapes"] == [[4, 3, 3, 3], [4]]
    assert report["total_params"] == report["trainable_params"] == 205
    assert report["buffer_elements"] == 9
    assert report["data_dof"] == 10 * (48 + 5)
    assert report["dof_per_param"] == pytest.approx(530 / 205)
    assert report["samples_per_param"] == pytest.approx(10 / 205)


def test_frozen_parameters_are_not_free():
    model = _model()
    for p in model[0].parameters():
        p.requires_grad_(False)
    report = capacity_report(model, 100, 48, 5)
    assert report["total_params"] == 205
    assert report["trainable_params"] == 93
    assert report["dof_per_param"] == pytest.approx(100 * 53 / 93)


def test_agent_report_covers_every_parameter():
    agent = Agent((4, 64, 144), 14, ModelConfig())
    report = capacity_report(agent, 1000, 4 * 64 * 144, 14 + 1 + 64 * 144)
    assert report["total_params"] == sum(p.numel() for p in agent.parameters())
    assert set(report["modules"]) == {"encoder", "actor", "critic", "decoder", "locator"}
    assert sum(report["modules"].values()) == report["trainable_params"]
    assert report["buffer_elements"] == sum(b.numel() for b in agent.buffers())  # the normalizer's statistics
    # 14 logits, 1 value, the 64 x 144 frame and the locator's 3 x 72 cells.
    assert agent_outputs(agent) == 14 + 1 + 64 * 144 + 3 * 72


def test_format_lists_every_layer_and_the_ratio():
    report = capacity_report(_model(), 10, 48, 5)
    text = format_capacity(report)
    for name in ("0", "1", "4"):
        assert any(line.startswith(name + " ") for line in text.splitlines())
    assert "4x3x3x3 + 4" in text
    assert "530 degrees of freedom" in text
    assert "2.6 data degrees of freedom per free parameter" in text


def test_no_trainable_parameters_gives_no_ratio():
    model = nn.Linear(2, 2).requires_grad_(False)
    report = capacity_report(model, 5, 2, 2)
    assert report["dof_per_param"] is None
    assert "no trainable parameters" in format_capacity(report)


@pytest.mark.parametrize("bad", [{"samples": -1}, {"inputs_per_sample": 2.5}, {"outputs_per_sample": True}])
def test_bad_sizes_are_refused(bad):
    args = {"samples": 1, "inputs_per_sample": 1, "outputs_per_sample": 1, **bad}
    with pytest.raises(ValueError):
        capacity_report(torch.nn.Linear(1, 1), **args)
