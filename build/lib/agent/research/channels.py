"""Which input channels a network relies on, and what decides it.

Two tools that work on any model:
- `find_map_consumers` and `channel_weight_magnitudes`: the weight norm per input channel of every layer
  that reads a multi-channel map: a conv, or a linear layer behind a flatten, whose weights are regrouped
  by the channel they read.
- `channel_ablation`: how much the loss rises when one channel is replaced by zero or by its mean.

The experiments behind `scripts/diagnose_channels.py`:
- `run_oracle`: a synthetic two-class segmentation task on C distractor channels (post-ReLU feature maps,
  a few weakly informative) plus one oracle channel equal to the ground-truth mask, learned by a small
  head. Variants change the oracle's scale, the distractors' scale, their normalization, the oracle's
  alignment and the head.
- `run_linear_oracle`: the same question for up to about a million channels, with the per-pixel linear
  head a 1x1 conv is; see its docstring for how the data stay cheap.
- `net_surgery`: the head hand-set to read the oracle alone, and what training does from there.
- `knife_contrast`: what each input normalization of `agent.normalization` does to a 5x2 knife of
  contrast 11/255 against the spread of the rest of the input.
- `run_normalization`: the same linear head trained on raw, scaled, mean-subtracted or standardized feature
  maps, for a dense and an image-level task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent.config import ModelConfig
from agent.models import make_normalizer
from agent.perception.normalization import KINDS

# ---------------------------------------------------------------------------------------------------
# Weight magnitudes per input channel


@dataclass
class MapConsumer:
    """A layer with weights that reads a map of `in_shape` = (channels,) or (channels, height, width)."""

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.in_shape[0]


def find_map_consumers(model: nn.Module, run: Callable[[], object]) -> list[MapConsumer]:
    """The layers of `model` that read more than one channel, in the order `run()` calls them.

    `run` performs the forward passes to trace (e.g. `lambda: agent.get_action_and_value(obs)`). A
    linear layer fed by a flatten of an (N, C, H, W) map reads C channels of H x W weights each; any
    other linear layer reads one channel per input feature.
    """
    calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            hooks.append(module.register_forward_hook(
                lambda mod, inputs, _out, name=name: calls.append((name, mod, tuple(inputs[0].shape[1:])))
            ))
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    found: dict[str, MapConsumer] = {}
    previous: tuple[str, nn.Module, tuple[int, ...]] | None = None
    for name, module, shape in calls:
        in_shape: tuple[int, ...] | None = None
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            in_shape = shape
        elif isinstance(module, nn.Linear):
            in_shape = (module.in_features,)
            if (previous is not None and isinstance(previous[1], nn.Flatten) and len(previous[2]) == 3
                    and math.prod(previous[2]) == module.in_features):
                in_shape = previous[2]
        previous = (name, module, shape)
        if in_shape is not None and in_shape[0] > 1 and name not in found:
            found[name] = MapConsumer(name, module, in_shape)
    return list(found.values())


def channel_weights(module: nn.Module, in_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The weights of `module` grouped by the input channel they read: (channels, weights per channel).

    Conv2d weights (out, in, kh, kw) are grouped by `in`; ConvTranspose2d (in, out, kh, kw) by their
    first axis; Linear weights (out, C*H*W) by C when `in_shape` is (C, H, W), one input feature per
    channel otherwise.
    """
    weight = module.weight.detach().float()
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if module.groups != 1:
            raise ValueError(f"{type(module).__name__} with groups={module.groups}: channels are not shared")
        if isinstance(module, nn.Conv2d):
            weight = weight.transpose(0, 1)
        return weight.reshape(weight.shape[0], -1)
    if isinstance(module, nn.Linear):
        channels = in_shape[0] if in_shape is not None and len(in_shape) == 3 else weight.shape[1]
        if weight.shape[1] % channels:
            raise ValueError(f"in_shape {in_shape} does not fit {weight.shape[1]} input features")
        return weight.reshape(weight.shape[0], channels, -1).transpose(0, 1).reshape(channels, -1)
    raise TypeError(f"no channel layout known for {type(module).__name__}")


def channel_weight_magnitudes(module: nn.Module, in_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """L2 norm of the weights that read each input channel of `module` (see `channel_weights`)."""
    return channel_weights(module, in_shape).norm(dim=1).numpy().astype(np.float64)


def share(values: np.ndarray, index: int) -> float:
    """`values[index]` over the sum of the positive values (negative values count as 0)."""
    positive = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    total = positive.sum()
    return float(positive[index] / total) if total > 0 else 0.0


def rank(values: np.ndarray, index: int) -> int:
    """1 when `values[index]` is the largest; 1 + the number of values strictly above it otherwise."""
    values = np.asarray(values)
    return int((values > values[index]).sum()) + 1


def channel_summary(values: np.ndarray, index: int) -> dict:
    """Share, rank and ratio to the median of the others for channel `index` of `values`."""
    values = np.asarray(values, dtype=np.float64)
    others = np.delete(values, index)
    median = float(np.median(others)) if others.size else 0.0
    return {
        "share": share(values, index),
        "rank": rank(values, index),
        "over_median_other": float(values[index] / median) if median > 0 else None,
    }


# ---------------------------------------------------------------------------------------------------
# Channel ablation


@torch.no_grad()
def channel_ablation(loss_fn: Callable[[torch.Tensor], torch.Tensor | float], x: torch.Tensor,
                     mode: str = "mean", channels: list[int] | None = None) -> np.ndarray:
    """Loss with channel c (dim 1 of `x`) replaced, minus the loss of `x`, for each c in `channels`.

    `mode` "zero" fills the channel with 0; "mean" with its mean over the batch (and space), which
    removes what the channel says about each sample without moving the input off its usual range.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be zero or mean, got {mode!r}")
    base = float(loss_fn(x))
    x = x.clone()
    picked = range(x.shape[1]) if channels is None else channels
    out = np.empty(len(picked), dtype=np.float64)
    for i, c in enumerate(picked):
        saved = x[:, c].clone()
        x[:, c] = 0.0 if mode == "zero" else saved.mean()
        out[i] = float(loss_fn(x)) - base
        x[:, c] = saved
    return out


# ---------------------------------------------------------------------------------------------------
# The oracle-channel segmentation task

HEADS = ("pixel", "conv3x3", "pool_fc", "flatten_fc")
ORACLES = ("aligned", "transposed", "shuffled", "none")


@dataclass(frozen=True)
class OracleSpec:
    """One oracle experiment: data, head and training."""

    channels: int = 512
    """Distractor channels C; the oracle is channel C, concatenated last."""
    size: int = 8
    """Height and width of the maps (square, so that a transposed mask still fits)."""
    train: int = 256
    """Training maps."""
    test: int = 128
    """Test maps."""
    head: str = "pixel"
    """pixel (a 1x1 conv: one linear classifier shared by all pixels), conv3x3 (3x3 conv, ReLU, 1x1 conv),
    pool_fc (2x2 average pool, flatten, linear to every pixel) or flatten_fc (flatten, linear)."""
    hidden: int = 8
    """Hidden channels of the conv3x3 head."""
    oracle: str = "aligned"
    """aligned (the mask), transposed (the mask's transpose), shuffled (another sample's mask), none (0)."""
    oracle_scale: float = 1.0
    """The oracle channel holds 0 and this value."""
    feature_scale: float = 1.0
    """Typical size of the distractors (deep feature maps are not unit scale: VGG's conv5 runs to tens)."""
    standardize: bool = False
    """Standardize every channel (oracle included) with the training set's mean and std."""
    informative: float = 0.05
    """Share of distractors weakly correlated with a blurred mask (|corr| 0.1 to 0.3)."""
    optimizer: str = "adam"
    """adam, or sgd (with momentum 0.9)."""
    lr: float = 1e-2
    steps: int = 400
    batch: int = 32
    ablation_samples: int = 64
    """Test maps used for the per-channel ablation."""
    seed: int = 0

    def validate(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {', '.join(ORACLES)}, got {self.oracle!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.head == "pool_fc" and self.size % 2:
            raise ValueError("pool_fc needs an even size")


def blob_masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(n, size, size) binary masks, each the union of one to three random ellipses."""
    yy, xx = torch.meshgrid(torch.arange(size).float() + 0.5, torch.arange(size).float() + 0.5, indexing="ij")
    masks = torch.zeros(n, size, size)
    count = torch.randint(1, 4, (n, 1, 1), generator=gen)

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    for blob in range(3):
        cy, cx = draw(n, 1, 1) * size, draw(n, 1, 1) * size
        ry, rx = size * (0.12 + 0.2 * draw(n, 1, 1)), size * (0.12 + 0.2 * draw(n, 1, 1))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks = torch.maximum(masks, (inside & (blob < count)).float())
    return masks


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def distractor_params(spec: OracleSpec, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-channel correlation with the mask, scale and offset, shared by the training and test sets."""
    c = spec.channels
    informative = torch.rand(c, generator=gen) < spec.informative
    sign = torch.where(torch.rand(c, generator=gen) < 0.5, -1.0, 1.0)
    rho = torch.where(informative, (0.1 + 0.2 * torch.rand(c, generator=gen)) * sign, torch.zeros(c))
    scale = torch.exp(0.5 * torch.randn(c, generator=gen))  # channels of unequal size, as in real nets
    offset = torch.rand(c, generator=gen) - 0.5
    return {"rho": rho, "scale": scale, "offset": offset}


def oracle_maps(spec: OracleSpec, n: int, params: dict[str, torch.Tensor],
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` samples: maps (n, C + 1, S, S), the oracle last, and masks (n, S, S).

    Distractor c is `feature_scale * scale_c * relu(rho_c * hint + sqrt(1 - rho_c^2) * noise_c + offset_c)`
    with `hint` a blurred, standardized mask and `noise_c` smooth unit noise: non-negative, unequal in
    size, a few of them weakly informative, like the channels of a deep feature map.
    """
    c, s = spec.channels, spec.size
    masks = blob_masks(n, s, gen)
    hint = _blur(masks[:, None])
    hint = (hint - hint.mean()) / hint.std().clamp_min(1e-6)
    noise = _blur(torch.randn(n, c, s, s, generator=gen)) * 3.0  # a 3x3 mean of unit noise has std 1/3
    rho = params["rho"].view(1, c, 1, 1)
    features = F.relu(rho * hint + (1 - rho**2).sqrt() * noise + params["offset"].view(1, c, 1, 1))
    features = features * (spec.feature_scale * params["scale"].view(1, c, 1, 1))
    oracle = {
        "aligned": masks,
        "transposed": masks.transpose(1, 2),
        "shuffled": masks.roll(1, dims=0),
        "none": torch.zeros_like(masks),
    }[spec.oracle]
    return torch.cat([features, spec.oracle_scale * oracle[:, None]], dim=1), masks


class SegHead(nn.Module):
    """Maps (N, C, S, S) to per-pixel logits (N, S, S)."""

    def __init__(self, kind: str, channels: int, size: int, hidden: int = 8):
        super().__init__()
        self.kind, self.size = kind, size
        if kind == "pixel":
            self.net = nn.Sequential(nn.Conv2d(channels, 1, 1))
        elif kind == "conv3x3":
            self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
        elif kind == "pool_fc":
            self.net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(channels * (size // 2) ** 2, size**2))
        elif kind == "flatten_fc":
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(channels * size**2, size**2))
        else:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(len(x), self.size, self.size)


def _bce(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(head(x), y)


@torch.no_grad()
def _no_grad_bce(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(_bce(head, x, y))


@torch.no_grad()
def _accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((head(x) > 0).float() == y).float().mean())


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def train_head(head: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: OracleSpec,
               gen: torch.Generator) -> list[float]:
    """Minibatch training with `spec`'s optimizer; returns the training loss of every step."""
    opt = _optimizer(spec.optimizer, head.parameters(), spec.lr)
    losses = []
    for _ in range(spec.steps):
        idx = torch.randint(0, len(x), (spec.batch,), generator=gen)
        loss = _bce(head, x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def grad_norm(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Norm of the gradient of the mean loss over (x, y) with respect to all of `head`'s parameters."""
    head.zero_grad()
    _bce(head, x, y).backward()
    norm = torch.cat([p.grad.reshape(-1) for p in head.parameters()]).norm()
    head.zero_grad()
    return float(norm)


def oracle_data(spec: OracleSpec) -> dict[str, torch.Tensor]:
    """Training and test sets of `spec` (standardized when it asks), reproducible from its seed."""
    spec.validate()
    gen = torch.Generator().manual_seed(spec.seed)
    params = distractor_params(spec, gen)
    x_train, y_train = oracle_maps(spec, spec.train, params, gen)
    x_test, y_test = oracle_maps(spec, spec.test, params, gen)
    if spec.standardize:
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _first_consumer(head: SegHead, x: torch.Tensor) -> MapConsumer:
    return find_map_consumers(head, lambda: head(x[:2]))[0]


def analyse_head(head: SegHead, data: dict[str, torch.Tensor], ablation_samples: int,
                 mode: str = "mean") -> dict:
    """Accuracy, loss, and the oracle's (last channel's) share of weight magnitude and of ablation
    importance for a trained head. Lists of per-channel values are included for the plots."""
    x_train, x_test, y_test = data["x_train"], data["x_test"], data["y_test"]
    oracle = x_test.shape[1] - 1
    consumer = _first_consumer(head, x_test)
    magnitude = channel_weight_magnitudes(consumer.module, consumer.in_shape)
    # Weights of channels of unequal scale compare only once multiplied by how much each input varies.
    input_std = x_train.transpose(0, 1).reshape(x_train.shape[1], -1).std(dim=1).numpy()
    effective = magnitude * input_std
    xa, ya = x_test[:ablation_samples], y_test[:ablation_samples]
    with torch.no_grad():
        importance = channel_ablation(lambda v: _bce(head, v, ya), xa, mode=mode)
        x_blind = x_test.clone()
        x_blind[:, oracle] = x_test[:, oracle].mean()
        test_loss = float(_bce(head, x_test, y_test))
    return {
        "accuracy": _accuracy(head, x_test, y_test),
        "test_loss": test_loss,
        "accuracy_oracle_ablated": _accuracy(head, x_blind, y_test),
        "majority_accuracy": float(max(y_test.mean(), 1 - y_test.mean())),
        "weight": channel_summary(magnitude, oracle),
        "weight_energy_share": share(magnitude**2, oracle),
        "effective_weight": channel_summary(effective, oracle),
        "ablation": {**channel_summary(importance, oracle), "oracle_loss_increase": float(importance[oracle]),
                     "mode": mode},
        "layer": consumer.name,
        "magnitudes": magnitude.tolist(),
        "importance": importance.tolist(),
    }


def run_oracle(spec: OracleSpec) -> dict:
    """Trains `spec`'s head on its task; returns `analyse_head`'s numbers plus the training record."""
    data = oracle_data(spec)
    torch.manual_seed(spec.seed)
    head = SegHead(spec.head, spec.channels + 1, spec.size, spec.hidden)
    start = _flat_params(head)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    losses = train_head(head, data["x_train"], data["y_train"], spec, gen)
    result = analyse_head(head, data, spec.ablation_samples)
    result.update({
        "spec": asdict(spec),
        "params": sum(p.numel() for p in head.parameters()),
        "train_loss_final": float(np.mean(losses[-20:])),
        "train_losses": losses,
        "weight_travel": float((_flat_params(head) - start).norm()),
        "weight_init_norm": float(start.norm()),
    })
    return result


# ---------------------------------------------------------------------------------------------------
# Net surgery


@torch.no_grad()
def oracle_only_(head: SegHead, oracle: int, oracle_value: float, gain: float) -> None:
    """Hand-sets `head` to read channel `oracle` alone: logit = gain * (mask - 1/2), every other weight 0.

    `oracle_value` is what the oracle holds on the mask (0 elsewhere). pixel and conv3x3 heads only.
    """
    for p in head.parameters():
        p.zero_()
    if head.kind == "pixel":
        layer = head.net[0]
        layer.weight[0, oracle] = gain / oracle_value
        layer.bias[0] = -gain / 2
    elif head.kind == "conv3x3":
        conv, _, out = head.net
        conv.weight[0, oracle, 1, 1] = 1.0 / oracle_value  # hidden unit 0 = relu(mask) = mask
        out.weight[0, 0] = gain
        out.bias[0] = -gain / 2
    else:
        raise ValueError(f"net surgery is written for the pixel and conv3x3 heads, not {head.kind}")


def net_surgery(spec: OracleSpec, gain: float = 20.0) -> dict:
    """Loss, accuracy and gradient norm of a head hand-set to the oracle, then how far training moves it.

    The numbers beside them: the same head at its random initialization, and after training from there
    (`spec.steps` steps of `spec.optimizer`, the same as the run from the hand-set weights).
    """
    if spec.standardize or spec.oracle != "aligned":
        raise ValueError("net surgery needs the raw, aligned oracle")
    data = oracle_data(spec)
    x, y = data["x_train"], data["y_train"]
    oracle = spec.channels
    torch.manual_seed(spec.seed)
    fresh = SegHead(spec.head, spec.channels + 1, spec.size, spec.hidden)
    surgery = SegHead(spec.head, spec.channels + 1, spec.size, spec.hidden)
    oracle_only_(surgery, oracle, spec.oracle_scale, gain)
    result: dict = {"spec": asdict(spec), "gain": gain}
    for name, head in (("init", fresh), ("surgery", surgery)):
        result[name] = {"train_loss": _no_grad_bce(head, x, y),
                        "test_loss": _no_grad_bce(head, data["x_test"], data["y_test"]),
                        "accuracy": _accuracy(head, data["x_test"], data["y_test"]),
                        "grad_norm": grad_norm(head, x, y)}
    for name, head in (("init", fresh), ("surgery", surgery)):
        consumer = _first_consumer(head, x)
        start = _flat_params(head)
        oracle_start = channel_weights(consumer.module, consumer.in_shape)[oracle].clone()
        train_head(head, x, y, spec, torch.Generator().manual_seed(spec.seed + 1))
        travel = _flat_params(head) - start
        weight = channel_weights(consumer.module, consumer.in_shape)
        distractors = weight[:oracle]
        result[name].update({
            "trained_accuracy": _accuracy(head, data["x_test"], data["y_test"]),
            "trained_test_loss": _no_grad_bce(head, data["x_test"], data["y_test"]),
            "trained_grad_norm": grad_norm(head, x, y),
            "travel": float(travel.norm()),
            "travel_relative": float(travel.norm() / start.norm().clamp_min(1e-12)),
            "oracle_weight_change": float((weight[oracle] - oracle_start).norm()),
            "distractor_weight_max": float(distractors.abs().max()),
            "distractor_weight_norm": float(distractors.norm()),
        })
    return result


# ---------------------------------------------------------------------------------------------------
# A million channels: the per-pixel linear head on cheap structured data


@dataclass(frozen=True)
class LinearOracleSpec:
    """One run of the per-pixel linear head (a 1x1 conv) on C noise channels and the oracle."""

    channels: int = 1 << 20
    train_pixels: int = 1 << 17
    """Training samples (pixels); a 1x1 conv treats every pixel of every image as one."""
    test_pixels: int = 1 << 15
    batch: int = 0
    """Pixels per step, a contiguous block of the training set; 0: the whole set (full-batch)."""
    optimizer: str = "sgd"
    lr: float = 1.0
    steps: int = 60
    foreground: float = 0.3
    """Share of pixels in the mask."""
    ablation_channels: int = 256
    """Distractors sampled for the ablation (all of them is C passes)."""
    seed: int = 0

    def validate(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if min(self.channels, self.train_pixels, self.test_pixels, self.steps) < 1:
            raise ValueError("channels, pixels and steps must be positive")


def _correlate(u: torch.Tensor, w: torch.Tensor, n_out: int) -> torch.Tensor:
    """z[s] = sum_j w[j] * u[s + j] for s < n_out, by FFT (differentiable in w)."""
    n = 1 << (u.numel() + w.numel() - 2).bit_length()
    z = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(w.flip(0), n), n)
    return z[w.numel() - 1: w.numel() - 1 + n_out]


def run_linear_oracle(spec: LinearOracleSpec) -> dict:
    """The oracle experiment at up to ~a million channels with the per-pixel linear head.

    Pixel s reads the C distractor values u[s], u[s+1], ..., u[s+C-1] of one long unit-Gaussian
    sequence u, plus the oracle (its label). Every channel is then unit noise, and the logits of all
    pixels are one cross-correlation of u with the weights, computed by FFT: a step costs
    O((P + C) log(P + C)) instead of the O(P C) of a dense P x C input that would not fit in memory at
    C = 2**20. The rows are shifted copies of one sequence (a Toeplitz design), but the inner product of
    two rows is still a sum of products of independent noise, which is all a linear model sees.
    """
    spec.validate()
    gen = torch.Generator().manual_seed(spec.seed)
    c = spec.channels
    u_train = torch.randn(spec.train_pixels + c - 1, generator=gen)
    y_train = (torch.rand(spec.train_pixels, generator=gen) < spec.foreground).float()
    u_test = torch.randn(spec.test_pixels + c - 1, generator=gen)
    y_test = (torch.rand(spec.test_pixels, generator=gen) < spec.foreground).float()
    bound = 1 / math.sqrt(c + 1)  # nn.Linear's and nn.Conv2d's default initialization
    w = ((torch.rand(c, generator=gen) * 2 - 1) * bound).requires_grad_()
    w_oracle = ((torch.rand(1, generator=gen) * 2 - 1) * bound).requires_grad_()
    bias = ((torch.rand(1, generator=gen) * 2 - 1) * bound).requires_grad_()
    opt = _optimizer(spec.optimizer, [w, w_oracle, bias], spec.lr)
    batch = spec.batch if 0 < spec.batch < spec.train_pixels else spec.train_pixels
    losses = []
    for _ in range(spec.steps):
        start = int(torch.randint(0, spec.train_pixels - batch + 1, (1,), generator=gen))
        y = y_train[start:start + batch]
        z = _correlate(u_train[start:start + batch + c - 1], w, batch) + w_oracle * y + bias
        loss = F.binary_cross_entropy_with_logits(z, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        w_d, w_o = w.detach(), float(w_oracle)
        z_train = _correlate(u_train, w_d, spec.train_pixels) + w_o * y_train + bias
        z_test = _correlate(u_test, w_d, spec.test_pixels) + w_o * y_test + bias

        def loss_of(z: torch.Tensor) -> float:
            return float(F.binary_cross_entropy_with_logits(z, y_test))

        # Ablation by subtraction: replacing channel j by its mean changes each logit by w_j (mean - x_j).
        base = loss_of(z_test)
        oracle_importance = loss_of(z_test - w_o * (y_test - y_test.mean())) - base
        picked = torch.randperm(c, generator=gen)[: spec.ablation_channels]
        positions = torch.arange(spec.test_pixels)
        distractor_importance = np.array([
            loss_of(z_test - w_d[j] * (u_test[positions + j] - u_test[positions + j].mean())) - base
            for j in picked.tolist()
        ])
    magnitude = w_d.abs()
    mean_distractor = float(np.clip(distractor_importance, 0, None).mean())
    oracle_std = float(y_train.std())
    return {
        "spec": asdict(spec),
        "train_accuracy": float(((z_train > 0).float() == y_train).float().mean()),
        "test_accuracy": float(((z_test > 0).float() == y_test).float().mean()),
        "test_loss": base,
        "majority_accuracy": float(max(y_test.mean(), 1 - y_test.mean())),
        "train_loss_final": losses[-1],
        "oracle_weight": abs(w_o),
        "distractor_weight_median": float(magnitude.median()),
        "distractor_weight_max": float(magnitude.max()),
        "weight_share": abs(w_o) / (abs(w_o) + float(magnitude.sum())),
        "weight_energy_share": w_o**2 / (w_o**2 + float(magnitude.square().sum())),
        "weight_rank": int((magnitude > abs(w_o)).sum()) + 1,
        "weight_over_median": abs(w_o) / max(float(magnitude.median()), 1e-30),
        # Distractors have unit std; the oracle's is that of a Bernoulli(foreground) label.
        "effective_weight_share": abs(w_o) * oracle_std / (abs(w_o) * oracle_std + float(magnitude.sum())),
        "ablation_oracle_loss_increase": oracle_importance,
        "ablation_distractor_mean": float(distractor_importance.mean()),
        "ablation_distractor_max": float(distractor_importance.max()),
        # Estimated from the sample: the oracle's share of the total over all C + 1 channels.
        "ablation_share_estimate": max(oracle_importance, 0.0)
        / max(max(oracle_importance, 0.0) + c * mean_distractor, 1e-30),
        "ablation_sampled": len(picked),
        "pixels_per_channel": spec.train_pixels / c,
    }


# ---------------------------------------------------------------------------------------------------
# Input normalization and a 5x2 knife of contrast 11/255

BACKGROUND, KNIFE = 85, 74
KNIFE_ROWS = (33, 55)
"""Rows of the high and low throws in the 64x144 play band (native rows ~129 and ~151, minus 96)."""
NORMALIZATIONS = ("raw",) + KINDS
"""raw: the uint8 values as floats, 0 to 255; then the kinds of `agent.normalization`."""


class RawInput(nn.Module):
    """No normalization at all: pixels as floats in [0, 255]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def fitted_normalizer(kind: str, frames: torch.Tensor) -> nn.Module:
    """The agent's normalizer of `kind` (the model config's clip and contrast) fitted on uint8 `frames`
    (N, *shape), frozen (eval mode)."""
    if kind == "raw":
        return RawInput().eval()
    normalizer = make_normalizer(tuple(frames.shape[1:]), ModelConfig(normalization=kind))
    normalizer.train()
    normalizer.update(frames)
    return normalizer.eval()


@torch.no_grad()
def knife_contrast(frames: np.ndarray, row: int = KNIFE_ROWS[0], col: int | None = None,
                   kinds: tuple[str, ...] = NORMALIZATIONS) -> dict[str, dict]:
    """What each normalization, fitted on `frames`, does to a knife planted at (row, col).

    `frames` are uint8 (N, C, H, W) observations; the knife goes into the newest channel. For each kind:
    `knife_delta`, the mean change of the normalized input on the knife's pixels; `spread`, the std of
    the normalized input over all frames and pixels; `relative_contrast` = delta / spread, the knife's
    size against what the first layer sees everywhere else; `gain_vs_raw` is that over raw's.
    """
    col = (frames.shape[-1] - 5) // 2 if col is None else col
    clean = frames[:, -1, row:row + 2, col:col + 5]
    keep = (clean == BACKGROUND).all(axis=(1, 2))  # frames where a fighter does not cover the spot
    if not keep.any():
        raise ValueError(f"no frame shows plain background at row {row}, column {col}")
    base = torch.from_numpy(frames)
    with_knife = base.clone()
    with_knife[:, -1, row:row + 2, col:col + 5] = KNIFE
    out: dict[str, dict] = {}
    for kind in kinds:
        normalizer = fitted_normalizer(kind, base)
        clean_out, knife_out = normalizer(base), normalizer(with_knife)
        delta = (knife_out - clean_out)[torch.from_numpy(keep), -1, row:row + 2, col:col + 5]
        spread = float(clean_out.std())
        out[kind] = {"knife_delta": float(delta.abs().mean()), "spread": spread,
                     "relative_contrast": float(delta.abs().mean()) / spread if spread > 0 else None,
                     "input_min": float(clean_out.min()), "input_max": float(clean_out.max())}
    raw = out.get("raw", {}).get("relative_contrast")
    for values in out.values():
        values["gain_vs_raw"] = values["relative_contrast"] / raw if raw and values["relative_contrast"] else None
    return out


FEATURE_NORMS = ("raw", "scale", "mean", "scale_mean", "standardize")
"""How `run_normalization` prepares feature maps: as they come (non-negative, up to a few hundred, like
raw pixels), divided by the training maximum (to [0, 1]), minus each channel's training mean (VGG's mean
RGB on raw pixels), both (the project's channel_mean), or standardized per channel."""


def normalize_maps(kind: str, x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x_train` and `x_test` (N, C, H, W) normalized by `kind`, with statistics of the training set."""
    if kind not in FEATURE_NORMS:
        raise ValueError(f"normalization must be one of {', '.join(FEATURE_NORMS)}, got {kind!r}")
    dims = (0, 2, 3)
    if kind in ("scale", "scale_mean"):
        top = x_train.max()
        x_train, x_test = x_train / top, x_test / top
    if kind in ("mean", "scale_mean", "standardize"):
        mean = x_train.mean(dim=dims, keepdim=True)
        x_train, x_test = x_train - mean, x_test - mean
    if kind == "standardize":
        std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-6)
        x_train, x_test = x_train / std, x_test / std
    return x_train, x_test


@dataclass(frozen=True)
class NormSpec:
    """One normalization run: the same per-pixel linear head (a 1x1 conv), one way of preparing its input."""

    task: str = "segment"
    """segment (the per-pixel mask: dense prediction) or classify (one label per map: is the mask larger
    than the training median?)."""
    normalization: str = "raw"
    optimizer: str = "adam"
    lr: float = 1e-2
    steps: int = 400
    batch: int = 32
    eval_every: int = 20
    data: OracleSpec = OracleSpec(oracle="none", feature_scale=100.0, train=1024)
    """The maps: the oracle task's distractors alone (no oracle), at the scale of raw pixels."""
    seed: int = 0

    def validate(self) -> None:
        if self.task not in ("segment", "classify"):
            raise ValueError(f"task must be segment or classify, got {self.task!r}")
        if self.normalization not in FEATURE_NORMS:
            raise ValueError(f"normalization must be one of {', '.join(FEATURE_NORMS)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")


def run_normalization(spec: NormSpec, data: dict[str, torch.Tensor] | None = None) -> dict:
    """Trains the head of `spec` on normalized maps; returns its test-loss curve and final numbers.

    `data` is `oracle_data(spec.data)`, passed in to share it between runs. A run whose loss stops
    being finite is recorded as diverged, with its curve up to there.
    """
    spec.validate()
    data = oracle_data(spec.data) if data is None else data
    x_train, x_test = normalize_maps(spec.normalization, data["x_train"], data["x_test"])
    y_train, y_test = data["y_train"], data["y_test"]
    if spec.task == "classify":
        threshold = y_train.mean(dim=(1, 2)).median()
        y_train = (y_train.mean(dim=(1, 2)) > threshold).float()
        y_test = (y_test.mean(dim=(1, 2)) > threshold).float()
    torch.manual_seed(spec.seed)
    head = SegHead("pixel", x_train.shape[1], x_train.shape[-1])

    def predict(x: torch.Tensor) -> torch.Tensor:
        logits = head(x)
        return logits.mean(dim=(1, 2)) if spec.task == "classify" else logits

    opt = _optimizer(spec.optimizer, head.parameters(), spec.lr)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    curve: dict[str, list[float]] = {"step": [], "test_loss": [], "accuracy": []}

    def evaluate(step: int) -> bool:
        with torch.no_grad():
            logits = predict(x_test)
            loss = float(F.binary_cross_entropy_with_logits(logits, y_test))
        curve["step"].append(step)
        curve["test_loss"].append(loss)
        curve["accuracy"].append(float(((logits > 0).float() == y_test).float().mean()))
        return math.isfinite(loss)

    diverged = not evaluate(0)
    for step in range(1, spec.steps + 1):
        if diverged:
            break
        idx = torch.randint(0, len(x_train), (spec.batch,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(predict(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            diverged = True
        elif step % spec.eval_every == 0 or step == spec.steps:
            diverged = not evaluate(step)
    return {"spec": asdict(spec), "curve": curve, "diverged": diverged,
            "final_test_loss": curve["test_loss"][-1], "final_accuracy": curve["accuracy"][-1],
            "input_range": [float(x_train.min()), float(x_train.max())],
            "input_mean": float(x_train.mean())}
