"""The rollout buffer and the loop that fills it: T steps of N envs, on the learner's device.

In the rollout the policy acts in every env at once; the emulator steps in C++ threads (`GameEnv.send`),
and meanwhile the detector finds the small objects of the frames the policy has just acted on, before
`GameEnv.recv` waits for the step. Observations stay uint8 until the model normalizes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from agent.config import Config
from agent.env.game import GameEnv
from agent.models import Agent
from agent.perception.weights import object_masks


@dataclass
class RolloutBuffer:
    """One rollout; row t of each (T, N) tensor is step t of every env."""

    obs: torch.Tensor
    """uint8 (T, N, stack, h, w): the observations acted on."""
    actions: torch.Tensor
    logprobs: torch.Tensor
    rewards: torch.Tensor
    """(T, N) the rewards learned from (sign-clipped by default)."""
    dones: torch.Tensor
    """(T, N) 1 where obs[t] starts a new game (or, with ppo.life_loss_done, a new life)."""
    values: torch.Tensor
    masks: list[np.ndarray | None]
    """Per step, the bool small-object masks (N, h, w) of the newest frames, or None when no loss reads them."""
    next_obs: torch.Tensor
    """(N, stack, h, w) the observation after the last step."""
    next_frames: np.ndarray
    """next_obs as the env returned it, which the detector reads (valid until the next recv)."""
    next_done: torch.Tensor
    timers: dict[str, float] = field(default_factory=dict)
    """Seconds the last rollout spent in the policy, the emulator and the detector."""

    @classmethod
    def allocate(cls, config: Config, first_obs: np.ndarray, device: torch.device) -> RolloutBuffer:
        t, n, shape = config.ppo.num_steps, config.env.num_envs, config.env.obs_shape
        zeros = lambda: torch.zeros((t, n), device=device)  # noqa: E731
        return cls(
            obs=torch.zeros((t, n, *shape), dtype=torch.uint8, device=device),
            actions=torch.zeros((t, n), dtype=torch.long, device=device),
            logprobs=zeros(), rewards=zeros(), dones=zeros(), values=zeros(),
            masks=[None] * t,
            next_obs=torch.from_numpy(first_obs).to(device),
            next_frames=first_obs,
            next_done=torch.zeros(n, device=device),
        )

    def object_masks(self) -> torch.Tensor | None:
        """The rollout's masks as one bool tensor (T * N, h, w) on the device, or None."""
        if self.masks[0] is None:
            return None
        return torch.from_numpy(np.stack(self.masks)).to(self.obs.device).flatten(0, 1)


GameOver = Callable[[float, int, int], None]
"""Called with (score, game length in emulator frames, frames trained so far) when a game ends."""


@torch.no_grad()
def collect_rollout(agent: Agent, env: GameEnv, buffer: RolloutBuffer, config: Config, frames: int,
                    game_over: GameOver, world_size: int = 1) -> int:
    """Fills `buffer` with the next `ppo.num_steps` steps of every env; returns the frames counter after it,
    which counts the steps of all `world_size` ranks (each steps as many envs as this one)."""
    cfg_ppo, device = config.ppo, buffer.obs.device
    step_frames = env.num_envs * config.env.frameskip * world_size
    timer = {"policy": 0.0, "env": 0.0, "detect": 0.0}
    agent.eval()
    for step in range(cfg_ppo.num_steps):
        tick = time.perf_counter()
        buffer.obs[step] = buffer.next_obs
        buffer.dones[step] = buffer.next_done
        action, logprob, _, value = agent.get_action_and_value(buffer.next_obs)
        buffer.actions[step], buffer.logprobs[step], buffer.values[step] = action, logprob, value
        action_np = action.cpu().numpy()
        acted = time.perf_counter()
        env.send(action_np)
        sent = time.perf_counter()
        buffer.masks[step] = object_masks(buffer.next_frames[:, -1], config.recon)
        detected = time.perf_counter()
        result = env.recv()
        timer["policy"] += acted - tick
        timer["detect"] += detected - sent
        timer["env"] += (sent - acted) + (time.perf_counter() - detected)
        reward = np.sign(result.reward) if cfg_ppo.reward_clip else result.reward
        buffer.rewards[step] = torch.from_numpy(reward).to(device)
        done = result.done | result.life_lost if cfg_ppo.life_loss_done else result.done
        buffer.next_done = torch.from_numpy(done.astype(np.float32)).to(device)
        buffer.next_obs = torch.from_numpy(result.obs).to(device, non_blocking=True, copy=True)
        buffer.next_frames = result.obs
        frames += step_frames
        for score, length in zip(result.finished_scores, result.finished_frames, strict=True):
            game_over(score, length, frames)
    buffer.timers = timer
    return frames
