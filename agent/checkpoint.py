"""Checkpoints: plain dicts of tensors and numbers, written atomically, loaded with weights_only=True.

A checkpoint holds the model (normalizer statistics included), the optimizer, the torch RNG states, the
step counters, the emulator state (the seeds and actions of the games in progress, see `agent.env`),
the config as a plain dict and a format version. Nothing is pickled as code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from agent.config import Config, ConfigError, config_from_dict
from agent.device import place
from agent.models import Agent

VERSION = 1
NUM_ACTIONS_KEY = "num_actions"
OPTIONAL_PREFIX = "locator."
"""Weights a checkpoint may lack (see load_weights)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Writes to a temp file in the same folder, then renames: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this project")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {state.get('version')}, expected {VERSION}")
    return state


def checkpoint_config(state: dict[str, Any]) -> Config:
    try:
        return config_from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config does not fit this version: {exc}") from None


def build_agent(state: dict[str, Any], config: Config, device: str | torch.device = "cpu") -> Agent:
    """The checkpoint's agent, with its weights and normalizer statistics, in eval mode."""
    try:
        agent = Agent(config.env.obs_shape, int(state[NUM_ACTIONS_KEY]), config.model)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not describe an agent ({type(exc).__name__}: {exc})") from None
    try:
        load_weights(agent, state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit the architecture of its config: {first}") from None
    return place(agent, torch.device(device)).eval()


def load_weights(agent: Agent, weights: dict[str, torch.Tensor]) -> None:
    """Loads a checkpoint's weights into `agent`. Checkpoints written before the agent had a locator
    (agent.models.Locator) lack its weights; the fresh locator stays, since acting never reads it."""
    missing, unexpected = agent.load_state_dict(weights, strict=False)
    missing = [key for key in missing if not key.startswith(OPTIONAL_PREFIX)]
    if missing or unexpected:
        raise RuntimeError(f"missing weights {missing[:3]}, unexpected weights {unexpected[:3]}")


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[Agent, Config]:
    """Loads a checkpoint's agent (eval mode, frozen normalizer) and its config."""
    state = load_checkpoint(path, map_location="cpu")
    config = checkpoint_config(state)
    return build_agent(state, config, device), config


def numbered_path(run_dir: Path, update: int) -> Path:
    return run_dir / "checkpoints" / f"update_{update:07d}.pt"


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keeps the `keep` newest numbered checkpoints; latest.pt always stays."""
    pattern = re.compile(r"update_(\d+)\.pt$")
    numbered = sorted(p for p in (run_dir / "checkpoints").glob("update_*.pt") if pattern.search(p.name))
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)


def checkpoint_state(agent: Agent, config: Config, **extra: Any) -> dict[str, Any]:
    """The dict `save_checkpoint` writes: what evaluation needs, plus the trainer's `extra` entries
    (optimizer, rng, counters, env)."""
    return {
        "version": VERSION,
        "config": config.to_dict(),
        NUM_ACTIONS_KEY: agent.num_actions,
        "model": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
        **extra,
    }
