"""Input normalization that lives inside the model and is saved with it.

Kinds (config `model.normalization`):
- `scale`: x / 255, nothing fitted.
- `channel_mean`: x / 255 minus one mean per stacked frame, fitted once on training data (as VGG
  subtracts the mean RGB of ImageNet): it centres the inputs so the first layer's pre-activations start
  near zero, without changing any contrast.
- `pixel_mean`: x / 255 minus the per-pixel mean image: the static background becomes ~0, so what moves
  (fighters, knives) is all that is left in the input.
- `running`: per-pixel running mean and variance (the parallel algorithm, float64), standardized and
  clipped. It divides by each pixel's standard deviation, so a pixel that rarely changes (where knives
  fly over a flat floor) has its small contrasts amplified, up to the clip.
- `row_contrast`: nothing fitted. Each row of each frame minus that row's median (its background: the
  play band's wall and floor are flat along a row; the background model and column sample of
  agent.perception.detection), in units of `contrast` gray levels, clipped to +-clip. With 4 gray levels
  and a clip of 3 a knife (11 darker) becomes -2.75 while a fighter (over 100 brighter) saturates at 3:
  the knife is almost as loud as a fighter, instead of ten times quieter. An empty play band (the first
  seconds of a game) is an all-zero input.

Statistics are buffers, so they travel in the model's state dict and checkpoint. They change only through
`update` while the module is in training mode; in eval mode (evaluation, video) they are frozen.
"""

from __future__ import annotations

import torch
from torch import nn

from agent.config import NORMALIZATIONS as KINDS
from agent.perception.detection import background_columns

STATELESS = ("scale", "row_contrast")
"""Kinds with nothing to fit."""


def row_background(x: torch.Tensor) -> torch.Tensor:
    """Each row's background (..., h, 1): the detector's, the median of the same column sample
    (agent.perception.detection.background_columns)."""
    sample = x[..., background_columns(x.shape[-1])]
    return sample.kthvalue(sample.shape[-1] // 2 + 1, dim=-1, keepdim=True).values


class ObsNormalizer(nn.Module):
    def __init__(self, kind: str, shape: tuple[int, ...], clip: float = 3.0, eps: float = 1e-4,
                 contrast: float = 4.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown normalization {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.clip = clip
        self.contrast = contrast
        self.eps = eps
        self.chunk = 256  # rows converted to float64 at a time: bounds memory on big rollouts
        stat_shape = (shape[0], 1, 1) if kind == "channel_mean" else tuple(shape)
        self.register_buffer("mean", torch.zeros(stat_shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(stat_shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return bool(self.count > 0)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Folds a batch (N, *shape) of raw pixels into the statistics; a no-op when frozen.

        `channel_mean` and `pixel_mean` are fitted by the first call and fixed after it; `running`
        keeps merging batches.
        """
        if not self.training or self.kind in STATELESS or (self.kind != "running" and self.fitted):
            return
        for part in x.split(self.chunk):
            self._merge(part)

    def _merge(self, x: torch.Tensor) -> None:
        """Chan et al.'s parallel update of count, mean and (population) variance, in float64."""
        x = x.to(torch.float64) / 255.0
        dims = (0, 2, 3) if self.kind == "channel_mean" else (0,)
        batch_mean = x.mean(dim=dims).reshape(self.mean.shape)
        batch_var = x.var(dim=dims, unbiased=False).reshape(self.var.shape)
        batch_count = x.numel() / self.mean.numel()
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.copy_(self.mean + delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "row_contrast":
            x = x.float()
            return ((x - row_background(x)) / self.contrast).clamp(-self.clip, self.clip)
        x = x.float() / 255.0
        if self.kind == "scale":
            return x
        mean = self.mean.float()
        if self.kind in ("channel_mean", "pixel_mean"):
            return x - mean
        std = (self.var.float() + self.eps).sqrt()
        return ((x - mean) / std).clamp(-self.clip, self.clip)
