"""Videos of the agent playing one protocol game, with what it sees and what it thinks beside the game.

A video plays one `agent.env.single.SingleGame` (the single gym env that can render, observed as the
vector env observes it). Each video frame shows one agent step: the game in colour, upscaled with
nearest-neighbour so pixels stay sharp; beside it the agent's input (the newest of the stacked frames),
the decoder's reconstruction with its error, and the play band with the small objects the detector finds
boxed; below, the score, lives, value estimate, the chosen action and the most probable actions.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from agent.config import Config, EnvConfig
from agent.device import resolve_device
from agent.env.protocol import PROTOCOL_MAX_FRAMES, protocol_env_config
from agent.env.single import SingleGame
from agent.models import Agent
from agent.perception.detection import detect_small_objects
from agent.watching.evaluation import load_policy, policy_step

Box = tuple[int, int, int, int]


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
        (recon_title(recon, obs_frame), upscale(_gray_to_rgb(recon_u8), k)),
        (f"small objects: {found}", band),
    ]
    for index, (title, image) in enumerate(panels):
        x, y = layout.panel_origin(index)
        _text(canvas, title, x, y - 7, 0.5, DIM_TEXT)
        _paste(canvas, image, (x, y))


FLAT_GRAY_LEVELS = 2.0
"""A reconstruction whose pixels spread less than this many gray levels (standard deviation) is flat."""


def recon_title(recon: np.ndarray, obs_frame: np.ndarray) -> str:
    """The reconstruction panel's title: its error against the input frame, or, for a picture with no
    structure (a decoder early in training draws the wall's flat gray), that it has not learned yet."""
    if float(recon.std()) * 255.0 < FLAT_GRAY_LEVELS:
        return "reconstruction: flat, the decoder has not learned yet"
    mse = float(np.mean((recon - obs_frame.astype(np.float32) / 255.0) ** 2))
    return f"reconstruction (decoder), mse {mse:.5f}"


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
    """The detector with the settings of `config.recon` when given; None when the observation is not in
    native pixels (a resize blurs the small objects away, and the detector's sizes are native pixels)."""
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
    """Loads a checkpoint and records one game of it; what `kungfu-record-video` runs."""
    agent, config, _ = load_policy(path, resolve_device(device))
    return record_video(agent, config.env, out, max_frames=max_frames, fps=fps, seed=seed, panels=panels,
                        greedy=greedy, game_scale=game_scale, detector=default_detector(config),
                        progress=progress)
