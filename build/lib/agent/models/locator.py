"""The locator: a linear head on the code that says which cells of the newest frame hold a small object."""

from __future__ import annotations

import math

import torch
from torch import nn

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
        +-1 on every frame."""
        total = torch.zeros(self.linear.out_features)
        for start in range(0, len(masks), chunk):
            total += self.targets(masks[start:start + chunk]).sum(0).cpu()
        share = (total / max(len(masks), 1)).clamp(LOCATOR_PRIOR_FLOOR, 1 - LOCATOR_PRIOR_FLOOR)
        self.linear.bias.copy_(torch.log(share / (1 - share)))

    def targets(self, masks: torch.Tensor) -> torch.Tensor:
        """bool object masks (N, h, w) -> (N, cells) float: 1 where a cell holds any masked pixel."""
        return nn.functional.max_pool2d(masks.unsqueeze(1).float(), self.cell, ceil_mode=True).flatten(1)
