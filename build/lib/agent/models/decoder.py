"""The decoder: the code -> a picture of the newest frame, the mirror of the encoder's trunk.

It draws the newest frame of the stack, not all four: that is the frame the policy acts on and the one a
knife must survive in; the three older frames show the same scene a few pixels earlier, and decoding them
would quadruple the decoder's output (and cost) without asking anything new of the code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agent.config import ModelConfig
from agent.models.encoder import Encoder
from agent.models.layers import GAINS, BlockConvTranspose2d, layer_init

DECODER_START_GRAY = 85
"""The decoder's first picture is this flat gray (the play band's wall) rather than sigmoid(0) = 128: a
first error that is large and the same everywhere drives every unit of the tanh code into saturation
within the first 30-100 Adam steps of an autoencoder, after which the decoder can only draw the mean frame."""



class Decoder(nn.Module):
    """Mirrors the encoder: linear -> transposed convs -> sigmoid, the newest frame in [0, 1]."""

    def __init__(self, encoder: Encoder, cfg: ModelConfig):
        super().__init__()
        ch, h, w = encoder.trunk_shape
        self.trunk_shape = (ch, h, w)
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

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.linear(code).view(-1, *self.trunk_shape)
        return torch.sigmoid(self.deconv(x))



def recon_target(obs: torch.Tensor) -> torch.Tensor:
    """What the decoder is asked to draw: the newest frame, (N, 1, h, w) in [0, 1]."""
    return obs[:, -1:].float() / 255.0
