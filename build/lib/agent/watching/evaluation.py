"""Evaluation under the project's protocol: full games, sticky actions 0.25, the unclipped game score.

Whatever the checkpoint trained with, evaluation forces sticky actions 0.25, no no-op starts, no
life-loss episodes and the 108,000-frame cap (a smaller cap is allowed for tests and is recorded in the
result's `protocol`, which then says `standard: false`). The observation pipeline (crop or resize, stack,
frameskip) is the checkpoint's own, since the agent's input depends on it.

N games run on min(N, num_envs) parallel emulators, and env i plays a fixed quota of them (N // E, plus
one for the first N % E envs). Taking the first N games to *finish* instead would favour short games;
a fixed quota per env takes every game it starts, whatever its length. Game k of env i is seeded from
(seed, i, k) by `agent.env.GameEnv`, so an evaluation is reproducible.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent.config import Config, EnvConfig
from agent.device import resolve_device
from agent.env.game import GameEnv
from agent.env.protocol import PROTOCOL_MAX_FRAMES, PROTOCOL_STICKY, protocol_env_config
from agent.env.scores import human_normalized, reference_scores
from agent.models import Agent
from agent.runs.checkpoint import build_agent, checkpoint_config, load_checkpoint


def protocol_record(cfg: EnvConfig, greedy: bool, seed: int, episodes: int) -> dict[str, Any]:
    """What a score was measured under, stored beside it."""
    return {
        "game": cfg.game,
        "repeat_action_probability": cfg.repeat_action_probability,
        "frameskip": cfg.frameskip,
        "max_episode_frames": cfg.max_episode_frames,
        "noop_max": cfg.noop_max,
        "full_game": True,
        "reward": "unclipped game score",
        "actions": "greedy" if greedy else "sampled",
        "episodes": episodes,
        "num_envs": cfg.num_envs,
        "seed": seed,
        "obs_shape": list(cfg.obs_shape),
        "crop": cfg.crop,
        "resize": cfg.resize,
        "length_unit": "emulator frames",
        "random_score": (reference_scores(cfg.game) or (None, None))[0],
        "human_score": (reference_scores(cfg.game) or (None, None))[1],
        "standard": cfg.repeat_action_probability == PROTOCOL_STICKY
        and cfg.max_episode_frames == PROTOCOL_MAX_FRAMES and cfg.noop_max == 0,
    }


@dataclass
class PolicyOutput:
    """One forward pass of the policy on a batch of observations."""

    actions: torch.Tensor
    """int64 (N,): the actions taken."""
    probs: torch.Tensor
    """float (N, num_actions): the policy's action probabilities."""
    values: torch.Tensor
    """float (N,): the critic's value estimates."""


@torch.inference_mode()
def policy_step(agent: Agent, obs: torch.Tensor, greedy: bool,
                generator: torch.Generator | None = None) -> PolicyOutput:
    """Greedy (arg-max) or sampled actions for uint8 observations (N, stack, h, w) on the agent's device."""
    code = agent.encode(obs)
    probs = torch.softmax(agent.actor(code), dim=-1)
    values = agent.critic(code).squeeze(-1)
    if greedy:
        actions = probs.argmax(dim=-1)
    else:
        actions = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return PolicyOutput(actions, probs, values)


@dataclass
class EvalResult:
    scores: list[float]
    """Full-game scores, ordered by (env, game index): the same for every run with the same seed."""
    lengths: list[int]
    """Their lengths in emulator frames."""
    protocol: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else to store beside the scores (checkpoint path and counters, device, wall time)."""

    @property
    def mean_score(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def median_score(self) -> float:
        return float(statistics.median(self.scores))

    @property
    def std_score(self) -> float:
        """Population standard deviation (0 for a single game)."""
        return statistics.pstdev(self.scores)

    def to_json(self) -> dict[str, Any]:
        return {
            "mean_score": self.mean_score,
            "median_score": self.median_score,
            "std_score": self.std_score,
            "min_score": min(self.scores),
            "max_score": max(self.scores),
            "human_normalized": human_normalized(self.mean_score, self.protocol["game"]),
            "episodes": len(self.scores),
            "scores": self.scores,
            "lengths": self.lengths,
            "protocol": self.protocol,
            **self.extra,
        }


def game_quotas(episodes: int, num_envs: int) -> np.ndarray:
    """Games each env plays: N // E each, one more for the first N % E envs."""
    quotas = np.full(num_envs, episodes // num_envs, dtype=np.int64)
    quotas[: episodes % num_envs] += 1
    return quotas


def evaluate(agent: Agent, env_cfg: EnvConfig, episodes: int, seed: int = 0, greedy: bool = False,
             progress: bool = False) -> EvalResult:
    """Plays `episodes` full games with `agent` on the vector env of `env_cfg` (protocol settings already
    applied, see `protocol_env_config`; `env_cfg.num_envs` envs are used, at most `episodes`)."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    cfg = dataclasses.replace(env_cfg, num_envs=min(env_cfg.num_envs, episodes))
    device = next(agent.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    quotas = game_quotas(episodes, cfg.num_envs)
    results: list[list[tuple[float, int]]] = [[] for _ in range(cfg.num_envs)]
    env = GameEnv(cfg, seed=seed)
    if env.num_actions != agent.num_actions:
        env.close()
        raise ValueError(f"the agent has {agent.num_actions} actions, {cfg.game} has {env.num_actions}")
    # disable=None: a bar on a terminal, none in a log file or a background job.
    bar = tqdm(total=episodes, unit="game", desc="evaluating", disable=None if progress else True,
               leave=False)
    try:
        obs = env.reset()
        while any(len(r) < q for r, q in zip(results, quotas, strict=True)):
            out = policy_step(agent, torch.from_numpy(obs).to(device), greedy, generator)
            step = env.step(out.actions.cpu().numpy())
            for i, score, frames in zip(np.flatnonzero(step.done), step.finished_scores, step.finished_frames,
                                        strict=True):
                if len(results[i]) < quotas[i]:
                    results[i].append((float(score), int(frames)))
                    bar.update(1)
                    bar.set_postfix(last=f"{score:.0f}")
            obs = step.obs
    finally:
        bar.close()
        env.close()
    games = [game for env_games in results for game in env_games]
    return EvalResult(
        scores=[s for s, _ in games],
        lengths=[n for _, n in games],
        protocol=protocol_record(cfg, greedy, seed, episodes),
    )


def load_policy(path: str | Path, device: torch.device) -> tuple[Agent, Config, dict[str, Any]]:
    """The checkpoint's agent (eval mode, frozen normalizer) on `device`, its config and its counters.

    Every way a file can fail to be a usable checkpoint becomes a one-line `CheckpointError`.
    """
    state = load_checkpoint(path, map_location="cpu")
    config = checkpoint_config(state)
    agent = build_agent(state, config, device)
    counters = state.get("counters")
    counters = counters if isinstance(counters, dict) else {}
    scalars = {k: v for k, v in counters.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return agent, config, scalars


def evaluate_checkpoint(path: str | Path, episodes: int, seed: int = 0, greedy: bool = False,
                        num_envs: int = 8, max_frames: int | None = None, device: str = "auto",
                        num_threads: int = 0, progress: bool = False) -> EvalResult:
    """Loads a checkpoint and evaluates it under the protocol; what `kungfu-evaluate` runs."""
    if num_envs < 1 or num_threads < 0:
        raise ValueError(f"num_envs must be at least 1 and num_threads non-negative, got {num_envs}, "
                         f"{num_threads}")
    torch_device = resolve_device(device)
    agent, config, counters = load_policy(path, torch_device)
    env_cfg = protocol_env_config(config.env, num_envs, max_frames, num_threads)
    start = time.time()
    result = evaluate(agent, env_cfg, episodes, seed=seed, greedy=greedy, progress=progress)
    result.extra = {
        "checkpoint": str(path),
        "checkpoint_counters": counters,
        "device": str(torch_device),
        "wall_seconds": round(time.time() - start, 3),
    }
    return result


def format_table(result: EvalResult) -> str:
    """A plain-text table of the games and the summary, for the terminal."""
    p = result.protocol
    lines = [f"{'game':>5} {'score':>10} {'frames':>8}"]
    games = enumerate(zip(result.scores, result.lengths, strict=True))
    lines += [f"{i:>5} {s:>10.0f} {n:>8}" for i, (s, n) in games]
    warning = "" if p["standard"] else "  [NOT the standard protocol]"
    lines += [
        "-" * 25,
        f"{'mean':>5} {result.mean_score:>10.1f}   median {result.median_score:.1f}, "
        f"std {result.std_score:.1f}",
        _normalized_line(result),
        f"protocol: sticky {p['repeat_action_probability']}, full game, cap {p['max_episode_frames']:,} "
        f"frames, {p['actions']} actions, seed {p['seed']}{warning}",
    ]
    return "\n".join(lines)


def _normalized_line(result: EvalResult) -> str:
    game = result.protocol["game"]
    ref = reference_scores(game)
    if ref is None:
        return f"human-normalized: no reference scores for {game}"
    return (f"human-normalized {human_normalized(result.mean_score, game):.3f} "
            f"(random {ref[0]:,}, human {ref[1]:,})")
