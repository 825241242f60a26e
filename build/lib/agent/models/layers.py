"""The one weight initialisation and table of gains, and the decoder's CPU-friendly last layer."""

from __future__ import annotations

import math

import torch
from torch import nn

# Orthogonal-init gains: ReLU trunk, a near-uniform initial policy, a unit-scale critic.
GAINS = {"trunk": math.sqrt(2), "actor": 0.01, "critic": 1.0, "code": 1.0}

def layer_init(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer



class BlockConvTranspose2d(nn.ConvTranspose2d):
    """The decoder's last transposed conv (kernel 8, stride 4, to one channel at full resolution),
    computed on the CPU as a transposed conv of stride 1 to 4 x 4 blocks of pixels held in channels,
    which pixel_shuffle lays out as the frame: the same function of the same parameters (the state
    dict is a ConvTranspose2d's). oneDNN draws 16 channels at stride 1 about twice as fast as one at
    stride 4 (docs/experiments/notebook.md, "Throughput"). On other devices, and for a layer whose kernel
    is not a whole number of strides, it is a ConvTranspose2d."""

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
