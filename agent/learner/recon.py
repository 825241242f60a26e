"""The reconstruction side of the loss: which frames the decoder reads, its weighted loss, the locator's.

In each minibatch the learner computes the code once; `decoder_loss` takes the share of the frames that
`recon.decode_share` selects (frames with objects first), perturbs them when `recon.aug_noise_std` or
`recon.aug_shift` ask for it, and scores the decoder's picture of the newest frame with the weight map of
`agent.perception.weights`. `locate_loss` scores the locator (a linear head on the code, one logit per
cell of `model.locator_cell`) against the cells the object masks touch, on the whole minibatch.
"""

from __future__ import annotations

import math

import torch

from agent.config import ReconConfig
from agent.models import Agent, Locator, recon_target
from agent.perception.augment import augment
from agent.perception.weights import false_objects, weight_map


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


def recon_loss(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor | None,
               cfg: ReconConfig) -> torch.Tensor:
    """The decoder's loss on frames (N, 1, h, w) in [0, 1]; `masks` bool (N, h, w) or None: the mean of the
    per-pixel error (`recon.error`), weighted by `weight_map` unless `recon.loss` is plain; with
    `recon.false_weight` the detector runs on `pred` for its false objects (`false_objects`)."""
    if cfg.error == "squared":
        err = (pred - target).square()
    else:
        err = torch.nn.functional.smooth_l1_loss(pred, target, reduction="none", beta=cfg.error_beta / 255)
    if cfg.loss == "plain":
        return err.mean()
    false = false_objects(pred, masks, cfg, target) if cfg.false_weight > 0 else None
    return (weight_map(masks, err.shape, cfg, device=err.device, target=target, false=false) * err).mean()


def locate_loss(locator: Locator, code: torch.Tensor, masks: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """The locator's loss: binary cross-entropy of its logits for `code` (N, features_dim) against the
    cells of the grid that the bool object masks (N, h, w) touch, a touched cell weighing `pos_weight`."""
    weight = torch.tensor(pos_weight, device=code.device) if pos_weight != 1 else None
    return torch.nn.functional.binary_cross_entropy_with_logits(locator(code), locator.targets(masks),
                                                                pos_weight=weight)


@torch.no_grad()
def located_share(locator: Locator, code: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of the grid cells that the objects of bool masks (N, h, w) touch which the locator marks (a
    probability above one half) from `code`: how much of where the objects are the code tells. NaN
    without objects."""
    touched = locator.targets(masks) > 0
    n = int(touched.sum())
    return float(((locator(code) > 0) & touched).sum()) / n if n else math.nan


def decoder_loss(agent: Agent, code: torch.Tensor, obs: torch.Tensor, masks: torch.Tensor | None,
                 cfg: ReconConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The decoder's loss on the frames of a minibatch that `recon.decode_share` selects, given the
    minibatch's observations and their code; returns (loss, reconstructions, targets, masks) of those
    frames. With noise or shifts configured, the selected frames are perturbed and encoded once more for
    this loss (the policy and value read the clean code), and the target is the clean, shifted frame."""
    sel = decode_selection(masks, len(obs), cfg)
    obs = obs[sel]
    masks = masks[sel] if masks is not None else None
    if cfg.augments:
        inputs, obs, masks = augment(obs, masks, cfg)
        code = agent.encode(inputs)
    else:
        code = code[sel]
    pred, target = agent.decoder(code), recon_target(obs)
    return recon_loss(pred, target, masks, cfg), pred, target, masks
