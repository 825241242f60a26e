import importlib
import json

import numpy as np
import pytest
import torch
from conftest import run_script
from torch import nn

from agent.config import ModelConfig
from agent.models import Agent
from agent.research.channels import (
    BACKGROUND,
    KNIFE,
    LinearOracleSpec,
    NormSpec,
    OracleSpec,
    SegHead,
    _correlate,
    channel_ablation,
    channel_weight_magnitudes,
    find_map_consumers,
    knife_contrast,
    net_surgery,
    normalize_maps,
    oracle_data,
    run_linear_oracle,
    run_normalization,
    run_oracle,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These are many small ops: on a shared 2-core machine a second thread mostly waits (10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = OracleSpec(channels=16, size=8, train=128, test=32, steps=150, optimizer="sgd", lr=0.1, ablation_samples=32)


def test_conv_magnitudes_are_per_input_channel():
    conv = nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 1] = 2.0  # 2 outputs x 3 x 3 weights of 2 read channel 1
    np.testing.assert_allclose(channel_weight_magnitudes(conv), [0.0, 2.0 * np.sqrt(18), 0.0])

    deconv = nn.ConvTranspose2d(3, 2, 3)  # weight (in, out, kh, kw)
    with torch.no_grad():
        deconv.weight.zero_()
        deconv.weight[2] = 1.0
    np.testing.assert_allclose(channel_weight_magnitudes(deconv), [0.0, 0.0, np.sqrt(18)])


def test_linear_after_flatten_is_regrouped_by_channel():
    linear = nn.Linear(3 * 2 * 2, 5)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:, 4:8] = 1.0  # flatten order (C, H, W): features 4..7 are channel 1
    np.testing.assert_allclose(channel_weight_magnitudes(linear, (3, 2, 2)), [0.0, np.sqrt(20), 0.0])
    assert channel_weight_magnitudes(linear).shape == (12,)  # without a map shape: one channel per feature


def test_finds_the_agents_map_readers_with_their_input_shapes():
    agent = Agent((4, 64, 144), 14, ModelConfig())
    x = torch.zeros(2, 4, 64, 144, dtype=torch.uint8)
    found = {c.name: c.in_shape for c in find_map_consumers(agent, lambda: (agent.get_value(x), agent.reconstruct(x)))}
    assert found["encoder.trunk.0"] == (4, 64, 144)  # the first conv over the frame stack
    assert found["encoder.code.1"] == tuple(agent.encoder.trunk_shape)  # linear behind the flatten
    assert found["critic.0"] == (64,)
    assert found["decoder.linear.0"] == (64,)
    assert "actor.0" not in found  # get_value and reconstruct never call the actor
    assert not any(agent.get_submodule(name).__class__ is nn.ReLU for name in found)


def test_ablation_ranks_a_planted_informative_channel_first():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, 4, 4, generator=gen)
    y = (x[:, 3] + 0.3 * torch.randn(256, 4, 4, generator=gen) > 0).float()
    torch.manual_seed(0)
    head = SegHead("pixel", 6, 4)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(100):
        loss = nn.functional.binary_cross_entropy_with_logits(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for mode in ("zero", "mean"):
        importance = channel_ablation(lambda v: nn.functional.binary_cross_entropy_with_logits(head(v), y), x, mode)
        assert importance.argmax() == 3
        assert importance[3] > 0.3 and np.delete(importance, 3).max() < 0.05
    assert torch.equal(x, x.clone())  # the input is left as it was
    with pytest.raises(ValueError):
        channel_ablation(lambda v: v.sum(), x, mode="noise")


def test_tiny_oracle_experiment_puts_weight_and_importance_on_the_oracle():
    result = run_oracle(TINY)
    blind = run_oracle(OracleSpec(**{**TINY.__dict__, "oracle": "shuffled"}))
    assert result["weight"]["rank"] == 1
    assert result["ablation"]["rank"] == 1
    assert result["ablation"]["share"] > 0.5
    assert result["accuracy"] > 0.97
    assert result["accuracy"] > result["accuracy_oracle_ablated"] + 0.1
    # Another sample's mask carries nothing about this one: the oracle channel is then not used.
    assert blind["ablation"]["share"] < 0.1
    assert blind["accuracy"] < result["accuracy"] - 0.1


def test_weight_magnitude_misleads_when_the_oracle_is_large():
    # At 100x the oracle needs only a tiny weight: ablation still finds it, raw magnitude does not stand out.
    result = run_oracle(OracleSpec(**{**TINY.__dict__, "oracle_scale": 100.0, "optimizer": "adam", "lr": 1e-2}))
    assert result["ablation"]["rank"] == 1
    assert result["effective_weight"]["rank"] == 1
    assert result["weight"]["share"] < result["effective_weight"]["share"]


def test_net_surgery_sits_at_a_near_zero_gradient():
    result = net_surgery(OracleSpec(**{**TINY.__dict__, "steps": 50}))
    surgery, init = result["surgery"], result["init"]
    assert surgery["accuracy"] == 1.0
    assert surgery["train_loss"] < 1e-3
    assert surgery["grad_norm"] < 1e-3 * init["grad_norm"]
    # SGD has nothing to follow there: the weights barely move, unlike from a random start.
    assert surgery["travel"] < 0.01 * init["travel"]
    assert surgery["trained_accuracy"] == 1.0


def test_correlate_matches_the_direct_sum():
    gen = torch.Generator().manual_seed(1)
    u, w = torch.randn(40, generator=gen), torch.randn(7, generator=gen)
    direct = torch.stack([(w * u[s:s + 7]).sum() for s in range(34)])
    assert torch.allclose(_correlate(u, w, 34), direct, atol=1e-5)


def test_linear_oracle_needs_more_pixels_than_channels():
    found = run_linear_oracle(LinearOracleSpec(channels=256, train_pixels=8192, test_pixels=2048, steps=40,
                                               ablation_channels=32))
    assert found["test_accuracy"] > 0.99 and found["weight_rank"] == 1
    assert found["ablation_share_estimate"] > 0.9
    # Four times more noise channels than training pixels: they fit the training set and the test suffers.
    drowned = run_linear_oracle(LinearOracleSpec(channels=8192, train_pixels=2048, test_pixels=2048, steps=40,
                                                 optimizer="adam", lr=0.05, ablation_channels=32))
    assert drowned["train_accuracy"] == 1.0
    assert drowned["test_accuracy"] < found["test_accuracy"] - 0.2


def test_knife_contrast_known_answers():
    rng = np.random.default_rng(0)
    frames = np.full((40, 2, 16, 20), BACKGROUND, dtype=np.uint8)
    for i in range(40):  # a bright object moving along the top rows; the knife's row stays flat
        c = rng.integers(0, 15)
        frames[i, :, 0:4, c:c + 5] = 200
    result = knife_contrast(frames, row=10, col=6)
    raw = result["raw"]
    assert raw["knife_delta"] == pytest.approx(BACKGROUND - KNIFE)
    # scale and channel_mean are affine with one constant: the knife's size against the spread is unchanged.
    for kind in ("scale", "channel_mean"):
        assert result[kind]["gain_vs_raw"] == pytest.approx(1.0, rel=1e-4)
    # pixel_mean removes the static scene: same knife, smaller spread.
    assert result["pixel_mean"]["knife_delta"] == pytest.approx(11 / 255, rel=1e-4)
    assert result["pixel_mean"]["gain_vs_raw"] > 1.0
    # running divides by the pixel's std, ~0 on the flat floor: 11/255 / sqrt(1e-4) = 4.31, clipped at 3.
    assert result["running"]["knife_delta"] == pytest.approx(3.0)
    # row_contrast: 11 gray levels below the row's background, in units of 4 levels.
    assert result["row_contrast"]["knife_delta"] == pytest.approx(11 / 4)
    assert result["row_contrast"]["gain_vs_raw"] > result["pixel_mean"]["gain_vs_raw"]


def test_normalize_maps_statistics():
    gen = torch.Generator().manual_seed(0)
    x_train = torch.rand(20, 3, 4, 4, generator=gen) * torch.tensor([1.0, 50.0, 300.0]).view(1, 3, 1, 1) + 10
    x_test = x_train[:5] + 1
    xs, _ = normalize_maps("standardize", x_train, x_test)
    assert torch.allclose(xs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(xs.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    xs, _ = normalize_maps("scale", x_train, x_test)
    assert xs.max().item() == pytest.approx(1.0)
    xm, xm_test = normalize_maps("mean", x_train, x_test)
    assert torch.allclose(xm.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(xm_test - xm[:5], torch.ones(1))  # the test set gets the training mean


def test_standardized_inputs_train_better_than_raw_ones():
    data_spec = OracleSpec(channels=16, size=8, train=128, test=32, oracle="none", feature_scale=100.0)
    data = oracle_data(data_spec)
    losses = {kind: run_normalization(NormSpec(normalization=kind, optimizer="sgd", lr=1e-2, steps=60,
                                               data=data_spec), data)["final_test_loss"]
              for kind in ("raw", "scale", "standardize")}
    # One learning rate for all: inputs in the hundreds blow the loss up, unit-scale inputs learn.
    assert losses["raw"] > 10
    assert losses["scale"] < 0.69 and losses["standardize"] < 0.69


@pytest.mark.slow  # about 10 s: a subprocess that imports torch, starts the emulator and draws 5 plots
def test_script_quick_run_writes_report_summary_and_plots(tmp_path):
    out = tmp_path / "diag"
    proc = run_script("diagnose_channels.py", "--out", str(out), "--quick", "--no-progress", timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert {"agent", "oracle", "large_c", "surgery", "normalization", "capacity", "settings"} <= set(report)
    assert report["settings"]["quick"] is True
    assert report["oracle"]["base"]["weight"]["rank"] >= 1
    assert report["agent"]["fresh agent"]["layers"][0]["layer"] == "encoder.trunk.0"
    assert len(report["agent"]["fresh agent"]["frame_ablation"]["recon_mse_mean"]) == 4
    assert report["capacity"]["trainable_params"] > 0
    summary = (out / "summary.md").read_text()
    assert "## 1." in summary and "## 2." in summary
    for plot in ("agent_weights.png", "oracle_channels.png", "oracle_variants.png", "large_c.png",
                 "normalization.png"):
        assert (out / plot).stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--out", "FILE"], "not a folder"),
    (["--out", "DIR", "--checkpoint", "missing.pt"], "no such file"),
    (["--out", "DIR", "--seed", "x"], "invalid int"),
    (["--out", "DIR", "--threads", "0"], "must be positive"),
    ([], "required"),
])
def test_script_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("x")
    args = [str(tmp_path / "file") if a == "FILE" else str(tmp_path / "d") if a == "DIR" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module("agent.commands.diagnose_channels").main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "d").exists()


def test_script_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module("agent.commands.diagnose_channels").main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--quick" in out and "--seed" in out
