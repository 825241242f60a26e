"""Videos of the agent playing one protocol game, with what it sees and what it thinks beside the game.

The vector env cannot render, so a video plays a single `gym.make("ALE/<Game>-v5", render_mode="rgb_array")`
with the protocol's settings (sticky actions 0.25, the full game) at frameskip 1, and `SingleGame` builds
the agent's observation the way AtariVectorEnv's C++ preprocessing does (ale_py 0.12,
`src/ale/vector/preprocessed_env.cpp`):

- a game is seeded by setting ALE's `random_seed` and reloading the ROM (not gymnasium's SeedSequence);
- a step repeats the action for `frameskip` frames, stops early at game over or the frame cap, and
  max-pools the grayscale screens (ALE's palette, `getScreenGrayscale`) of the last two frames;
- a reset clears the stack to zeros and pushes the first screen (max-pooled with a black frame);
- the newest frame is cropped (or area-resized) like `agent.env.GameEnv` does.

With the same seed and actions it reproduces the vector env's observations exactly (tests/test_video.py),
and `seed` s plays the game that env 0 starts first in `GameEnv(cfg, seed=s)`.

Each video frame shows one agent step: the game in colour, upscaled with nearest-neighbour so pixels stay
sharp; beside it the agent's input (the newest of the stacked frames), the decoder's reconstruction and
the play band with the small objects `agent.detection` finds boxed; below, the score, lives, value
estimate, the chosen action and the most probable actions.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agent.config import Config, EnvConfig
from agent.device import resolve_device
from agent.env import episode_seed
from agent.evaluation import (
    PROTOCOL_MAX_FRAMES,
    load_policy,
    options_argv,
    policy_step,
    protocol_env_config,
)
from agent.models import Agent

gym.register_envs(ale_py)

Box = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------------
# One game, observed like the vector env observes it


def gym_id(game: str) -> str:
    """'kung_fu_master' -> 'ALE/KungFuMaster-v5'."""
    return "ALE/" + "".join(part.capitalize() for part in game.split("_")) + "-v5"


class SingleGame:
    """One seeded protocol game on the gym env, with AtariVectorEnv's observation and a frame cap."""

    def __init__(self, cfg: EnvConfig, seed: int, max_frames: int = PROTOCOL_MAX_FRAMES):
        self.cfg = cfg
        self.seed = seed
        self.max_frames = max_frames
        try:
            self.env = gym.make(
                gym_id(cfg.game),
                render_mode="rgb_array",
                obs_type="grayscale",
                frameskip=1,  # the skip and the max-pool are done here, as the vector env does them
                repeat_action_probability=cfg.repeat_action_probability,
                full_action_space=False,
                max_num_frames_per_episode=max_frames,
            )
        except gym.error.Error as exc:
            raise ValueError(f"env.game: cannot make {gym_id(cfg.game)}: {exc}") from None
        self.ale = self.env.unwrapped.ale
        self.action_meanings: list[str] = self.env.unwrapped.get_action_meanings()
        self.num_actions = len(self.action_meanings)
        h, w = 210, 160
        self._raw = [np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)]
        self._stack = np.zeros(cfg.obs_shape, np.uint8)
        self.score = 0.0
        self.frames = 0
        self.done = False
        """The game ended: game over or the frame cap."""
        self.game_over = False

    def reset(self) -> np.ndarray:
        """Starts the seeded game; returns its first observation (stack, h, w)."""
        # AtariVectorEnv seeds ALE with the seed itself and reloads the ROM; gym's reset(seed=...) would
        # hash the seed first and give another game.
        self.ale.setInt("random_seed", np.int32(episode_seed(self.seed, 0, 0)))
        self.env.unwrapped.load_game()
        screen, _ = self.env.reset()
        self._raw[0][:] = screen
        self._raw[1][:] = 0
        self._stack[:] = 0
        self._push()
        self.score, self.frames, self.done, self.game_over = 0.0, 0, False, False
        return self._stack.copy()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """One agent step of `cfg.frameskip` frames; returns observation, raw reward and game over."""
        if self.done:
            raise RuntimeError("step() after the game ended; call reset()")
        reward = 0.0
        for skip in range(self.cfg.frameskip, 0, -1):
            screen, r, terminated, truncated, _ = self.env.step(int(action))
            reward += float(r)
            self.frames += 1
            self.game_over = bool(terminated)
            if terminated or truncated or self.frames >= self.max_frames:
                self.done = True
                break
            if skip <= 2:  # the last two frames of the skip are kept for the max-pool
                self._raw[skip - 1][:] = screen
        self._push()
        self.score += reward
        return self._stack.copy(), reward, self.done

    def _push(self) -> None:
        frame = np.maximum(self._raw[0], self._raw[1])
        self._raw[0][:] = frame  # the C++ env pools in place; a frame that is not refreshed keeps it
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self.to_obs_frame(frame)

    def to_obs_frame(self, image: np.ndarray) -> np.ndarray:
        """A native screen (grayscale or RGB) cut to the agent's view: the crop, or the area resize."""
        if self.cfg.crop is not None:
            top, bottom, left, right = self.cfg.crop
            return image[top:bottom, left:right]
        if self.cfg.resize is not None:
            height, width = self.cfg.resize
            return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return image

    @property
    def rgb(self) -> np.ndarray:
        """The current screen in colour, (210, 160, 3) uint8."""
        return self.env.render()

    @property
    def lives(self) -> int:
        return int(self.ale.lives())

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------------
# The picture: layout and drawing

MARGIN = 8
TITLE_H = 24
INFO_H = 124
PANEL_BOX = (432, 192)  # (width, height) an observation panel is scaled to fit, by an integer factor
TOP_ACTIONS = 5

BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
DIM_TEXT = (160, 160, 170)
BAR = (90, 110, 160)
CHOSEN_BAR = (240, 160, 40)
BOX_COLOUR = (255, 40, 200)
RING_GAP = 2
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class PanelLayout:
    """Where everything goes on a video frame; sizes in pixels, (x, y) from the top left corner."""

    obs_hw: tuple[int, int]
    """Height and width of one observation frame."""
    panels: bool = True
    """Draw the input, reconstruction and detection panels beside the game."""
    game_scale: int = 3
    """Integer upscale of the 210x160 game screen."""

    @property
    def obs_scale(self) -> int:
        h, w = self.obs_hw
        return max(1, min(PANEL_BOX[0] // w, PANEL_BOX[1] // h))

    @property
    def panel_size(self) -> tuple[int, int]:
        """(width, height) of one observation panel."""
        h, w = self.obs_hw
        return w * self.obs_scale, h * self.obs_scale

    @property
    def game_size(self) -> tuple[int, int]:
        return 160 * self.game_scale, 210 * self.game_scale

    @property
    def game_origin(self) -> tuple[int, int]:
        return MARGIN, MARGIN

    def panel_origin(self, index: int) -> tuple[int, int]:
        """Top left of panel `index` (0 input, 1 reconstruction, 2 detection), below its title."""
        x = MARGIN + self.game_size[0] + MARGIN
        y = MARGIN + index * (TITLE_H + self.panel_size[1] + MARGIN) + TITLE_H
        return x, y

    @property
    def top_height(self) -> int:
        game_h = self.game_size[1]
        if not self.panels:
            return game_h
        return max(game_h, 3 * (TITLE_H + self.panel_size[1]) + 2 * MARGIN)

    @property
    def info_origin(self) -> tuple[int, int]:
        return MARGIN, MARGIN + self.top_height + MARGIN

    @property
    def width(self) -> int:
        w = MARGIN + self.game_size[0] + MARGIN
        if self.panels:
            w += self.panel_size[0] + MARGIN
        return w + w % 2  # H.264 in yuv420p needs even sizes

    @property
    def height(self) -> int:
        h = MARGIN + self.top_height + MARGIN + INFO_H + MARGIN
        return h + h % 2


@dataclass
class FrameInfo:
    """The numbers overlaid on one video frame."""

    score: float
    lives: int
    frames: int
    value: float
    action: int
    probs: np.ndarray
    action_names: list[str]
    num_boxes: int | None = None
    """Small objects found; None when no detector is available."""


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor: every pixel becomes a sharp factor x factor block."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _gray_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2)


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.55,
          colour: tuple[int, int, int] = TEXT, thickness: int = 1) -> None:
    cv2.putText(canvas, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)


def _paste(canvas: np.ndarray, image: np.ndarray, origin: tuple[int, int]) -> None:
    x, y = origin
    canvas[y:y + image.shape[0], x:x + image.shape[1]] = image


def compose_frame(layout: PanelLayout, rgb: np.ndarray, info: FrameInfo, obs_frame: np.ndarray | None = None,
                  recon: np.ndarray | None = None, band_rgb: np.ndarray | None = None,
                  boxes: list[Box] = ()) -> np.ndarray:
    """One video frame, (layout.height, layout.width, 3) uint8.

    Args:
        rgb: the game screen, (210, 160, 3) uint8.
        info: the numbers for the info bar.
        obs_frame: the agent's newest input frame, (h, w) uint8 (panels only).
        recon: the decoder's picture of it, (h, w) float in [0, 1] (panels only).
        band_rgb: the screen cut to the agent's view in colour, (h, w, 3) uint8 (panels only).
        boxes: (x, y, w, h) boxes in obs_frame coordinates, drawn on band_rgb.
    """
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    _paste(canvas, upscale(rgb, layout.game_scale), layout.game_origin)
    if layout.panels:
        _draw_panels(canvas, layout, info, obs_frame, recon, band_rgb, boxes)
    _draw_info(canvas, layout, info)
    return canvas


def _draw_panels(canvas: np.ndarray, layout: PanelLayout, info: FrameInfo, obs_frame: np.ndarray,
                 recon: np.ndarray, band_rgb: np.ndarray, boxes: list[Box]) -> None:
    k = layout.obs_scale
    recon_u8 = np.clip(np.rint(recon * 255.0), 0, 255).astype(np.uint8)
    band = upscale(band_rgb, k).copy()
    for bx, by, bw, bh in boxes:
        # A 2-px ring with a gap of RING_GAP panel pixels around the object, which stays visible inside.
        g = RING_GAP + 1
        top_left, bottom_right = (bx * k - g, by * k - g), ((bx + bw) * k - 1 + g, (by + bh) * k - 1 + g)
        cv2.rectangle(band, top_left, bottom_right, BOX_COLOUR, 2)
    found = "detector not available" if info.num_boxes is None else f"{info.num_boxes} found"
    h, w = layout.obs_hw
    panels = [
        (f"agent input: newest frame ({h}x{w})", upscale(_gray_to_rgb(obs_frame), k)),
        ("reconstruction (decoder)", upscale(_gray_to_rgb(recon_u8), k)),
        (f"small objects: {found}", band),
    ]
    for index, (title, image) in enumerate(panels):
        x, y = layout.panel_origin(index)
        _text(canvas, title, x, y - 7, 0.5, DIM_TEXT)
        _paste(canvas, image, (x, y))


def _draw_info(canvas: np.ndarray, layout: PanelLayout, info: FrameInfo) -> None:
    x0, y0 = layout.info_origin
    name = info.action_names[info.action]
    _text(canvas, f"score {info.score:,.0f}", x0, y0 + 24, 0.8, TEXT, 2)
    _text(canvas, f"lives {info.lives}", x0, y0 + 52)
    _text(canvas, f"frame {info.frames:,}", x0, y0 + 74, 0.5, DIM_TEXT)
    _text(canvas, f"value {info.value:+.2f}", x0, y0 + 98)
    _text(canvas, f"action {name}", x0, y0 + 120, 0.55, CHOSEN_BAR)
    # The most probable actions as bars; the chosen one in the accent colour.
    bx = x0 + 210
    label_w = 120
    bar_w = min(200, layout.width - MARGIN - bx - label_w - 50)
    order = np.argsort(-info.probs, kind="stable")[:TOP_ACTIONS]
    if info.action not in order:  # a sampled action may be an unlikely one: always show it
        order[-1] = info.action
    for row, a in enumerate(order.tolist()):
        y = y0 + 8 + row * 23
        p = float(info.probs[a])
        colour = CHOSEN_BAR if a == info.action else BAR
        _text(canvas, info.action_names[a], bx, y + 14, 0.45, TEXT if a == info.action else DIM_TEXT)
        cv2.rectangle(canvas, (bx + label_w, y + 3), (bx + label_w + bar_w, y + 17), (45, 45, 52), -1)
        filled = bx + label_w + max(1, round(p * bar_w))
        cv2.rectangle(canvas, (bx + label_w, y + 3), (filled, y + 17), colour, -1)
        _text(canvas, f"{p:4.0%}", bx + label_w + bar_w + 6, y + 15, 0.45, DIM_TEXT)


# ---------------------------------------------------------------------------------------------------
# Encoding and the recording loop


class Mp4Writer:
    """H.264 (libx264, yuv420p) through imageio-ffmpeg, written to a temp file and renamed when closed,
    so a reader never sees half a video. `+faststart` puts the index first for browsers."""

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float):
        import imageio_ffmpeg

        width, height = size
        if width % 2 or height % 2:
            raise ValueError(f"H.264 in yuv420p needs even sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # ffmpeg picks the container from the suffix, so the temp name ends in .mp4 too.
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.mp4")
        self.frames = 0
        self._gen = imageio_ffmpeg.write_frames(
            str(self.tmp), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p", quality=None, macro_block_size=2, ffmpeg_log_level="error",
            output_params=["-crf", "18", "-preset", "fast", "-movflags", "+faststart"],
        )
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        self._gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        self._gen.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._gen.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


Detector = Callable[[np.ndarray], list[Box]]


def default_detector(config: Config | None = None) -> Detector | None:
    """`agent.detection.detect_small_objects`, with the detector settings of `config.recon` when given;
    None when that module does not provide it or the observation is not in native pixels (a resize
    blurs the small objects away, and the detector's sizes are native pixels)."""
    try:
        from agent.detection import detect_small_objects
    except ImportError:
        return None
    if config is None:
        return detect_small_objects
    if config.env.resize is not None:
        return None
    return functools.partial(detect_small_objects, cfg=config.recon)


@torch.inference_mode()
def record_video(agent: Agent, env_cfg: EnvConfig, out: str | Path, max_frames: int = PROTOCOL_MAX_FRAMES,
                 fps: float = 15.0, seed: int = 0, panels: bool = True, greedy: bool = False,
                 game_scale: int = 3, detector: Detector | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Plays one game (until game over or `max_frames` emulator frames) and writes it to `out` (MP4).

    The video has one frame for the start and one per agent step: 15 fps is real time at frameskip 4.
    `env_cfg` gives the observation pipeline; the protocol's sticky actions are forced. `detector` finds
    the small objects boxed in the detection panel (None: no boxes). Returns a summary.
    """
    if max_frames < 1 or fps <= 0 or game_scale < 1:
        raise ValueError("max_frames, fps and game_scale must be positive")
    cfg = protocol_env_config(env_cfg, num_envs=1, max_frames=max_frames)
    device = next(agent.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    detect = detector if panels else None
    game = SingleGame(cfg, seed, max_frames)
    if game.num_actions != agent.num_actions:
        game.close()
        raise ValueError(f"the agent has {agent.num_actions} actions, {cfg.game} has {game.num_actions}")
    layout = PanelLayout(obs_hw=cfg.obs_shape[1:], panels=panels, game_scale=game_scale)
    start = time.time()
    bar = tqdm(total=max_frames, unit="frame", desc="recording", disable=None if progress else True,
               leave=False)
    try:
        with Mp4Writer(out, (layout.width, layout.height), fps) as writer:
            obs = game.reset()
            while True:
                x = torch.from_numpy(obs[None]).to(device)
                decision = policy_step(agent, x, greedy, generator)
                action = int(decision.actions[0])
                rgb = game.rgb
                extra: dict[str, Any] = {}
                boxes: list[Box] = []
                if panels:
                    if detect is not None:
                        boxes = [tuple(int(v) for v in b) for b in detect(obs[-1])]
                    extra = {
                        "obs_frame": obs[-1],
                        "recon": agent.reconstruct(x)[0, 0].float().cpu().numpy(),
                        "band_rgb": game.to_obs_frame(rgb),
                        "boxes": boxes,
                    }
                info = FrameInfo(
                    score=game.score, lives=game.lives, frames=game.frames, value=float(decision.values[0]),
                    action=action, probs=decision.probs[0].float().cpu().numpy(),
                    action_names=game.action_meanings, num_boxes=len(boxes) if detect is not None else None,
                )
                writer.write(compose_frame(layout, rgb, info, **extra))
                if game.done or game.frames >= max_frames:
                    break
                before = game.frames
                obs, _, _ = game.step(action)
                bar.update(game.frames - before)
    finally:
        bar.close()
        game.close()
    return {
        "video": str(out), "video_frames": writer.frames, "fps": fps, "width": layout.width,
        "height": layout.height, "score": game.score, "emulator_frames": game.frames,
        "game_over": game.game_over, "seed": seed, "wall_seconds": round(time.time() - start, 3),
    }


def record_checkpoint_video(path: str | Path, out: str | Path, max_frames: int = PROTOCOL_MAX_FRAMES,
                            fps: float = 15.0, seed: int = 0, panels: bool = True, greedy: bool = False,
                            device: str = "auto", game_scale: int = 3,
                            progress: bool = False) -> dict[str, Any]:
    """Loads a checkpoint and records one game of it; what `scripts/record_video.py` runs."""
    agent, config, _ = load_policy(path, resolve_device(device))
    return record_video(agent, config.env, out, max_frames=max_frames, fps=fps, seed=seed, panels=panels,
                        greedy=greedy, game_scale=game_scale, detector=default_detector(config),
                        progress=progress)


def video_command(checkpoint: str | Path, out: str | Path, **options: Any) -> list[str]:
    """The argv of `scripts/record_video.py` for a background recording (e.g. from the trainer).

    `options` are the script's long options with underscores, e.g. `max_frames=2000, device="cpu",
    no_progress=True`; a True flag is passed bare, False and None are left out.
    """
    script = Path(__file__).resolve().parents[1] / "scripts" / "record_video.py"
    return [sys.executable, str(script), "--checkpoint", str(checkpoint), "--out", str(out),
            *options_argv(options)]
