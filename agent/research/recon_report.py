"""Does the weighted decoder loss keep the knives? Trains plain and weighted autoencoders and compares them.

1. Collects play-band observations (4 x 64 x 144 stacks) by random play, or with a checkpoint's policy,
   keeping frames whose newest frame holds a small object and object-free frames so that the objects'
   share of the set is `--object-share`. Observations are split into train and validation by episode
   (every k-th game goes to validation), so no validation frame has a near twin in training.
2. Trains one autoencoder per variant: the agent's own normalizer, Encoder (conv trunk -> tanh-64 code),
   Decoder (newest frame) and Locator, built from the default model config, same initialization, same
   batches, same number of steps; only the loss (and, for the augmentation variants, the perturbation of
   the input) differs. plain is the decoder's MSE alone; weighted is the configured loss: the weighted
   decoder loss plus the locator's; unlocated drops the locator's. Over the last third of the steps
   (`--lr-tail`) the learning rate cools to 0 along a half cosine.
3. Scores every variant on the validation frames: mse, small_object_mse (squared error inside the object
   masks of the targets) and small_object_recall (share of the targets' objects that the detector finds
   again in the reconstruction at the same place, 2 px tolerance), with the recall's chance level
   (targets matched against the reconstruction of an unrelated frame), a strict recall (box IoU >= 0.25)
   and the precision of the reconstruction's detections.

Results and how the defaults were found: docs/experiments/notebook.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from agent.config import ConfigError, EnvConfig, ModelConfig, ReconConfig, config_from_dict
from agent.device import place
from agent.learner.recon import locate_loss, recon_loss
from agent.models import Decoder, Encoder, Locator, make_normalizer, recon_target
from agent.perception.augment import augment
from agent.perception.detection import boxes_to_masks, detect_boxes
from agent.perception.matching import match_objects, to_uint8
from agent.perception.weights import weight_map
from agent.runs.files import write_json_atomic

# name -> changes to the run's ReconConfig. "weighted" is the configured loss (recon.loss, default weighted).
VARIANTS = {
    "plain": {"loss": "plain", "error": "squared", "locate_coef": 0.0},
    "weighted": {},
    "unlocated": {"locate_coef": 0.0},
    "weighted_noise": {"aug_noise_std": 8.0},
    "weighted_shift": {"aug_shift": 4},
}
DEFAULT_VARIANTS = "plain,weighted"

LR_TAIL = 1 / 3
"""Share of the steps at the end that cool the learning rate towards 0."""


class UsageError(Exception):
    """Bad command-line input; reported as one line with exit code 2."""


@dataclass
class Dataset:
    obs: np.ndarray
    """uint8 (N, 4, 64, 144) observations."""
    episode: np.ndarray
    """int episode id of each observation."""
    masks: np.ndarray
    """bool (N, 64, 144) object boxes of the newest frame, grown by recon.mask_grow."""
    boxes: np.ndarray
    """(frame, x, y, w, h) objects of the newest frames."""


def base_configs(overrides: list[str]) -> tuple[ReconConfig, ModelConfig]:
    """The recon and model configs of every variant: the defaults plus `--set recon.*` and `model.*`."""
    for text in overrides:
        if not text.startswith(("recon.", "model.")):
            raise ConfigError(f"{text.split('=')[0]}: only recon.* and model.* keys can be set here")
    config = config_from_dict(None, overrides)
    return config.recon, config.model


def make_policy(checkpoint: str | None, num_actions: int, obs_shape: tuple[int, ...], seed: int):
    """A function obs -> actions: the checkpoint's policy, or uniform random."""
    if checkpoint is None:
        rng = np.random.default_rng(seed)
        return lambda obs: rng.integers(0, num_actions, len(obs))
    try:
        from agent.runs.checkpoint import load_agent
    except ImportError as exc:
        raise UsageError(f"--checkpoint: cannot load checkpoints here ({exc})") from None
    agent, config = load_agent(checkpoint, "cpu")
    if tuple(config.env.obs_shape) != tuple(obs_shape):
        raise UsageError(f"--checkpoint: its observations are {config.env.obs_shape}, "
                         f"this report uses {obs_shape}")

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return agent.get_action_and_value(torch.from_numpy(obs))[0].numpy()

    return act


def collect(args: argparse.Namespace, cfg: ReconConfig, bar: tqdm) -> Dataset:
    """Plays until enough object frames are in, keeping object frames and a thinned stream of the rest."""
    from agent.env.game import GameEnv  # here, so that training and scoring load without the emulator

    env = GameEnv(EnvConfig(num_envs=args.num_envs), seed=args.seed)
    policy = make_policy(args.checkpoint, env.num_actions, env.obs_shape, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    want_obj = int(round(args.frames * args.object_share))
    want_free = args.frames - want_obj
    kept_obs, kept_episode, kept_obj = [], [], []
    n_obj = n_free = 0
    # Object-free frames are ~90% of play: keep each with a probability that fills the quota over the run.
    keep_free = min(1.0, 1.5 * want_free / (args.collect_steps * args.num_envs * 0.9))
    obs = env.reset()
    for _ in range(args.collect_steps):
        has_obj = np.zeros(len(obs), dtype=bool)
        has_obj[detect_boxes(obs[:, -1], cfg)[:, 0]] = True
        take = has_obj | (rng.random(len(obs)) < keep_free)
        episode = np.arange(len(obs)) + env.num_envs * env.games_started
        kept_obs.append(obs[take])  # a copy: fancy indexing never returns a view
        kept_episode.append(episode[take])
        kept_obj.append(has_obj[take])
        n_obj += int(has_obj.sum())
        n_free += int((take & ~has_obj).sum())
        bar.update(1)
        if n_obj >= 1.2 * want_obj and n_free >= 1.2 * want_free:
            break
        obs = env.step(policy(obs)).obs
    env.close()
    obs_all, episode = np.concatenate(kept_obs), np.concatenate(kept_episode)
    has_obj = np.concatenate(kept_obj)
    # Thin each kind to its quota, keeping the play order.
    pick = []
    for kind, quota in ((True, want_obj), (False, want_free)):
        idx = np.flatnonzero(has_obj == kind)
        if len(idx) > quota:
            idx = np.sort(rng.choice(idx, quota, replace=False))
        pick.append(idx)
    pick = np.sort(np.concatenate(pick))
    obs_all, episode = obs_all[pick], episode[pick]
    boxes = detect_boxes(obs_all[:, -1], cfg)
    masks = boxes_to_masks(boxes, (len(obs_all), *obs_all.shape[2:]), cfg.mask_grow)
    return Dataset(obs_all, episode, masks, boxes)


def split(data: Dataset, val_every: int) -> tuple[Dataset, Dataset]:
    episodes = np.unique(data.episode)
    if len(episodes) < 2:
        raise UsageError("collected a single episode: raise --num-envs so that train and validation differ")
    val_episodes = episodes[val_every - 1::val_every] if len(episodes) >= val_every else episodes[-1:]
    is_val = np.isin(data.episode, val_episodes)

    def subset(sel: np.ndarray) -> Dataset:
        idx = np.flatnonzero(sel)
        remap = np.full(len(sel), -1)
        remap[idx] = np.arange(len(idx))
        boxes = data.boxes[sel[data.boxes[:, 0]]].copy()
        boxes[:, 0] = remap[boxes[:, 0]]
        return Dataset(data.obs[idx], data.episode[idx], data.masks[idx], boxes)

    return subset(~is_val), subset(is_val)


class AutoEncoder(torch.nn.Module):
    """The agent's normalizer, Encoder (tanh-64 code), Decoder and Locator, without the actor and critic."""

    def __init__(self, train: Dataset, model_cfg: ModelConfig, seed: int, device: str = "cpu"):
        super().__init__()
        torch.manual_seed(seed)
        self.normalizer = make_normalizer(train.obs.shape[1:], model_cfg)
        self.normalizer.update(torch.from_numpy(train.obs[:2048]))
        self.encoder = Encoder(train.obs.shape[1:], model_cfg)
        self.decoder = Decoder(self.encoder, model_cfg)
        self.locator = Locator(model_cfg.features_dim, train.obs.shape[2:], model_cfg.locator_cell)
        self.locator.fit_prior(torch.from_numpy(train.masks))
        self.device = torch.device(device)
        place(self, self.device)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(obs))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.normalizer(obs))


def batch_sampler(train: Dataset, object_share: float | None, batch_size: int,
                  seed: int) -> Callable[[], np.ndarray]:
    """A seeded draw of training batch indices: each frame comes from the frames that hold an object with
    probability `object_share`, else from the others. Uniform over all frames when `object_share` is None
    or one of the two kinds is missing."""
    rng = np.random.default_rng(seed)
    with_object = np.unique(train.boxes[:, 0])
    without = np.setdiff1d(np.arange(len(train.obs)), with_object)
    if object_share is None or not len(with_object) or not len(without):
        return lambda: rng.integers(0, len(train.obs), batch_size)

    def draw() -> np.ndarray:
        pick_object = rng.random(batch_size) < object_share
        return np.where(pick_object, with_object[rng.integers(0, len(with_object), batch_size)],
                        without[rng.integers(0, len(without), batch_size)])

    return draw


def train_variant(train: Dataset, cfg: ReconConfig, model_cfg: ModelConfig, args: argparse.Namespace,
                  bar: tqdm) -> AutoEncoder:
    model = AutoEncoder(train, model_cfg, args.seed, args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    # The same seeds give every variant the same batches.
    next_batch = batch_sampler(train, args.batch_object_share, args.batch_size, args.seed + 2)
    aug_gen = torch.Generator().manual_seed(args.seed + 3)
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.lr_tail)
        idx = next_batch()
        obs = torch.from_numpy(train.obs[idx]).to(model.device)
        masks = torch.from_numpy(train.masks[idx]).to(model.device) if cfg.needs_masks else None
        inputs, clean, masks = augment(obs, masks, cfg, aug_gen)
        code = model.encode(inputs)
        loss = recon_loss(model.decoder(code), recon_target(clean), masks, cfg)
        if cfg.locates:
            loss = loss + cfg.locate_coef * locate_loss(model.locator, code, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(1)
    model.eval()
    return model


def learning_rate(step: int, steps: int, lr: float, tail: float) -> float:
    """The learning rate of training step `step` (0-based) of `steps`: `lr`, then over the last `tail`
    share of the steps a half cosine from `lr` towards 0 (which the step after the last would reach)."""
    tail_steps = round(tail * steps)
    into_tail = step - (steps - tail_steps)
    if into_tail <= 0:
        return lr
    return lr * 0.5 * (1 + math.cos(math.pi * into_tail / tail_steps))


@torch.no_grad()
def reconstruct(model: AutoEncoder, obs: np.ndarray, batch: int = 256) -> torch.Tensor:
    """The model's reconstructions of uint8 observations, (N, 1, h, w) on the CPU."""
    return torch.cat([model(torch.from_numpy(obs[s:s + batch]).to(model.device)).cpu()
                      for s in range(0, len(obs), batch)])


def score(pred: torch.Tensor, val: Dataset, cfg: ReconConfig) -> dict[str, float]:
    target = recon_target(torch.from_numpy(val.obs))
    sq = (pred - target).square()
    obj = torch.from_numpy(val.masks).unsqueeze(1)
    pred_boxes = detect_boxes(to_uint8(pred), cfg)
    found = match_objects(val.boxes, pred_boxes)
    # Chance level: the same boxes matched against the reconstruction of a frame half the set away.
    shifted = val.boxes.copy()
    shifted[:, 0] = (shifted[:, 0] + len(val.obs) // 2) % len(val.obs)
    chance = match_objects(shifted, pred_boxes)
    strict = best_iou(val.boxes, pred_boxes) >= 0.25
    # Precision: share of the reconstruction's detections that lie on an object of their target.
    precision = match_objects(pred_boxes, val.boxes)
    free = np.ones(len(val.obs), dtype=bool)
    free[val.boxes[:, 0]] = False
    false_frames = np.isin(np.flatnonzero(free), pred_boxes[:, 0]).sum()
    return {
        "mse": float(sq.mean()),
        "small_object_mse": float(sq[obj].mean()) if obj.any() else float("nan"),
        "small_object_recall": float(found.mean()) if len(found) else float("nan"),
        "background_mse": float(sq[~obj].mean()),
        "objects": int(len(found)),
        "objects_found": int(found.sum()),
        "chance_recall": float(chance.mean()) if len(chance) else float("nan"),
        "strict_recall": float(strict.mean()) if len(strict) else float("nan"),
        "precision": float(precision.mean()) if len(precision) else float("nan"),
        "object_free_frames_with_detection": int(false_frames),
    }


def best_iou(target_boxes: np.ndarray, pred_boxes: np.ndarray) -> np.ndarray:
    """For each target box (frame, x, y, w, h): the best intersection-over-union with a predicted box."""
    best = np.zeros(len(target_boxes))
    for k, (i, x, y, w, h) in enumerate(target_boxes.tolist()):
        same = pred_boxes[pred_boxes[:, 0] == i]
        if len(same):
            px, py, pw, ph = same[:, 1], same[:, 2], same[:, 3], same[:, 4]
            ix = np.clip(np.minimum(x + w, px + pw) - np.maximum(x, px), 0, None)
            iy = np.clip(np.minimum(y + h, py + ph) - np.maximum(y, py), 0, None)
            inter = ix * iy
            best[k] = float(np.max(inter / (w * h + pw * ph - inter)))
    return best


def comparison_png(path: Path, val: Dataset, preds: dict[str, torch.Tensor], cfg: ReconConfig, rows: int,
                   seed: int) -> None:
    """Per example, two rows: whole frames x3, then a x8 zoom on the object: input / plain / weighted /
    weight map. The object's box is drawn in red on the input. Examples are validation frames with an
    object (any frames when there are none)."""
    rng = np.random.default_rng(seed)
    with_obj = np.unique(val.boxes[:, 0])
    pool = with_obj if len(with_obj) else np.arange(len(val.obs))
    picks = np.sort(rng.choice(pool, min(max(rows, 1), len(pool)), replace=False))
    frames = recon_target(torch.from_numpy(val.obs[picks]))
    target = to_uint8(frames)
    plain, weighted = to_uint8(preds["plain"][picks]), to_uint8(preds["weighted"][picks])
    wmap = weight_map(torch.from_numpy(val.masks[picks]), frames.shape, cfg, target=frames)[:, 0].numpy()
    wmap_u8 = (255 * wmap / max(1e-8, float(wmap.max()))).astype(np.uint8)
    h, w = val.obs.shape[2:]
    zh, zw = min(24, h), min(54, w)
    gap = 6
    blocks = []
    for row, i in enumerate(picks):
        boxes = val.boxes[val.boxes[:, 0] == i]
        x, y, bw, bh = boxes[0, 1:].tolist() if len(boxes) else (w // 2, h // 2, 0, 0)
        panels = [target[row], plain[row], weighted[row], wmap_u8[row]]
        big = [_gray_bgr(p, 3) for p in panels]
        if len(boxes):
            corners = (3 * x - 3, 3 * y - 3), (3 * (x + bw) + 2, 3 * (y + bh) + 2)
            cv2.rectangle(big[0], *corners, (0, 0, 255), 1)
        x0 = int(np.clip(x + bw // 2 - zw // 2, 0, w - zw))
        y0 = int(np.clip(y + bh // 2 - zh // 2, 0, h - zh))
        zoom = [_gray_bgr(p[y0:y0 + zh, x0:x0 + zw], 8) for p in panels]
        blocks.append(_row(big, gap))
        blocks.append(_label(f"x8 zoom around the object at ({x}, {y})", blocks[-1].shape[1]))
        blocks.append(_row(zoom, gap))
        blocks.append(np.full((10, blocks[-1].shape[1], 3), 255, np.uint8))
    width = max(b.shape[1] for b in blocks)
    header = np.full((28, width, 3), 255, np.uint8)
    titles = ["input (newest frame)", "plain MSE", f"weighted ({cfg.loss})", "weight map"]
    for k, title in enumerate(titles):
        cv2.putText(header, title, (k * (3 * w + gap) + 4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    cv2.imwrite(str(path), np.vstack([header, *blocks]))


def _gray_bgr(image: np.ndarray, zoom: int) -> np.ndarray:
    big = cv2.resize(image, (image.shape[1] * zoom, image.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)


def _label(text: str, width: int) -> np.ndarray:
    strip = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return strip


def _row(panels: list[np.ndarray], gap: int) -> np.ndarray:
    spacer = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
    return np.hstack([part for p in panels for part in (p, spacer)])


def run_report(args: argparse.Namespace, base: ReconConfig, model_cfg: ModelConfig, out: Path) -> dict:
    """Collects the frames, trains and scores every variant of `args.variants`, writes out/report.json and
    out/comparison.png; returns the report. A UsageError says what in `args` cannot be used."""
    torch.set_num_threads(args.threads)
    started = time.time()
    bar = tqdm(total=args.collect_steps + args.steps * len(args.variants), disable=args.no_progress,
               unit="step", dynamic_ncols=True)
    bar.set_description("collect")
    try:
        data = collect(args, base, bar)
    finally:
        bar.total = bar.n + args.steps * len(args.variants)
    train, val = split(data, args.val_every)
    variants, preds = {}, {}
    for name in args.variants:
        cfg = dataclasses.replace(base, **VARIANTS[name])
        bar.set_description(name)
        tick = time.time()
        model = train_variant(train, cfg, model_cfg, args, bar)
        preds[name] = reconstruct(model, val.obs)
        variants[name] = {**score(preds[name], val, base), "train_seconds": round(time.time() - tick, 1),
                          "recon": {k: v for k, v in dataclasses.asdict(cfg).items()
                                    if not k.startswith("detect_")}}
    bar.close()
    plain, weighted = variants["plain"], variants["weighted"]
    report = {
        "variants": variants,
        "targets": {
            "recall_weighted_ge_0.9": weighted["small_object_recall"] >= 0.9,
            "recall_weighted_ge_3x_plain":
                weighted["small_object_recall"] >= 3 * plain["small_object_recall"],
            "mse_weighted_le_1.25x_plain": weighted["mse"] <= 1.25 * plain["mse"],
        },
        "data": {
            "source": args.checkpoint or "random play",
            "train_frames": int(len(train.obs)), "val_frames": int(len(val.obs)),
            "train_episodes": int(len(np.unique(train.episode))),
            "val_episodes": int(len(np.unique(val.episode))),
            "train_frames_with_objects": int(len(np.unique(train.boxes[:, 0]))),
            "val_frames_with_objects": int(len(np.unique(val.boxes[:, 0]))),
        },
        "model": {"network": "agent.models Encoder (tanh code) + Decoder + Locator, the agent's own",
                  **dataclasses.asdict(model_cfg)},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "no_progress")},
        "seconds": round(time.time() - started, 1),
    }
    write_json_atomic(report, out / "report.json")
    comparison_png(out / "comparison.png", val, preds, base, args.examples, args.seed)
    return report
