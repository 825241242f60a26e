"""One game on a single gym env, observed the way the vector env observes it, for videos and measurements.

The vector env cannot render or show its RAM, so videos and the knife measurements play a single
`gym.make("ALE/<Game>-v5", render_mode="rgb_array")` with the protocol's settings (sticky actions 0.25,
the full game) at frameskip 1, and `SingleGame` builds the agent's observation the way AtariVectorEnv's
C++ preprocessing does (ale_py 0.12, `src/ale/vector/preprocessed_env.cpp`):

- a game is seeded by setting ALE's `random_seed` and reloading the ROM (not gymnasium's SeedSequence);
- a step repeats the action for `frameskip` frames, stops early at game over or the frame cap, and
  max-pools the grayscale screens (ALE's palette, `getScreenGrayscale`) of the last two frames;
- a reset clears the stack to zeros and pushes the first screen (max-pooled with a black frame);
- the newest frame is cropped (or area-resized) like `agent.env.game.GameEnv` does.

With the same seed and actions it reproduces the vector env's observations exactly (tests), and seed `s`
(game `g`) plays the game that env 0 starts as its game `g` in `GameEnv(cfg, seed=s)`.
"""

from __future__ import annotations

import ale_py
import cv2
import gymnasium as gym
import numpy as np

from agent.config import EnvConfig
from agent.env.game import episode_seed
from agent.env.protocol import PROTOCOL_MAX_FRAMES

gym.register_envs(ale_py)




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

    def reset(self, game: int = 0) -> np.ndarray:
        """Starts the seeded game (env 0's game number `game`); returns its first observation (stack, h, w)."""
        # AtariVectorEnv seeds ALE with the seed itself and reloads the ROM; gym's reset(seed=...) would
        # hash the seed first and give another game.
        self.ale.setInt("random_seed", np.int32(episode_seed(self.seed, 0, game)))
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

    @property
    def ram(self) -> np.ndarray:
        """The emulator's 128 bytes of RAM now (a copy), for measuring (agent.env.ram)."""
        return self.ale.getRAM().copy()

    def close(self) -> None:
        self.env.close()
