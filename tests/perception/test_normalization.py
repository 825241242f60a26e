import io

import numpy as np
import pytest
import torch

from agent.config import ModelConfig
from agent.models import Agent
from agent.perception.detection import _row_background
from agent.perception.normalization import KINDS, ObsNormalizer, row_background

SHAPE = (2, 3, 5)


def _batches(sizes, seed=0):
    """uint8 batches of uneven sizes, each pixel with its own mean and spread."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(30, 220, size=SHAPE)
    spread = rng.integers(0, 30, size=SHAPE)
    return [np.clip(centre + rng.normal(size=(n, *SHAPE)) * spread, 0, 255).astype(np.uint8) for n in sizes]


def _fit(kind, batches):
    norm = ObsNormalizer(kind, SHAPE)
    norm.train()
    for b in batches:
        norm.update(torch.from_numpy(b))
    return norm


def test_running_mean_and_var_match_numpy_over_uneven_batches():
    # 300 > the normalizer's internal chunk of 256 rows: a batch is itself merged in two parts.
    batches = _batches([1, 7, 300, 33, 2])
    norm = _fit("running", batches)
    data = np.concatenate(batches).astype(np.float64) / 255.0
    assert norm.count.item() == len(data)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), data.var(axis=0), rtol=0, atol=1e-12)
    assert norm.mean.dtype == torch.float64 and norm.var.dtype == torch.float64


def test_running_forward_standardizes_and_clips():
    batches = _batches([64, 17])
    norm = _fit("running", batches).eval()
    data = np.concatenate(batches).astype(np.float64) / 255.0
    x = batches[0][:5]
    expected = (x / 255.0 - data.mean(axis=0)) / np.sqrt(data.var(axis=0) + norm.eps)
    np.testing.assert_allclose(norm(torch.from_numpy(x)).numpy(), np.clip(expected, -norm.clip, norm.clip), atol=1e-5)

    # A pixel that never changed: a knife-sized step of 11/255 is divided by sqrt(eps) = 0.01 ...
    flat = ObsNormalizer("running", (1, 1, 2), clip=5.0)
    flat.update(torch.full((10, 1, 1, 2), 85, dtype=torch.uint8))
    flat.eval()
    out = flat(torch.tensor([[[[74, 0]]]], dtype=torch.uint8))
    assert out[0, 0, 0, 0].item() == pytest.approx(-11 / 255 / 0.01, rel=1e-4)
    # ... and a large step is clipped.
    assert out[0, 0, 0, 1].item() == -5.0


def test_mean_kinds_fit_once_on_the_first_batch_and_subtract():
    first, second = _batches([300, 40], seed=1)  # 300 rows: fitted in two chunks, still one fit
    for kind in ("channel_mean", "pixel_mean"):
        norm = _fit(kind, [first, second])
        data = first.astype(np.float64) / 255.0
        if kind == "channel_mean":
            expected_mean = data.mean(axis=(0, 2, 3)).reshape(SHAPE[0], 1, 1)
        else:
            expected_mean = data.mean(axis=0)
        np.testing.assert_allclose(norm.mean.numpy(), expected_mean, atol=1e-12)  # the second batch is ignored
        norm.eval()
        # count is the number of values behind each statistic: a channel mean averages every pixel.
        assert norm.count.item() == 300 * (SHAPE[1] * SHAPE[2] if kind == "channel_mean" else 1)
        x = torch.from_numpy(second[:3])
        np.testing.assert_allclose(norm(x).numpy(), (second[:3] / 255.0 - expected_mean), atol=1e-6)


def test_scale_divides_by_255_and_fits_nothing():
    norm = _fit("scale", _batches([10]))
    assert norm.count.item() == 0
    x = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)
    assert torch.allclose(ObsNormalizer("scale", (1, 1, 3))(x), torch.tensor([[[[0.0, 0.2, 1.0]]]]))


def test_row_contrast_zeroes_each_rows_background_and_keeps_a_knife_loud():
    frame = np.full((1, 2, 6, 40), 85, dtype=np.uint8)
    frame[0, :, 1] = 120  # a row of another flat colour: it is its own background
    frame[0, -1, 3, 10:15] = 74  # a knife, 11 darker than the wall
    frame[0, -1, 2:6, 30:34] = 230  # part of a fighter, far brighter
    norm = ObsNormalizer("row_contrast", (2, 6, 40), clip=3.0, contrast=4.0)
    norm.update(torch.from_numpy(frame))
    assert norm.count.item() == 0  # nothing fitted
    out = norm(torch.from_numpy(frame))[0, -1]
    assert out[3, 10:15].tolist() == [-11 / 4] * 5
    assert out[3, 30:34].tolist() == [3.0] * 4  # clipped
    assert out[1].abs().max().item() == 0.0 and out[0].abs().max().item() == 0.0
    assert out[3, 20].item() == 0.0


@pytest.mark.parametrize("width", [144, 160, 37, 5])
def test_row_contrast_background_is_the_detectors(width):
    rows = np.random.default_rng(width).integers(0, 256, (50, width), dtype=np.uint8)
    ours = row_background(torch.from_numpy(rows).float()).numpy()
    np.testing.assert_array_equal(ours, _row_background(rows).astype(np.float32))


@pytest.mark.parametrize("kind", ["channel_mean", "pixel_mean", "running"])
def test_a_frozen_normalizer_does_not_change(kind):
    first, second = _batches([50, 50], seed=2)
    norm = _fit(kind, [first])
    norm.eval()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    x = torch.from_numpy(second[:4])
    out_before = norm(x)
    norm.update(torch.from_numpy(second))  # eval mode: must be a no-op
    for k, v in norm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(norm(x), out_before)


def test_forward_never_updates_statistics_even_in_training_mode():
    norm = _fit("running", _batches([20]))
    before = norm.mean.clone(), norm.var.clone(), norm.count.clone()
    norm.train()
    norm(torch.from_numpy(_batches([20], seed=3)[0]))
    assert all(torch.equal(a, b) for a, b in zip(before, (norm.mean, norm.var, norm.count), strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_normalizer_state_survives_a_checkpoint_round_trip(kind):
    norm = _fit(kind, _batches([30, 11], seed=4))
    buffer = io.BytesIO()
    torch.save(norm.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = ObsNormalizer(kind, SHAPE)
    restored.load_state_dict(state)
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(restored, name), getattr(norm, name)), name
    restored.eval()
    norm.eval()
    x = torch.from_numpy(_batches([3], seed=5)[0])
    assert torch.equal(restored(x), norm(x))


def test_agent_checkpoint_carries_the_normalizer():
    agent = Agent((4, 16, 16), 3, ModelConfig(normalization="running", channels=[8], kernels=[4], strides=[2]))
    agent.normalizer.update(torch.randint(0, 256, (9, 4, 16, 16), dtype=torch.uint8))
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    other = Agent((4, 16, 16), 3, ModelConfig(normalization="running", channels=[8], kernels=[4], strides=[2]))
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert other.normalizer.count.item() == 9
    assert torch.equal(other.normalizer.mean, agent.normalizer.mean)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown normalization"):
        ObsNormalizer("batch", SHAPE)
