"""The shared encoder: the input normalizer, a conv trunk and the tanh code every head reads."""

from __future__ import annotations

import torch
from torch import nn

from agent.config import ModelConfig
from agent.models.layers import GAINS, layer_init
from agent.perception.normalization import ObsNormalizer


def make_normalizer(obs_shape: tuple[int, ...], cfg: ModelConfig) -> ObsNormalizer:
    """The input normalizer `cfg` asks for (kind, clip and contrast), unfitted."""
    return ObsNormalizer(cfg.normalization, obs_shape, clip=cfg.norm_clip, contrast=cfg.norm_contrast)



class Encoder(nn.Module):
    """Conv trunk -> linear -> tanh: a code of `features_dim` values in (-1, 1)."""

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
        self.code = nn.Sequential(
            nn.Flatten(), layer_init(nn.Linear(x[0].numel(), cfg.features_dim), GAINS["code"]), nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(self.trunk(x))
