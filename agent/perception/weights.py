"""Where the decoder's loss looks: the object masks and the per-pixel weight map built from them.

A knife is 6-10 of the 9,216 pixels of a 64x144 frame and is on screen in about one frame in ten: under
plain MSE, drawing it is worth about 1e-4 of the loss, less than the error of a fighter's outline. The
weighted loss is mean(W * err) with a per-pixel weight map W (`weight_map`) and err the per-pixel error
of `recon.error` (smooth L1 or squared; agent.learner.recon.recon_loss):

- `recon.object_weight` inside each small object's mask (its detected box, grown by `recon.mask_grow`);
- `recon.bridge_weight` on its bridges and margin (`bridge_mask`): the wall between a knife and a sprite
  beside, above or below it, which must be drawn as wall for the detector to see the knife apart;
- `recon.sprite_weight` on the other sprite pixels of the target (`sprite_pixels`), the fighters;
- `recon.false_weight`, where it is above the rest, on the false objects of the reconstruction
  (`false_objects`): the boxes the detector finds in the picture that match no object of the target,
  those within `recon.false_apart` px of a fighter of the target left out;
- 1 on the wall. With no objects and sprite_weight 1 it is the unweighted error (plain MSE when squared).

How the weights were chosen: docs/experiments/notebook.md.
"""

from __future__ import annotations

import numpy as np
import torch

from agent.config import ReconConfig
from agent.perception.detection import boxes_to_masks, detect_boxes
from agent.perception.matching import MATCH_TOLERANCE, to_uint8
from agent.perception.normalization import row_background


def object_masks(frames: np.ndarray, cfg: ReconConfig) -> np.ndarray | None:
    """Small-object regions of uint8 frames (N, h, w) as bool (N, h, w); None: the plain loss needs none."""
    if not cfg.needs_masks:
        return None
    frames = np.asarray(frames)
    return boxes_to_masks(detect_boxes(frames, cfg), frames.shape, cfg.mask_grow)


def weight_map(masks: torch.Tensor | None, shape: tuple[int, ...], cfg: ReconConfig,
               device: torch.device | str | None = None, target: torch.Tensor | None = None,
               false: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel weights (N, 1, h, w) of the decoder's loss: loss = mean(weight_map * per-pixel error).

    `masks` is bool (N, h, w) or None (no objects anywhere); `shape` is the (N, 1, h, w) of the frames.
    The weighted loss with bridges on (`recon.bridge_cols` or `recon.bridge_rows`) also weighs the
    bridges and margins (`bridge_mask`) of the target frames (N, 1, h, w) in [0, 1], when they are given,
    and with `recon.sprite_weight` other than 1 their sprite pixels (`sprite_pixels`). `false`, bool
    (N, h, w), marks the reconstruction's false objects (`false_objects`), which weigh at least
    `recon.false_weight`.
    """
    if cfg.loss == "plain":
        return torch.ones(shape, device=device)
    if masks is None:
        masks = torch.zeros((shape[0], *shape[2:]), dtype=torch.bool, device=device)
    obj = masks.unsqueeze(1).to(torch.bool)
    background = torch.ones(shape, device=obj.device)
    sprite = None
    if cfg.sprite_weight != 1 and target is not None:
        sprite = sprite_pixels(target, cfg)
        background = torch.where(sprite.unsqueeze(1), cfg.sprite_weight, background)
    if cfg.bridges and target is not None:
        background = torch.where(bridge_mask(target, obj, cfg, sprite), cfg.bridge_weight, background)
    if false is not None:
        background = torch.where(false.unsqueeze(1), background.clamp(min=cfg.false_weight), background)
    return torch.where(obj, torch.tensor(cfg.object_weight, device=obj.device), background)


@torch.no_grad()
def false_objects(pred: torch.Tensor, masks: torch.Tensor | None, cfg: ReconConfig,
                  target: torch.Tensor | None = None) -> torch.Tensor:
    """bool (N, h, w): the boxes the detector finds in reconstructions `pred` (N, 1, h, w) in [0, 1] that
    overlap no object of bool masks (N, h, w) grown by `MATCH_TOLERANCE` px. With masks that are the
    detector's boxes (`recon.mask_grow` 0) this is the rule by which the knife report counts a box of the
    picture as found or false (agent.perception.matching); grown masks match a little farther. With
    `recon.false_apart` and the target frames (N, 1, h, w) in [0, 1], a box within that many pixels of a
    sprite pixel of the target outside the masks (`sprite_pixels`) is left out."""
    frames = to_uint8(pred)
    false = np.zeros(frames.shape, dtype=bool)
    objects = masks.cpu().numpy() if masks is not None else np.zeros_like(false)
    near = None
    if cfg.false_apart and target is not None:
        sprite = sprite_pixels(target, cfg)
        if masks is not None:
            sprite &= ~masks.to(sprite.device)
        near = _dilate(sprite, cfg.false_apart, cfg.false_apart).cpu().numpy()
    t = MATCH_TOLERANCE
    for i, x, y, bw, bh in detect_boxes(frames, cfg).tolist():
        if objects[i, max(0, y - t):y + bh + t, max(0, x - t):x + bw + t].any():
            continue
        if near is None or not near[i, y:y + bh, x:x + bw].any():
            false[i, y:y + bh, x:x + bw] = True
    return torch.from_numpy(false).to(pred.device)


def bridge_mask(target: torch.Tensor, obj: torch.Tensor, cfg: ReconConfig,
                sprite: torch.Tensor | None = None) -> torch.Tensor:
    """The bridges of frames (N, 1, h, w) in [0, 1] with bool object masks (N, 1, h, w), as bool (N, 1, h, w).

    A bridge is the run of wall between a small object and the nearest other sprite pixel beside it on its
    rows, when the run is at most `cfg.bridge_cols` columns wide, or above or below it in its columns,
    when the run is at most `cfg.bridge_rows` rows tall: the pixels that must stay wall in a
    reconstruction for the detector to find the object apart from the sprite. Sprite pixels are those at
    least `detect_min_contrast` gray levels from their row's background, as the detector has it, from the
    same columns (`sprite_pixels`; `sprite`, bool (N, h, w), when the caller has them already).
    The detector's grouping joins pixels one row apart, and diagonal neighbours: beside an
    object, sprites and the object's rows count one row up and down; above and below it, one column
    left and right. Only the rows (columns) the objects reach are searched.

    With `cfg.bridge_margin`, the bridges also take the object's margin where a sprite is near: the
    pixels the detector's grouping would join to the object (2 * detect_group_rows + 1 rows above and
    below it, 2 * detect_group_cols + 1 columns either side: 7 and 1 by default) that have a sprite pixel
    within as many rows and `bridge_cols` columns, where a blurred outline of the sprite would merge the two.
    """
    if sprite is None:
        sprite = sprite_pixels(target, cfg)
    obj = obj[:, 0]
    bridge = _bridges_along_rows(obj, sprite, cfg.bridge_cols)
    if cfg.bridge_rows:
        bridge |= _bridges_along_rows(obj.transpose(1, 2), sprite.transpose(1, 2), cfg.bridge_rows).transpose(1, 2)
    if cfg.bridge_margin:
        rows, cols = 2 * cfg.detect_group_rows + 1, 2 * cfg.detect_group_cols + 1
        bridge |= _dilate(obj, rows, cols) & ~obj & _dilate(sprite & ~obj, rows, cfg.bridge_cols)
    return bridge.unsqueeze(1)


def sprite_pixels(target: torch.Tensor, cfg: ReconConfig) -> torch.Tensor:
    """bool (N, h, w): the pixels of frames (N, 1, h, w) in [0, 1] at least `detect_min_contrast` gray
    levels from their row's background, as the detector has it: the sprites, knives included."""
    frames = (target[:, 0].float() * 255).round()
    return (frames - row_background(frames)).abs() >= cfg.detect_min_contrast


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


