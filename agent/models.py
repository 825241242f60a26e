"""The agent: a shared conv encoder ending in a tanh code, and an actor, a critic and a decoder on it.

The decoder reconstructs the newest frame of the stack, not all four: that is the frame the policy acts
on and the one a knife must survive in; the three older frames show the same scene a few pixels earlier,
and decoding them would quadruple the decoder's output (and cost) without asking anything new of the code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical

from agent.config import ModelConfig
from agent.device import computes_bf16
from agent.normalization import ObsNormalizer

# Orthogonal-init gains: ReLU trunk, a near-uniform initial policy, a unit-scale critic.
GAINS = {"trunk": math.sqrt(2), "actor": 0.01, "critic": 1.0, "code": 1.0}

DECODER_START_GRAY = 85
"""The decoder's first picture is this flat gray (the play band's wall) rather than sigmoid(0) = 128: a
first error that is large and the same everywhere drives every unit of the tanh code into saturation
within the first 30-100 Adam steps of an autoencoder, and the code never recovers (scripts/recon_report.py
measured a validation mse stuck at the mean image's, 0.0047, after 3,000 steps)."""


def make_normalizer(obs_shape: tuple[int, ...], cfg: ModelConfig) -> ObsNormalizer:
    """The input normalizer `cfg` asks for (kind, clip and contrast), unfitted."""
    return ObsNormalizer(cfg.normalization, obs_shape, clip=cfg.norm_clip, contrast=cfg.norm_contrast)


def layer_init(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class BlockConvTranspose2d(nn.ConvTranspose2d):
    """The decoder's last transposed conv (kernel 8, stride 4, to one channel at full resolution),
    computed on the CPU as a transposed conv of stride 1 to 4 x 4 blocks of pixels held in channels,
    which pixel_shuffle lays out as the frame: the same function of the same parameters (the state
    dict is a ConvTranspose2d's). oneDNN draws 16 channels at stride 1 far faster than one at stride 4:
    on one CPU thread, forward and backward of 32 frames took 5.9 ms instead of 12.1, and a training
    step of recon_report 32.9 ms instead of 37.9. On other devices, where it is unmeasured, and for a
    layer whose kernel is not a whole number of strides, it is a ConvTranspose2d."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        s = self.stride[0]
        (kh, kw), (oh, ow) = self.kernel_size, self.output_padding
        folds = (self.stride == (s, s) and s > 1 and kh % s == 0 and kw % s == 0 and self.padding == (0, 0)
                 and self.dilation == (1, 1) and self.groups == 1)
        if not folds or output_size is not None or x.device.type != "cpu":
            return super().forward(x, output_size)
        # Kernel (in, out, kh, kw) -> (in, out * s * s, kh / s, kw / s): output channel o * s * s + i * s + j
        # draws pixel (i, j) of each s x s block of channel o, where pixel_shuffle puts it.
        i, o = self.weight.shape[:2]
        kernel = self.weight.reshape(i, o, kh // s, s, kw // s, s).permute(0, 1, 3, 5, 2, 4)
        blocks = nn.functional.conv_transpose2d(x, kernel.reshape(i, o * s * s, kh // s, kw // s))
        # output_padding: rows and columns past the last block, which only the bias reaches.
        frame = nn.functional.pad(nn.functional.pixel_shuffle(blocks, s), (0, ow, 0, oh))
        return frame if self.bias is None else frame + self.bias.view(1, -1, 1, 1)


class ColumnCode(nn.Module):
    """The trunk's map -> a tanh code laid out in columns: `units` values for each of the map's columns
    (a conv over the map's full height, 3 columns wide), then `features_dim - units * columns` values
    for the whole frame (a linear over the flattened map).

    A dense code has its own weights for every x of the map; the column conv shares one set across x,
    so what the code learned to keep at one place it keeps at every place, with 247k parameters in the
    agent instead of 668k. Measured with scripts/recon_report.py's defaults: knife recall 0.81 (dense:
    0.82) at 1.27x the plain loss's mse (dense: 1.30x), and less hedging (recall by chance 0.26, dense
    0.35); PPO learns as fast over 80 updates. Not the default: the gain is within run-to-run spread."""

    def __init__(self, trunk_shape: tuple[int, int, int], features_dim: int, units: int):
        super().__init__()
        ch, h, w = trunk_shape
        rest = features_dim - units * w
        if rest < 1:
            raise ValueError(f"model.features_dim={features_dim} leaves no whole-frame units beside "
                             f"{units} column units x {w} columns: lower model.column_units")
        self.columns = layer_init(nn.Conv2d(ch, units, (h, 3), padding=(0, 1)), GAINS["code"])
        self.rest = layer_init(nn.Linear(ch * h * w, rest), GAINS["code"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.cat([self.columns(x).flatten(1), self.rest(x.flatten(1))], 1))


class ColumnDecode(nn.Module):
    """The mirror of ColumnCode: a column code -> the trunk's map, by a transposed conv over each column's
    units and the whole-frame units (the same at every column)."""

    def __init__(self, trunk_shape: tuple[int, int, int], features_dim: int, units: int):
        super().__init__()
        ch, h, w = trunk_shape
        self.units, self.width = units, w
        self.deconv = layer_init(nn.ConvTranspose2d(features_dim - units * w + units, ch, (h, 3), padding=(0, 1)),
                                 GAINS["trunk"])

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        split = self.units * self.width
        columns = code[:, :split].view(-1, self.units, 1, self.width)
        rest = code[:, split:, None, None].expand(-1, -1, 1, self.width)
        return torch.relu(self.deconv(torch.cat([columns, rest], 1)))


class Encoder(nn.Module):
    """Conv trunk -> tanh code of `features_dim` values in (-1, 1): dense (linear over the whole map) or
    laid out in columns (ColumnCode), as `model.code_layout` says."""

    def __init__(self, obs_shape: tuple[int, int, int], cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = obs_shape[0]
        for out_ch, k, s in zip(cfg.channels, cfg.kernels, cfg.strides, strict=True):
            layers += [layer_init(nn.Conv2d(in_ch, out_ch, k, s), GAINS["trunk"]), nn.ReLU()]
            in_ch = out_ch
        self.trunk = nn.Sequential(*layers)
        # A dry pass gives every conv's input size (for the decoder) and the flatten size.
        self.spatial_sizes: list[tuple[int, int]] = []
        with torch.no_grad():
            x = torch.zeros(1, *obs_shape)
            for layer in self.trunk:
                if isinstance(layer, nn.Conv2d):
                    if x.shape[-2] < layer.kernel_size[0] or x.shape[-1] < layer.kernel_size[1]:
                        raise ValueError(f"the conv trunk shrinks a {tuple(obs_shape)} observation to nothing")
                    self.spatial_sizes.append(tuple(x.shape[-2:]))
                x = layer(x)
        self.trunk_shape = tuple(x.shape[1:])
        self.features_dim = cfg.features_dim
        if cfg.code_layout == "columns":
            self.code = ColumnCode(self.trunk_shape, cfg.features_dim, cfg.column_units)
        else:
            self.code = nn.Sequential(
                nn.Flatten(), layer_init(nn.Linear(x[0].numel(), cfg.features_dim), GAINS["code"]), nn.Tanh()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(self.trunk(x))


class Refine(nn.Module):
    """The decoder's last step at full resolution (`model.refine_channels`): 3x3 convs, ReLU between, on
    the decoder's logits, their output added to them.

    The last transposed conv (kernel 8, stride 4) draws each pixel from the 2x2 nearest positions of a
    map four times coarser. Beside a fighter it leaves a faint halo: a pixel or two 6-7 gray levels off
    the wall in the one to five columns between the fighter and a knife flying next to it, which joins
    the two into one group too large for the detector to call a knife. Of the knives one wall column
    from a fighter, recon_report's training redrew 4% without a Refine (24,000 steps) and 75% with 16
    channels and 3 layers (12,000 steps). The last conv starts at zero: a fresh Refine adds nothing.

    With `bf16`, the convs run in bfloat16 where the hardware computes it (`computes_bf16`), the sum with
    the logits in float32. Full-resolution convs from and to one channel are slow in float32 on a CPU:
    with 16 channels in 3 layers a 2-thread training step of recon_report took 72-88 ms in float32 and
    39 ms in bfloat16 (21 ms without a refinement), and learned the same (README).
    """

    def __init__(self, channels: int, layers: int, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        convs: list[nn.Module] = []
        in_ch = 1
        for _ in range(layers - 1):
            convs += [nn.Conv2d(in_ch, channels, 3, padding=1), nn.ReLU()]
            in_ch = channels
        convs.append(nn.Conv2d(in_ch, 1, 3, padding=1))
        nn.init.zeros_(convs[-1].weight)
        nn.init.zeros_(convs[-1].bias)
        self.convs = nn.Sequential(*convs)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        bf16 = self.bf16 and computes_bf16(logits.device)
        with torch.autocast(logits.device.type, dtype=torch.bfloat16, enabled=bf16):
            correction = self.convs(logits)
        return logits + correction.float()


class Decoder(nn.Module):
    """Mirrors the encoder: linear (or ColumnDecode) -> transposed convs -> Refine (when
    model.refine_channels is not 0) -> sigmoid, one frame in [0, 1]."""

    def __init__(self, encoder: Encoder, cfg: ModelConfig):
        super().__init__()
        ch, h, w = encoder.trunk_shape
        self.trunk_shape = (ch, h, w)
        # code -> the trunk's map. Named `linear` after the dense layout's layer: checkpoints key on it.
        if cfg.code_layout == "columns":
            self.linear = ColumnDecode(self.trunk_shape, encoder.features_dim, cfg.column_units)
        else:
            self.linear = nn.Sequential(
                layer_init(nn.Linear(encoder.features_dim, ch * h * w), GAINS["trunk"]), nn.ReLU()
            )
        layers: list[nn.Module] = []
        convs = list(zip(cfg.channels, cfg.kernels, cfg.strides, encoder.spatial_sizes, strict=True))
        for idx in reversed(range(len(convs))):
            in_ch, k, s, (out_h, out_w) = convs[idx]
            out_ch = convs[idx - 1][0] if idx > 0 else 1
            # output_padding recovers the rows and columns a strided conv dropped.
            pad = (out_h - ((h - 1) * s + k), out_w - ((w - 1) * s + k))
            deconv = BlockConvTranspose2d if idx == 0 else nn.ConvTranspose2d  # the full-resolution one is folded
            layers.append(deconv(in_ch, out_ch, k, s, output_padding=pad))
            if idx > 0:
                layers.append(nn.ReLU())
            h, w = out_h, out_w
        self.deconv = nn.Sequential(*layers)
        gray = DECODER_START_GRAY / 255.0
        nn.init.constant_(self.deconv[-1].bias, math.log(gray / (1.0 - gray)))
        self.refine = (Refine(cfg.refine_channels, cfg.refine_layers, cfg.refine_bf16)
                       if cfg.refine_channels else nn.Identity())

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.linear(code).view(-1, *self.trunk_shape)
        return torch.sigmoid(self.refine(self.deconv(x)))


LOCATOR_PRIOR_FLOOR = 1e-4
"""The least share of frames `Locator.fit_prior` credits a cell with objects (cells never seen to hold one)."""


class Locator(nn.Module):
    """Code -> one logit per cell of a grid over the newest frame: does the cell hold a small object?

    Trained with `recon.locate_coef` against the detector's object masks (`targets`), it asks the code to
    say linearly where the knives are. The decoder's loss alone leaves that to be found through the
    decoder's layers, and a decoder unsure where a knife is draws it faintly all along its row; with this
    head the code learns the place directly, in a form the actor and critic can read as well."""

    def __init__(self, features_dim: int, frame_shape: tuple[int, int], cell: tuple[int, int]):
        super().__init__()
        self.cell = (int(cell[0]), int(cell[1]))
        self.grid = (math.ceil(frame_shape[0] / self.cell[0]), math.ceil(frame_shape[1] / self.cell[1]))
        self.linear = nn.Linear(features_dim, self.grid[0] * self.grid[1])
        nn.init.zeros_(self.linear.weight)
        nn.init.constant_(self.linear.bias, math.log(LOCATOR_PRIOR_FLOOR / (1 - LOCATOR_PRIOR_FLOOR)))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.linear(code)

    @torch.no_grad()
    def fit_prior(self, masks: torch.Tensor, chunk: int = 4096) -> None:
        """Sets each cell's bias to the log-odds of the share of `masks` (N, h, w) whose object touches it.

        The weights start at zero, so the head first guesses that share everywhere and passes no gradient
        to the code. A head that starts wrong in the same direction for many frames does harm: random
        weights, or one bias for every cell, leave an error of one sign that the head can shrink fastest
        through the code (Adam moves a bias only about lr per step), pushing the same tanh units towards
        +-1 on every frame; measured with scripts/recon_report.py, a bias of -7 for every cell left the
        autoencoder's mse stuck near 0.0025 (against 0.0015) at object_weight 200 and 300."""
        total = torch.zeros(self.linear.out_features)
        for start in range(0, len(masks), chunk):
            total += self.targets(masks[start:start + chunk]).sum(0).cpu()
        share = (total / max(len(masks), 1)).clamp(LOCATOR_PRIOR_FLOOR, 1 - LOCATOR_PRIOR_FLOOR)
        self.linear.bias.copy_(torch.log(share / (1 - share)))

    def targets(self, masks: torch.Tensor) -> torch.Tensor:
        """bool object masks (N, h, w) -> (N, cells) float: 1 where a cell holds any masked pixel."""
        return nn.functional.max_pool2d(masks.unsqueeze(1).float(), self.cell, ceil_mode=True).flatten(1)


def _head(features_dim: int, hidden: int, out: int, gain: float) -> nn.Module:
    if hidden == 0:
        return layer_init(nn.Linear(features_dim, out), gain)
    return nn.Sequential(
        layer_init(nn.Linear(features_dim, hidden), GAINS["trunk"]), nn.ReLU(),
        layer_init(nn.Linear(hidden, out), gain),
    )


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

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's picture of the newest frame, (N, 1, h, w) in [0, 1]."""
        return self.decoder(self.encode(x))


def recon_target(obs: torch.Tensor) -> torch.Tensor:
    """What the decoder is asked to draw: the newest frame, (N, 1, h, w) in [0, 1]."""
    return obs[:, -1:].float() / 255.0
