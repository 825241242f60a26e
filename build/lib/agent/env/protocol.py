"""The evaluation protocol's game settings: sticky actions 0.25, the full game, the 108,000-frame cap.

Every score this project reports is measured under it: all lives until game over or the cap, the
unclipped game score, no no-op starts (Machado et al., 2018). Most published Atari scores use no sticky
actions and 30 no-op starts instead, which is easier.
"""

from __future__ import annotations

import dataclasses

from agent.config import EnvConfig

PROTOCOL_STICKY = 0.25
PROTOCOL_MAX_FRAMES = 108_000


def protocol_env_config(cfg: EnvConfig, num_envs: int, max_frames: int | None = None,
                        num_threads: int = 0) -> EnvConfig:
    """The checkpoint's observation pipeline with the evaluation protocol's game settings."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    return dataclasses.replace(
        cfg,
        num_envs=num_envs,
        num_threads=num_threads,
        repeat_action_probability=PROTOCOL_STICKY,
        max_episode_frames=PROTOCOL_MAX_FRAMES if max_frames is None else max_frames,
        noop_max=0,
    )
