"""The decoder's loss and the reconstruction metrics the learner logs.

The learner calls five functions, in this order:
- `object_masks(frames, cfg)` at rollout time, on the CPU, for the newest frame of each observation;
  returns a bool mask (N, h, w) of small-object regions (detected boxes grown by `cfg.mask_grow`), or
  None when no loss reads them (`recon.loss: plain` and `recon.locate_coef: 0`);
- `locate_loss(locator, code, masks)` in every update, on the whole minibatch;
- `decode_selection(masks, n, cfg)`, for the frames of the minibatch the decoder reads;
- `recon_loss(pred, target, masks, cfg)` on them;
- `recon_stats(pred, target, masks)` and `located_share(locator, code, masks)` when it logs, returning
  `recon/...` scalars.

Why weights. A knife is 6-10 of the 9,216 pixels of a 64x144 frame and is on screen in about one frame
in ten: under plain MSE, drawing it is worth about 1e-4 of the loss, less than the error of a fighter's
outline, and a 64-number code has no room to spare for it. Every loss here is mean(W * (pred - target)^2)
with a per-pixel weight map W (`weight_map`):

- weighted: W is `object_weight` inside small-object regions, 1 on the rest of a frame that has objects,
  and `empty_frame_weight` on frames that have none. With no objects and both factors at 1 it is MSE.
  With `bridge_cols`, the wall between an object and a sprite at most that many columns beside it
  (`bridge_mask`, from the target frame) weighs `bridge_weight`, and with `bridge_rows` the wall
  between it and a sprite at most that many rows above or below, and the object's margin where a
  sprite is near: the detector finds a knife flying next to a fighter, or over one's head, only if the
  pixels between them are drawn as wall.
- balanced: object pixels and background pixels are each averaged over the batch and then added, the
  object mean scaled by `balance`; W is that sum written per pixel (a background pixel weighs
  numel / n_background, an object pixel balance * numel / n_object). However few the object pixels, they
  carry `balance` times the weight of the whole background. With no objects it is MSE again.

What weights do, measured (scripts/recon_report.py: the agent's normalizer, encoder and decoder trained
as an autoencoder on random-play frames, three quarters of them with a knife, scored on held-out
episodes): plain MSE recalls about 2% of the knives; object_weight 300 recalls 80% at 1.29x the plain mse
(48,000 frames, 12,000 steps; without the locator below). Much of the miss is hedging: a decoder unsure
where a knife is draws faint knife-like blobs all along the rows knives fly in, because the weighted
error's minimum at a pixel is the weight-averaged target, which a heavy weight pulls towards the knife's
gray even where a knife is unlikely. The report therefore also gives the recall's chance level and the
precision of the reconstruction's detections. In earlier sweeps (4,000 steps) `object_weight` 300
recalled the most above chance per unit of mse.

Where the code says the objects are. The decoder's loss only tells the encoder about a knife through the
decoder's layers; `locate_loss` asks the code directly: a linear head (agent.models.Locator) reads the
code and says, for each cell of a grid over the frame (8 x 4 px), whether an object's mask touches
it, scored by binary cross-entropy against the masks. With it (`recon.locate_coef` 0.05) the guessing
stops: recall by chance fell from 0.35 to 0.06-0.07 at the same recall (0.80-0.81), and the locator
itself finds 99% of the validation knives from the code. The misses left are the decoder's: knives
beside a fighter, whose blurred outline runs into the knife in the reconstruction. A lighter object
weight then costs little: object_weight 100 with the locator recalled 0.765 in the report at 1.20x the
plain mse, 0.71 above chance, where object_weight 300 alone had 0.80 at 1.29x, 0.45 above. Bridges
(`bridge_mask`) weigh the wall between such a knife and the fighter, which must stay wall for the
detector to see the knife: beside it, x100 in place of a ring around the knife, the report recalled
0.855 at 1.17x; beside, over and under it and round its margin, 0.877 at 1.19x; all of them x200 (the
defaults), 0.916 at 1.25x, and 0.927 at 1.20x with the report's present training (16,000 steps, the
last third at a cooling learning rate).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from agent.config import ReconConfig
from agent.detection import boxes_to_masks, detect_boxes
from agent.models import Locator
from agent.normalization import row_background

STATS_FRAMES = 256
"""recon_stats runs the detector on at most this many frames (the first ones of the batch)."""

MATCH_TOLERANCE = 2
"""Pixels a detection in the reconstruction may be off from the target's object and still count."""


def object_masks(frames: np.ndarray, cfg: ReconConfig) -> np.ndarray | None:
    """Small-object regions of uint8 frames (N, h, w) as bool (N, h, w); None: the plain loss needs none."""
    if not cfg.needs_masks:
        return None
    frames = np.asarray(frames)
    return boxes_to_masks(detect_boxes(frames, cfg), frames.shape, cfg.mask_grow)


def decode_selection(masks: torch.Tensor | None, n: int, cfg: ReconConfig) -> torch.Tensor | slice:
    """Which of a minibatch's `n` frames the decoder's loss reads: ceil(cfg.decode_share * n) of them,
    those whose mask (bool (n, h, w)) holds an object first, the rest in the minibatch's order; all
    frames (a slice, no copy) at decode_share 1; the first ones when there are no masks."""
    k = max(1, math.ceil(cfg.decode_share * n))
    if k >= n:
        return slice(None)
    if masks is None:
        return slice(0, k)
    has_object = masks.flatten(1).any(dim=1)
    return torch.argsort(has_object.to(torch.uint8), descending=True, stable=True)[:k]


def weight_map(masks: torch.Tensor | None, shape: tuple[int, ...], cfg: ReconConfig,
               device: torch.device | str | None = None, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel weights (N, 1, h, w) of the loss: recon_loss = mean(weight_map * squared error).

    `masks` is bool (N, h, w) or None (no objects anywhere); `shape` is the (N, 1, h, w) of the frames.
    The weighted loss with bridges on (`recon.bridge_cols` or `recon.bridge_rows`) also weighs the
    bridges and margins (`bridge_mask`) of the target frames (N, 1, h, w) in [0, 1], when they are given.
    """
    if cfg.loss == "plain":
        return torch.ones(shape, device=device)
    if masks is None:
        masks = torch.zeros((shape[0], *shape[2:]), dtype=torch.bool, device=device)
    obj = masks.unsqueeze(1).to(torch.bool)
    has_object = obj.flatten(1).any(dim=1).view(-1, 1, 1, 1)
    background = torch.where(has_object, 1.0, cfg.empty_frame_weight).to(torch.float32).expand(shape)
    if cfg.loss == "weighted":
        if cfg.bridges and target is not None:
            background = torch.where(bridge_mask(target, obj, cfg), cfg.bridge_weight, background)
        return torch.where(obj, torch.tensor(cfg.object_weight, device=obj.device), background)
    # balanced: each group averaged over its own pixel count, written back per pixel.
    n_obj = int(obj.sum())
    n_bg = obj.numel() - n_obj
    numel = obj.numel()
    bg_scale = numel / n_bg if n_bg else 0.0
    obj_scale = cfg.balance * numel / n_obj if n_obj else 0.0
    return torch.where(obj, torch.tensor(obj_scale, device=obj.device), background * bg_scale)


def recon_loss(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor | None,
               cfg: ReconConfig) -> torch.Tensor:
    """The decoder's loss on frames (N, 1, h, w) in [0, 1]; `masks` bool (N, h, w) or None."""
    sq = (pred - target).square()
    if cfg.loss == "plain":
        return sq.mean()
    return (weight_map(masks, sq.shape, cfg, device=sq.device, target=target) * sq).mean()


def bridge_mask(target: torch.Tensor, obj: torch.Tensor, cfg: ReconConfig) -> torch.Tensor:
    """The bridges of frames (N, 1, h, w) in [0, 1] with bool object masks (N, 1, h, w), as bool (N, 1, h, w).

    A bridge is the run of wall between a small object and the nearest other sprite pixel beside it on its
    rows, when the run is at most `cfg.bridge_cols` columns wide, or above or below it in its columns,
    when the run is at most `cfg.bridge_rows` rows tall: the pixels that must stay wall in a
    reconstruction for the detector to find the object apart from the sprite. Sprite pixels are those at
    least `detect_min_contrast` gray levels from their row's background (as the detector has it, from the
    same columns). The detector's grouping joins pixels one row apart, and diagonal neighbours: beside an
    object, sprites and the object's rows count one row up and down; above and below it, one column
    left and right. Only the rows (columns) the objects reach are searched.

    With `cfg.bridge_margin`, the bridges also take the object's margin where a sprite is near: the
    pixels the detector's grouping would join to the object (2 * detect_group_rows + 1 rows above and
    below it, 2 * detect_group_cols + 1 columns either side: 3 and 1) that have a sprite pixel within as
    many rows and `bridge_cols` columns, where a blurred outline of the sprite would merge the two.
    """
    frames = (target[:, 0].float() * 255).round()
    sprite = (frames - row_background(frames)).abs() >= cfg.detect_min_contrast
    obj = obj[:, 0]
    bridge = _bridges_along_rows(obj, sprite, cfg.bridge_cols)
    if cfg.bridge_rows:
        bridge |= _bridges_along_rows(obj.transpose(1, 2), sprite.transpose(1, 2), cfg.bridge_rows).transpose(1, 2)
    if cfg.bridge_margin:
        rows, cols = 2 * cfg.detect_group_rows + 1, 2 * cfg.detect_group_cols + 1
        bridge |= _dilate(obj, rows, cols) & ~obj & _dilate(sprite & ~obj, rows, cfg.bridge_cols)
    return bridge.unsqueeze(1)


def _dilate(mask: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """bool (N, h, w): True within `rows` rows and `cols` columns of a True pixel of `mask`."""
    for dim, reach in ((1, rows), (2, cols)):
        grown = mask.clone()
        for d in range(1, min(reach, mask.shape[dim] - 1) + 1):
            grown.narrow(dim, d, mask.shape[dim] - d).logical_or_(mask.narrow(dim, 0, mask.shape[dim] - d))
            grown.narrow(dim, 0, mask.shape[dim] - d).logical_or_(mask.narrow(dim, d, mask.shape[dim] - d))
        mask = grown
    return mask


def _bridges_along_rows(obj: torch.Tensor, sprite: torch.Tensor, widest: int) -> torch.Tensor:
    """bool (N, h, w): the runs of at most `widest` pixels along the rows between the objects of bool
    `obj` (N, h, w) and the other pixels of bool `sprite`, each taken with one row up and down."""
    if not widest:
        return torch.zeros_like(obj)
    obj_rows = _dilate(obj, 1, 0)
    other = _dilate(sprite, 1, 0) & ~obj_rows
    rows = obj_rows.any(dim=-1)
    near, beside = obj_rows[rows], other[rows]  # (rows the objects reach, w)
    far = widest + 2
    found = torch.zeros_like(near)
    for side in (1, -1):  # the object to the left of a pixel, the sprite to its right; then mirrored
        to_object = _distance(near, side, far)
        behind = _distance(beside, side, far)  # another sprite between the object and the pixel
        ahead = _distance(beside, -side, far)
        found |= (to_object < behind) & (to_object + ahead - 1 <= widest)
    bridge = torch.zeros_like(obj_rows)
    bridge[rows] = found & ~near & ~beside
    return bridge


def _distance(mask: torch.Tensor, side: int, far: int) -> torch.Tensor:
    """Columns from each pixel to the nearest True of bool `mask` (..., w) on its row, looking left
    (side 1) or right (-1), at least 1; `far` where there is none nearer."""
    if side < 0:
        return _distance(mask.flip(-1), 1, far).flip(-1)
    cols = torch.arange(mask.shape[-1], device=mask.device)
    last = torch.where(mask, cols, -far).cummax(dim=-1).values  # the last True at or left of each pixel
    before = torch.nn.functional.pad(last[..., :-1], (1, 0), value=-far)
    return (cols - before).clamp(max=far)


def locate_loss(locator: Locator, code: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The locator's loss: binary cross-entropy of its logits for `code` (N, features_dim) against the
    cells of the grid that the bool object masks (N, h, w) touch."""
    return torch.nn.functional.binary_cross_entropy_with_logits(locator(code), locator.targets(masks))


@torch.no_grad()
def located_share(locator: Locator, code: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of the grid cells that the objects of bool masks (N, h, w) touch which the locator marks (a
    probability above one half) from `code`: how much of where the objects are the code tells. NaN
    without objects."""
    touched = locator.targets(masks) > 0
    n = int(touched.sum())
    return float(((locator(code) > 0) & touched).sum()) / n if n else math.nan


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
