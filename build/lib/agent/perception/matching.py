"""Does a reconstruction hold the small objects of its target? The detector run on both, boxes matched.

A target's object counts as redrawn when the detector finds a box in the reconstruction that overlaps
the object's box grown by `MATCH_TOLERANCE` pixels. Used by the learner's `recon/` scalars and by the
research reports.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from agent.config import ReconConfig
from agent.perception.detection import boxes_to_masks, detect_boxes

STATS_FRAMES = 256
"""recon_stats runs the detector on at most this many frames (the first ones of the batch)."""

MATCH_TOLERANCE = 2
"""Pixels a detection in the reconstruction may be off from the target's object and still count."""


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames (N, 1, h, w) in [0, 1] -> uint8 numpy (N, h, w), rounded."""
    return (frames[:, 0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def match_objects(target_boxes: np.ndarray, pred_boxes: np.ndarray,
                  tolerance: int = MATCH_TOLERANCE) -> np.ndarray:
    """For each target box (frame, x, y, w, h): whether a predicted box of the same frame overlaps it
    grown by `tolerance` px."""
    found = np.zeros(len(target_boxes), dtype=bool)
    for k, (i, x, y, w, h) in enumerate(target_boxes.tolist()):
        same = pred_boxes[pred_boxes[:, 0] == i]
        if len(same):
            px, py, pw, ph = same[:, 1], same[:, 2], same[:, 3], same[:, 4]
            found[k] = bool(np.any((px < x + w + tolerance) & (px + pw > x - tolerance)
                                   & (py < y + h + tolerance) & (py + ph > y - tolerance)))
    return found


@torch.no_grad()
def recon_stats(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor | None,
                cfg: ReconConfig | None = None) -> dict[str, float]:
    """mse; small_object_mse (inside the masks); small_object_recall (share of the objects the detector
    finds in the targets that it finds again in the reconstructions at the same place).

    Masks that are None are computed from the targets. The object scalars are NaN when the frames hold
    no small object. Only the first STATS_FRAMES frames are searched for the recall.
    """
    cfg = cfg or ReconConfig()
    sq = (pred.float() - target.float()).square()
    stats = {"mse": float(sq.mean())}
    target_u8 = to_uint8(target)
    if masks is None:
        masks_np = boxes_to_masks(detect_boxes(target_u8, cfg), target_u8.shape, cfg.mask_grow)
        masks = torch.from_numpy(masks_np).to(sq.device)
    obj = masks.to(sq.device, torch.bool).unsqueeze(1)
    n_obj = int(obj.sum())
    stats["small_object_mse"] = float(sq[obj].mean()) if n_obj else math.nan
    n = min(len(pred), STATS_FRAMES)
    target_boxes = detect_boxes(target_u8[:n], cfg)
    if len(target_boxes):
        pred_boxes = detect_boxes(to_uint8(pred[:n]), cfg)
        stats["small_object_recall"] = float(match_objects(target_boxes, pred_boxes).mean())
    else:
        stats["small_object_recall"] = math.nan
    return stats
