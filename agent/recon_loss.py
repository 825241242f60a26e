"""The decoder's loss and the reconstruction metrics the learner logs.

The learner calls three functions, in this order:
- `object_masks(frames, cfg)` at rollout time, on the CPU, for the newest frame of each observation;
  returns a bool mask (N, h, w) of small-object regions, or None when nothing needs one;
- `recon_loss(pred, target, masks, cfg)` in every update;
- `recon_stats(pred, target, masks)` when it logs, returning `recon/...` scalars.
"""

from __future__ import annotations

import numpy as np
import torch

from agent.config import ReconConfig


def object_masks(frames: np.ndarray, cfg: ReconConfig) -> np.ndarray | None:
    """Small-object regions of uint8 frames (N, h, w); None: the plain loss needs none."""
    return None


def recon_loss(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor | None,
               cfg: ReconConfig) -> torch.Tensor:
    """Plain MSE between the decoder's frames and the targets, both (N, 1, h, w) in [0, 1]."""
    return (pred - target).square().mean()


@torch.no_grad()
def recon_stats(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor | None) -> dict[str, float]:
    return {"mse": float((pred - target).square().mean())}
