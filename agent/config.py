"""Typed run configuration.

Every knob lives in a dataclass field with its default and a docstring. The YAML files in `configs/`
only override defaults; `--set section.key=value` overrides on top of them. Loading validates types and
ranges and names the bad key in a one-line `ConfigError`. Derived values are properties.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line naming the key."""


PLAY_BAND = (96, 160, 8, 152)
"""KungFuMaster's play band in its native 210x160 screen, [top, bottom, left, right]: the 64x144 strip the
fighters and knives move in, below the score, timer and health bars."""

GAME = "kung_fu_master"
"""The game this project's perception is tuned for: the play band, the detector's sizes and the RAM map."""


@dataclass
class EnvConfig:
    game: str = GAME
    """ALE ROM name (snake_case). Another game needs its own env.crop (or env.crop: null and env.resize)."""
    num_envs: int = 8
    """Parallel emulators, stepped together in C++ threads by AtariVectorEnv."""
    num_threads: int = 0
    """Emulator threads; 0 lets ALE choose (one per core)."""
    repeat_action_probability: float = 0.25
    """Sticky actions: the chance that the emulator repeats the previous action (protocol: 0.25)."""
    frameskip: int = 4
    """Emulator frames per agent step; the last two are max-pooled."""
    stack: int = 4
    """Frames stacked into one observation."""
    max_episode_frames: int = 108_000
    """Emulator frames after which a game is truncated (protocol: 108,000 = 30 minutes)."""
    noop_max: int = 0
    """Random no-op steps at each reset (0: the sticky-action protocol needs none)."""
    crop: list[int] | None = field(default_factory=lambda: list(PLAY_BAND))
    """[top, bottom, left, right] rows/columns kept from the native 210x160 screen: by default
    KungFuMaster's 64x144 play band; null keeps the whole screen (or resizes it, env.resize)."""
    resize: list[int] | None = None
    """[height, width] the emulator resizes the whole screen to (e.g. [84, 84]); needs crop: null."""

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """Shape of one observation: (stack, height, width)."""
        if self.crop is not None:
            top, bottom, left, right = self.crop
            return (self.stack, bottom - top, right - left)
        if self.resize is not None:
            return (self.stack, self.resize[0], self.resize[1])
        return (self.stack, 210, 160)

    def validate(self) -> None:
        _check(isinstance(self.game, str) and self.game.replace("_", "").isalnum() and self.game.islower(),
               "env.game", f"{self.game!r} is not an ALE game name (snake_case, e.g. kung_fu_master)")
        _check(self.game == GAME or self.crop is None or tuple(self.crop) != PLAY_BAND, "env.crop",
               f"{list(PLAY_BAND)} is KungFuMaster's play band; for env.game {self.game} choose the rows and "
               f"columns to keep, or env.crop: null with env.resize: [84, 84]")
        _check(self.num_envs >= 1, "env.num_envs", "must be at least 1")
        _check(self.num_threads >= 0, "env.num_threads", "must be 0 (auto) or positive")
        _check(0.0 <= self.repeat_action_probability <= 1.0, "env.repeat_action_probability",
               "must be in [0, 1]")
        _check(self.frameskip >= 1, "env.frameskip", "must be at least 1")
        _check(self.stack >= 1, "env.stack", "must be at least 1")
        _check(self.max_episode_frames >= 1, "env.max_episode_frames", "must be at least 1")
        _check(self.noop_max >= 0, "env.noop_max", "must be non-negative")
        if self.crop is not None:
            _check(len(self.crop) == 4, "env.crop", "must be [top, bottom, left, right]")
            top, bottom, left, right = self.crop
            _check(0 <= top < bottom <= 210 and 0 <= left < right <= 160, "env.crop",
                   f"{self.crop} is not inside the 210x160 screen")
            _check(self.resize is None, "env.resize", "cannot be combined with env.crop (set env.crop: null)")
        if self.resize is not None:
            _check(len(self.resize) == 2 and min(self.resize) >= 8, "env.resize",
                   "must be [height, width], each at least 8")


@dataclass
class ModelConfig:
    features_dim: int = 64
    """Width of the shared tanh code that actor, critic and decoder read."""
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """Output channels of each conv layer of the encoder trunk."""
    kernels: list[int] = field(default_factory=lambda: [8, 4, 3])
    """Kernel size of each conv layer."""
    strides: list[int] = field(default_factory=lambda: [4, 2, 1])
    """Stride of each conv layer."""
    head_hidden: int = 256
    """Hidden units of the actor and critic heads (0: a single linear layer each)."""
    normalization: str = "row_contrast"
    """Input normalization inside the model: scale ([0, 1]), channel_mean (VGG-style mean subtraction per
    stacked frame), pixel_mean (minus the mean image; both fitted on the first rollout), running
    (per-pixel running standardization) or row_contrast (each row minus its background, in units of
    norm_contrast gray levels). See agent/perception/normalization.py."""
    norm_clip: float = 3.0
    """Clip for standardized inputs (running and row_contrast normalization)."""
    norm_contrast: float = 4.0
    """row_contrast: gray levels that make one unit of input (a knife is 11 darker than the wall), > 0."""
    locator_cell: list[int] = field(default_factory=lambda: [22, 2])
    """Rows and columns of one cell of the locator's grid (agent.models.Locator): 3 x 72 cells over a
    64 x 144 frame, split at crop row 44 between the high throw and the low one, each 2 px wide; a
    knife's 5 x 2 box fills three or four of them. The narrower the cells, the finer the knife's column
    the code must hold: the decoder draws a knife beside a fighter only when the code places it to a few
    pixels."""

    def validate(self) -> None:
        _check(self.features_dim >= 1, "model.features_dim", "must be at least 1")
        n = len(self.channels)
        _check(n >= 1 and len(self.kernels) == n and len(self.strides) == n, "model.channels",
               "channels, kernels and strides must be non-empty lists of equal length")
        _check(self.head_hidden >= 0, "model.head_hidden", "must be non-negative")
        _check(self.normalization in NORMALIZATIONS, "model.normalization",
               f"must be one of {', '.join(NORMALIZATIONS)}")
        _check(self.norm_clip > 0, "model.norm_clip", "must be positive")
        _check(self.norm_contrast > 0, "model.norm_contrast", "must be positive")
        _check(len(self.locator_cell) == 2 and min(self.locator_cell) >= 1, "model.locator_cell",
               "must be two positive integers: rows and columns of a cell")


NORMALIZATIONS = ("scale", "channel_mean", "pixel_mean", "running", "row_contrast")


@dataclass
class PPOConfig:
    algo: str = "ppo"
    """Learner: ppo (clipped surrogate, several epochs of minibatches) or a2c (one full-batch step)."""
    num_steps: int = 128
    """Steps per env in each rollout."""
    lr: float = 2.5e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 4
    """Minibatches per epoch (ppo)."""
    update_epochs: int = 4
    """Passes over each rollout (ppo)."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    clip_coef: float = 0.1
    """PPO ratio clip."""
    clip_vloss: bool = True
    """Clip the value loss around the rollout's values (ppo)."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    reward_clip: bool = True
    """Learn from sign(reward); the logged game score is always the raw one."""
    life_loss_done: bool = True
    """Cut bootstrapping at a lost life (learning only; the game goes on and is scored whole): the value
    of the steps before a death no longer counts the next life's rewards."""
    detach_encoder: bool = False
    """Stop actor and critic gradients at the code: the encoder learns from the decoder and the locator alone."""

    @property
    def is_ppo(self) -> bool:
        return self.algo == "ppo"

    def validate(self) -> None:
        _check(self.algo in ("ppo", "a2c"), "ppo.algo", "must be ppo or a2c")
        _check(self.num_steps >= 1, "ppo.num_steps", "must be at least 1")
        _check(self.lr > 0, "ppo.lr", "must be positive")
        _check(0.0 <= self.gamma <= 1.0, "ppo.gamma", "must be in [0, 1]")
        _check(0.0 <= self.gae_lambda <= 1.0, "ppo.gae_lambda", "must be in [0, 1]")
        _check(self.num_minibatches >= 1, "ppo.num_minibatches", "must be at least 1")
        _check(self.update_epochs >= 1, "ppo.update_epochs", "must be at least 1")
        _check(self.clip_coef > 0, "ppo.clip_coef", "must be positive")
        _check(self.max_grad_norm > 0, "ppo.max_grad_norm", "must be positive")


@dataclass
class ReconConfig:
    """The decoder's and the locator's losses, and the small-object detector both are trained against.
    How the defaults were measured: docs/experiments/notebook.md."""

    coef: float = 12.0
    """Weight of the decoder's loss in the total loss, >= 0 (0 turns the decoder's loss off). It sets the
    decoder's pull on the shared encoder against PPO's (the decoder itself is stepped by Adam, which a
    constant factor barely moves)."""
    loss: str = "weighted"
    """Decoder loss: plain (every pixel weighs 1) or weighted (per-pixel weights, higher on small objects
    and their bridges; agent/perception/weights.py). Plain MSE is `plain` with `error` squared."""
    error: str = "smooth_l1"
    """Per-pixel error of the decoder's loss: smooth_l1 (squared within `error_beta` gray levels, absolute
    beyond) or squared. Where the code leaves a pixel unsure between the wall and a sprite, the squared
    error draws their mean, a ghost that the detector cuts into knife-sized blobs; smooth_l1 draws about
    their median, the wall unless the sprite is likelier (its weight counted), within `error_beta` of it.
    Measured: docs/experiments/knives.md."""
    error_beta: float = 4.0
    """smooth_l1: gray levels (0-255 scale) of error below which it is squared, > 0; keep it below
    `detect_min_contrast` so that an unsure pixel stays under the detector's threshold."""
    object_weight: float = 100.0
    """weighted: weight of a pixel inside a small object's mask, >= 0."""
    mask_grow: int = 0
    """Pixels each detected box grows by, on every side, before it becomes the object mask, >= 0."""
    bridge_cols: int = 6
    """weighted: widest run of wall, in columns, between a small object and a sprite beside it that
    weighs bridge_weight (agent.perception.weights.bridge_mask); 0 turns these bridges off."""
    bridge_rows: int = 12
    """weighted: tallest run of wall, in rows, between a small object and a sprite above or below it that
    weighs bridge_weight; 0 turns these bridges off."""
    bridge_margin: bool = True
    """weighted, with bridges on: also weigh the object's margin where a sprite is near as a bridge."""
    bridge_weight: float = 200.0
    """weighted: weight of a bridge or margin pixel, >= 0."""
    false_weight: float = 20.0
    """weighted: weight of the pixels of each false object of a reconstruction, >= 0: a box the detector
    finds in the decoder's picture that overlaps no object of its target grown by 2 px (a knife drawn where
    there is none, or a piece of a fighter cut loose). Their weight pushes the picture back to the target
    there, against the object weight's pull to draw a knife wherever one may be (at 20 a knife is drawn
    where the code gives it more than one chance in six); 0: off (those pixels weigh as the wall or sprite
    they cover). It costs one detector pass over each decoded frame."""
    false_apart: int = 3
    """weighted, with false_weight: weigh only the false objects farther than this many pixels from every
    sprite pixel of the target outside its objects (the fighters), >= 0: a box drawn beside a fighter, a
    piece of his outline or a knife by him, keeps the weight of what it covers, so the knives beside a
    fighter, where the code is least sure, are still drawn; 0: every false object weighs false_weight."""
    sprite_weight: float = 1.0
    """weighted: weight of a sprite pixel of the target (at least detect_min_contrast gray levels off its
    row's background) outside the objects and bridges, >= 0; the wall weighs 1. Above 1 the decoder draws
    a fighter whole where the code leaves it unsure, not as a knife-sized piece of him."""
    aug_noise_std: float = 0.0
    """Std of Gaussian noise, in gray levels (0-255 scale), added to the encoder's input of the decoder's
    loss; the target stays clean (a denoising autoencoder). 0: off."""
    aug_shift: int = 0
    """Random shift (pad, then crop; DrQ style) of up to this many pixels of the decoder loss's frames;
    frame, target and mask move together. 0: off."""
    decode_share: float = 0.25
    """Share of each minibatch the decoder's loss reads, in (0, 1]: the frames that hold an object first,
    then the others in the minibatch's random order."""
    locate_coef: float = 8.0
    """Weight of the locator's loss (binary cross-entropy of its cells against the object masks;
    agent.models.Locator) in the total loss, >= 0; 0 turns it off. The loss is a mean over the cells, so a
    finer grid (model.locator_cell) needs a larger coefficient for the same pull on each object."""
    locate_pos_weight: float = 5.0
    """Weight, in the locator's loss, of a cell that holds an object against an empty one, >= 1 (a knife
    fills three or four of the default grid's 216 cells)."""
    aux_steps: int = 32
    """Auxiliary steps after each update: this many minibatches of `aux_batch` rollout frames (those with
    an object first) on which only the decoder's and the locator's losses train, stepped by an Adam of
    their own (`aux_lr`). With `aux_detach` they train the decoder and the locator alone, which read the
    code more sharply than the update's few decoder steps teach them to; without it the encoder too, with
    a behaviour-cloning term that keeps the policy where the update left it (PPG's auxiliary phase,
    Cobbe et al. 2021). 0: none."""
    aux_batch: int = 64
    """Frames per auxiliary step, >= 1."""
    aux_lr: float = 5e-4
    """Learning rate of the auxiliary phase's Adam, >= 0, annealed as PPO's (ppo.anneal_lr); 0: ppo.lr."""
    aux_detach: bool = True
    """The auxiliary steps read the code detached, on clean frames: they train the decoder and the locator
    alone (their readout of the code), the encoder and the policy stay as the update left them, and no
    cloning term is needed. False: they train the encoder as well."""
    aux_clone_coef: float = 0.01
    """Weight of the auxiliary steps' behaviour-cloning term: the KL divergence from the policy before
    the auxiliary steps to the policy now, on the same frames, >= 0. It is weighed against recon.coef x
    the decoder's loss, a few thousandths in size."""
    detect_min_contrast: int = 6
    """Detector: gray levels a pixel must differ from its row's background by, 1-255 (a knife: 11)."""
    detect_max_width: int = 20
    """Detector: widest small object, px (dragon fire: 18)."""
    detect_max_height: int = 14
    """Detector: tallest small object, px (snakes, balls: 12; a standing fighter: over 30)."""
    detect_min_area: int = 2
    """Detector: fewest foreground pixels of a small object."""
    detect_group_rows: int = 3
    """Detector: rows up and down that join the pieces of one sprite, >= 0: pieces split by up to twice as
    many empty rows join (the game draws fighters with gap rows, a decoder with wider gaps where it is
    unsure of a dark belt or hair)."""
    detect_group_cols: int = 0
    """Detector: columns left and right that join pieces (0 keeps a knife flying beside a fighter apart)."""
    detect_faint_contrast: int = 20
    """Detector: most gray levels off the background of a pixel of the faint pass, which finds a knife
    (11 levels) that touches a fighter (60 and more) apart from it; 0 turns the pass off."""
    detect_faint_max_height: int = 3
    """Detector: tallest group of the faint pass, rows, >= 1; it must also be wider than tall (a knife is
    5 x 2 and flies level)."""

    @property
    def needs_masks(self) -> bool:
        """Whether the losses read object masks (the decoder's, when on and not plain, and the locator's):
        without them the rollout detects nothing."""
        return (self.decodes and self.loss != "plain") or self.locates

    @property
    def decodes(self) -> bool:
        """Whether the decoder's loss is on (without it the decoder is not run)."""
        return self.coef > 0

    @property
    def bridges(self) -> bool:
        """Whether the weighted loss weighs bridges (bridge_cols or bridge_rows) and margins."""
        return self.bridge_cols > 0 or self.bridge_rows > 0

    @property
    def locates(self) -> bool:
        """Whether the locator's loss is on."""
        return self.locate_coef > 0

    @property
    def auxiliary(self) -> bool:
        """Whether the auxiliary steps run: `aux_steps` above 0 and a loss for them to train (the
        decoder's or the locator's) on."""
        return self.aux_steps > 0 and (self.decodes or self.locates)

    @property
    def augments(self) -> bool:
        """Whether the decoder's loss perturbs its frames (noise or shifts)."""
        return self.aug_noise_std > 0 or self.aug_shift > 0

    def validate(self) -> None:
        _check(self.coef >= 0, "recon.coef", "must be non-negative")
        _check(self.loss in RECON_LOSSES, "recon.loss", f"must be one of {', '.join(RECON_LOSSES)}")
        _check(self.error in RECON_ERRORS, "recon.error", f"must be one of {', '.join(RECON_ERRORS)}")
        _check(self.error_beta > 0, "recon.error_beta", "must be positive")
        _check(self.object_weight >= 0, "recon.object_weight", "must be non-negative")
        _check(self.mask_grow >= 0, "recon.mask_grow", "must be non-negative")
        _check(self.bridge_cols >= 0, "recon.bridge_cols", "must be non-negative")
        _check(self.bridge_rows >= 0, "recon.bridge_rows", "must be non-negative")
        _check(self.bridge_weight >= 0, "recon.bridge_weight", "must be non-negative")
        _check(self.false_weight >= 0, "recon.false_weight", "must be non-negative")
        _check(self.false_apart >= 0, "recon.false_apart", "must be non-negative")
        _check(self.sprite_weight >= 0, "recon.sprite_weight", "must be non-negative")
        _check(self.aug_noise_std >= 0, "recon.aug_noise_std", "must be non-negative")
        _check(self.aug_shift >= 0, "recon.aug_shift", "must be non-negative")
        _check(0 < self.decode_share <= 1, "recon.decode_share", "must be in (0, 1]")
        _check(self.locate_coef >= 0, "recon.locate_coef", "must be non-negative")
        _check(self.locate_pos_weight >= 1, "recon.locate_pos_weight", "must be at least 1")
        _check(self.aux_steps >= 0, "recon.aux_steps", "must be 0 (off) or positive")
        _check(self.aux_batch >= 1, "recon.aux_batch", "must be at least 1")
        _check(self.aux_clone_coef >= 0, "recon.aux_clone_coef", "must be non-negative")
        _check(self.aux_lr >= 0, "recon.aux_lr", "must be 0 (ppo.lr) or positive")
        _check(1 <= self.detect_min_contrast <= 255, "recon.detect_min_contrast", "must be in [1, 255]")
        _check(self.detect_max_width >= 1, "recon.detect_max_width", "must be at least 1")
        _check(self.detect_max_height >= 1, "recon.detect_max_height", "must be at least 1")
        _check(self.detect_min_area >= 1, "recon.detect_min_area", "must be at least 1")
        _check(self.detect_group_rows >= 0, "recon.detect_group_rows", "must be non-negative")
        _check(self.detect_group_cols >= 0, "recon.detect_group_cols", "must be non-negative")
        _check(self.detect_faint_max_height >= 1, "recon.detect_faint_max_height", "must be at least 1")
        _check(self.detect_faint_contrast == 0 or self.detect_min_contrast <= self.detect_faint_contrast <= 255,
               "recon.detect_faint_contrast", "must be 0 (off) or between recon.detect_min_contrast and 255")


RECON_LOSSES = ("plain", "weighted")
RECON_ERRORS = ("squared", "smooth_l1")


@dataclass
class TrainConfig:
    total_frames: int = 200_000
    """Emulator frames to train for (agent steps x frameskip, summed over envs)."""
    seed: int = 1
    """Seed of torch, numpy and every emulator episode."""
    device: str = "auto"
    """auto (cuda when present), cpu or cuda[:N]."""
    checkpoint_every_updates: int = 50
    """Write checkpoints/latest.pt (and a numbered copy) every this many updates, and at the end."""
    keep_checkpoints: int = 3
    """Numbered checkpoints kept besides latest.pt."""
    deterministic: bool = True
    """Ask torch for deterministic kernels (resume then continues bit for bit on the CPU)."""
    torch_threads: int = 0
    """CPU threads for torch (0: torch's default). On a small CPU, 1 leaves the cores to the emulators and
    avoids thread oversubscription."""
    eval_every_updates: int = 0
    """Evaluate a snapshot in a background process every this many updates (0: never)."""
    eval_episodes: int = 4
    """Full games per periodic evaluation."""
    eval_max_frames: int = 108_000
    """Frame cap per game of a periodic evaluation (the protocol's 108,000; lower it on a slow CPU)."""
    video_every_updates: int = 0
    """Record a gameplay video in a background process every this many updates (0: never)."""
    video_max_frames: int = 4_000
    """Emulator frames per periodic video."""
    time_limit_s: float = 0.0
    """Stop (and save) after the update during which this many seconds of training passed; 0: no limit."""

    def validate(self) -> None:
        _check(self.total_frames >= 1, "train.total_frames", "must be at least 1")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "train.device", "must be auto, cpu or cuda[:N]")
        _check(self.checkpoint_every_updates >= 1, "train.checkpoint_every_updates", "must be at least 1")
        _check(self.keep_checkpoints >= 0, "train.keep_checkpoints", "must be non-negative")
        _check(self.torch_threads >= 0, "train.torch_threads", "must be 0 (default) or positive")
        _check(self.eval_every_updates >= 0, "train.eval_every_updates", "must be 0 (never) or positive")
        _check(self.eval_episodes >= 1, "train.eval_episodes", "must be at least 1")
        _check(self.eval_max_frames >= 1, "train.eval_max_frames", "must be at least 1")
        _check(self.video_every_updates >= 0, "train.video_every_updates", "must be 0 (never) or positive")
        _check(self.video_max_frames >= 1, "train.video_max_frames", "must be at least 1")
        _check(self.time_limit_s >= 0, "train.time_limit_s", "must be non-negative (0: no limit)")


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def batch_size(self) -> int:
        """Transitions per rollout."""
        return self.env.num_envs * self.ppo.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.ppo.num_minibatches if self.ppo.is_ppo else self.batch_size

    @property
    def frames_per_update(self) -> int:
        return self.batch_size * self.env.frameskip

    @property
    def num_updates(self) -> int:
        """Updates of a single-process run: train.total_frames in whole rollouts."""
        return self.updates(1)

    @property
    def aux_lr(self) -> float:
        """The auxiliary phase's learning rate before annealing: recon.aux_lr, or ppo.lr when it is 0."""
        return self.recon.aux_lr or self.ppo.lr

    def updates(self, world_size: int) -> int:
        """Updates of a run of `world_size` data-parallel ranks, whose frames all count to train.total_frames."""
        return max(1, self.train.total_frames // (self.frames_per_update * world_size))

    def validate(self) -> Config:
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        if self.ppo.is_ppo:
            _check(self.batch_size % self.ppo.num_minibatches == 0, "ppo.num_minibatches",
                   f"must divide the batch of {self.batch_size} transitions")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks `value` against a field annotation (str, int, float, bool, list[int], X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation}")


def _apply(obj: Any, values: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise ConfigError(f"{key}: unknown key")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of keys")
            _apply(current, value, f"{key}.")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))


def _parse_override(text: str) -> dict[str, Any]:
    """'ppo.lr=1e-4' -> {'ppo': {'lr': 0.0001}}; the value is read as YAML."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise ConfigError(f"{text}: an override must look like section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{dotted}: cannot read value {raw!r}: {yaml_problem(exc)}") from None
    # YAML 1.1 reads 1e-4 as a string; accept plain floats in scientific notation too.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    tree: dict[str, Any] = {}
    node = tree
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


RETIRED = {
    "model": {"code_layout": "dense", "column_units": None, "refine_channels": 0, "refine_layers": None,
              "refine_bf16": None},
    "recon": {"empty_frame_weight": 1.0, "balance": None},
}
"""Keys older versions wrote and this one no longer has, with the value under which dropping them changes
nothing (None: any value). See docs/experiments/retired.md for what they did and why they went."""


def drop_retired(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config dict without RETIRED keys; a ConfigError names one that was set to a value
    this version cannot reproduce (say, a model trained with model.code_layout: columns)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, keys in RETIRED.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        for key, harmless in keys.items():
            if key in values:
                value = values.pop(key)
                if harmless is not None and value != harmless:
                    raise ConfigError(f"{section}.{key}: {value!r} is an option this version no longer has")
    return data


ADDED = {"recon": {"error": "squared", "aux_detach": False, "aux_lr": 0.0, "false_weight": 0.0, "false_apart": 0}}
"""Keys newer than some saved configs, with the value that reproduces what the versions before them did
where it differs from today's default: a saved config without such a key is read with that value."""


def fill_added(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config dict with each ADDED key it lacks set to its earlier behaviour."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, keys in ADDED.items():
        if isinstance(data.get(section), dict):
            for key, value in keys.items():
                data[section].setdefault(key, value)
    return data


def config_from_dict(data: dict[str, Any] | None, overrides: list[str] = ()) -> Config:
    """Builds and validates a Config from a nested dict plus `key=value` overrides."""
    config = Config()
    if data is not None:
        if not isinstance(data, dict):
            raise ConfigError("config: the file must hold a mapping of sections")
        _apply(config, data, "")
    for text in overrides:
        _apply(config, _parse_override(text), "")
    return config.validate()


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Reads a YAML file of overrides on top of the defaults, then applies `overrides`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: no such file {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not a text file (UTF-8); give a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {yaml_problem(exc)}") from None
    return config_from_dict(data, overrides)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column counted from 1)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "unreadable"
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
