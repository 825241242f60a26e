"""Checkpoints: plain dicts of tensors and numbers, verified on load, loaded with weights_only=True.

On disk, a run's `checkpoints/` folder holds `latest.pt` and the newest numbered `update_NNNNNNN.pt`
(`train.keep_checkpoints` of them), each a complete checkpoint: the model (normalizer statistics
included), the optimizer, the torch RNG states, the step counters, the emulator state (the seeds and
actions of the games in progress, see `agent.env.game`), the config as a plain dict, a format version and
a `digest`: the SHA-256 of everything else, key by key and tensor by tensor. Nothing is pickled as code.

A checkpoint is written to a temp file in the same folder, flushed to disk, renamed over the old one and
the folder flushed too: a crash or a full disk mid-save leaves the previous file whole. Loading
recomputes the digest, so a file cut short or with a flipped bit is refused in one line, and a resumed
run falls back to the newest intact numbered checkpoint (`load_resumable`). Format 2 files always carry
a digest; format 1 files without one (the agents exported before it existed) load unverified.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from agent.config import Config, ConfigError, config_from_dict, drop_retired, fill_added
from agent.device import place
from agent.models import Agent
from agent.runs.files import fsync_dir

VERSION = 2
"""The format this version writes: format 1 with a digest in every file (a format 1 file may lack one)."""
READABLE = (1, 2)
NUM_ACTIONS_KEY = "num_actions"
OPTIONAL_PREFIX = "locator."
"""Weights a checkpoint may lack (see load_weights)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line: `problem` (what is wrong), then `hint`
    (what to do), when there is one."""

    def __init__(self, problem: str, hint: str = ""):
        super().__init__(f"{problem}; {hint}" if hint else problem)
        self.problem = problem


DAMAGED_HINT = "use an intact copy, such as a numbered update_*.pt of the same run"


def content_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint dict's content (its `digest` entry left out): every key, number, string and
    tensor (dtype, shape and bytes), in key order. The same for a dict and its torch.save / torch.load
    round trip, so it tells whether a file still holds what was written."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            h.update(b"{")
            for key in sorted(value, key=str):
                if value is state and key == "digest":
                    continue
                h.update(repr(key).encode())
                feed(value[key])
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for item in value:
                feed(item)
            h.update(b"]")
        else:
            h.update(f"{type(value).__name__}:{value!r}".encode())

    feed(state)
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Writes `state` with its digest to a temp file in the same folder, flushes it, renames it over `path`
    and flushes the folder: a crash or a full disk never leaves half a file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "digest": content_digest(state)}
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
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at `path`, its digest checked; a CheckpointError says in one line what is wrong."""
    path = Path(path)
    if not path.is_file():
        hint = f"give a checkpoint file, such as {path / 'checkpoints' / 'latest.pt'}" if path.is_dir() else ""
        raise CheckpointError(f"no checkpoint at {path}" + (" (a folder)" if path.is_dir() else ""), hint)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:  # the file system refuses: no permission, say
        raise CheckpointError(f"cannot read {path} ({exc.strerror or exc})",
                              "check that the file is readable") from None
    try:
        with warnings.catch_warnings():  # torch warns about some damage ("pickle protocol 167") before failing
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises several types (OSError too) for a truncated or foreign file
        raise CheckpointError(f"{path} is damaged or not a checkpoint: it cannot be read as one (cut short, "
                              f"overwritten, or another kind of file)", DAMAGED_HINT) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is damaged or not a checkpoint of this project: it holds no model and "
                              f"config", "give a file that kungfu-train or kungfu-export-agent wrote")
    # The digest first: a flipped bit in the version or a key's name is damage, not another kind of file.
    if "digest" in state and state["digest"] != content_digest(state):
        raise CheckpointError(f"{path} is damaged: its content does not match the digest written with it",
                              DAMAGED_HINT)
    if state.get("version") == VERSION and "digest" not in state:
        raise CheckpointError(f"{path} is damaged: the digest written with it is gone", DAMAGED_HINT)
    if "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is damaged or not a checkpoint of this project: it holds no model and "
                              f"config", "give a file that kungfu-train or kungfu-export-agent wrote")
    if state.get("version") not in READABLE:
        raise CheckpointError(f"{path} has checkpoint format {state.get('version')}; this version reads "
                              f"formats {', '.join(map(str, READABLE))}",
                              "use the version of this project that wrote it")
    return state


def load_resumable(run_dir: str | Path, map_location: str | torch.device = "cpu",
                   quiet: bool = False) -> tuple[dict[str, Any], Path]:
    """The newest intact checkpoint of a run, and its path: `latest.pt`, else the numbered ones from the
    newest down, with a one-line warning on stderr naming the damaged files and the one used (unless
    `quiet`: a caller that only peeks before the trainer loads it). No intact checkpoint is a
    CheckpointError that lists what was tried."""
    folder = Path(run_dir) / "checkpoints"
    candidates = [folder / "latest.pt", *reversed(numbered_checkpoints(Path(run_dir)))]
    damaged: list[str] = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as exc:
            damaged.append(exc.problem)
            continue
        if damaged and not quiet:
            print(f"warning: {'; '.join(damaged)}; resuming from {path} instead", file=sys.stderr, flush=True)
        return state, path
    if not damaged:
        raise CheckpointError(f"{run_dir} holds no checkpoint to resume (looked for {folder}/latest.pt and "
                              f"update_*.pt)", "start a new run with --config")
    raise CheckpointError(f"{run_dir} holds no intact checkpoint to resume; tried {len(damaged)}: "
                          f"{'; '.join(damaged)}", "restore one from a copy, or start a new run with --config")


def checkpoint_config(state: dict[str, Any]) -> Config:
    """The config a checkpoint was trained with, less the options this version retired and with the
    options added since set to what that version did."""
    try:
        return config_from_dict(fill_added(drop_retired(state["config"])))
    except (ConfigError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint's config does not fit this version: {exc}") from None


def build_agent(state: dict[str, Any], config: Config, device: str | torch.device = "cpu") -> Agent:
    """The checkpoint's agent, with its weights and normalizer statistics, in eval mode."""
    try:
        agent = Agent(config.env.obs_shape, int(state[NUM_ACTIONS_KEY]), config.model)
    except KeyError as exc:
        raise CheckpointError(f"the checkpoint has no {exc.args[0]!r} entry, so it does not describe an agent",
                              "give a file that kungfu-train or kungfu-export-agent wrote") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint does not describe an agent this version can build: {exc}") from None
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


def numbered_checkpoints(run_dir: Path) -> list[Path]:
    """The run's numbered checkpoints, oldest first."""
    pattern = re.compile(r"^update_(\d+)\.pt$")
    return sorted(p for p in (run_dir / "checkpoints").glob("update_*.pt") if pattern.match(p.name))


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keeps the `keep` newest numbered checkpoints and removes temp files of interrupted saves; latest.pt
    always stays."""
    numbered = numbered_checkpoints(run_dir)
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)
    for tmp in (run_dir / "checkpoints").glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


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
