"""The training loop: rollout, advantages, update, logging, checkpoint, in that order, in `train`.

Set-up and resume (`start_session`), the checkpoint (`save_session`) and the capacity print live in helpers
named for what they do. With `ranks` from `agent.learner.distributed`, the same loop is one rank of a
data-parallel run: every rank steps its own envs and the gradients are averaged; rank 0 alone writes the
run folder.
"""

from __future__ import annotations

import csv
import io
import random
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agent.config import Config, save_config
from agent.device import place
from agent.env.game import GameEnv
from agent.learner.distributed import Ranks, SingleProcess
from agent.learner.ppo import compute_gae
from agent.learner.rollout import RolloutBuffer, collect_rollout
from agent.learner.update import NonFiniteLossError, aux_update, update_agent
from agent.models import Agent
from agent.models.capacity import agent_outputs, capacity_report, format_capacity
from agent.runs.background import BackgroundJobs
from agent.runs.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_resumable,
    numbered_path,
    prune_checkpoints,
    save_checkpoint,
)
from agent.runs.files import write_text_atomic
from agent.runs.logger import RunLogger

__all__ = ["CheckpointWriteError", "NonFiniteLossError", "train"]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, say); the previous one is left whole."""


@dataclass
class Session:
    """Everything the loop carries from one update to the next."""

    config: Config
    run_dir: Path
    device: torch.device
    env: GameEnv
    agent: Agent
    optimizer: torch.optim.Optimizer
    buffer: RolloutBuffer
    logger: RunLogger | None
    """None on ranks other than 0: only rank 0 writes the run folder."""
    ranks: Ranks
    update: int = 0
    frames: int = 0
    """Emulator frames of experience so far, summed over all envs of all ranks."""
    started: float = 0.0
    """time.time() of the run's start, as if it had never stopped: the run's wall seconds are now - started."""
    aux_optimizer: torch.optim.Optimizer | None = None
    """The auxiliary phase's own Adam (when `recon.auxiliary`): PPO's momentum must not drive its steps."""


def train(config: Config, run_dir: str | Path, resume: bool = False, max_updates: int | None = None,
          progress: bool = True, ranks: Ranks | None = None) -> dict:
    """Trains (or, with `resume`, continues) the run in `run_dir`; returns a summary dict.

    `max_updates` stops after that many updates of this call (the run can be resumed later).
    """
    ranks = ranks or SingleProcess()
    s = start_session(config, Path(run_dir), resume, ranks)
    num_updates = config.updates(ranks.world_size)
    end_update = num_updates if max_updates is None else min(num_updates, s.update + max_updates)
    bar = tqdm(total=num_updates * config.frames_per_update * ranks.world_size, initial=s.frames,
               unit="frame", unit_scale=True, disable=not (progress and ranks.is_main), dynamic_ncols=True)
    jobs = BackgroundJobs(s.run_dir, config) if ranks.is_main else None
    started, stopped, finished = time.time(), False, False
    with graceful_interrupt(announce=ranks.is_main) as interrupt:
        try:
            for update in range(s.update + 1, end_update + 1):
                update_start = time.time()
                set_learning_rate(s.optimizer, config.ppo.lr, config, update, num_updates)
                if s.aux_optimizer is not None:
                    set_learning_rate(s.aux_optimizer, config.aux_lr, config, update, num_updates)

                # Rollout.
                s.frames = collect_rollout(s.agent, s.env, s.buffer, config, s.frames, ranks.game_over(s.logger),
                                           ranks.world_size)
                ranks.log_games(s.logger)

                # Advantages.
                with torch.no_grad():
                    next_value = s.agent.get_value(s.buffer.next_obs)
                advantages, returns = compute_gae(s.buffer.rewards, s.buffer.values, s.buffer.dones, next_value,
                                                  s.buffer.next_done, config.ppo.gamma, config.ppo.gae_lambda)

                # Update.
                tick = time.perf_counter()
                if update == 1 and config.recon.locates:
                    fit_locator_prior(s)
                stats = update_agent(s.agent, s.optimizer, s.buffer, advantages, returns, config,
                                     ranks.gradient_averager(s.agent))
                if s.aux_optimizer is not None:
                    stats |= aux_update(s.agent, s.aux_optimizer, s.buffer, config, ranks.gradient_averager(s.agent))
                ranks.update_normalizer(s.agent.normalizer, s.buffer.obs.flatten(0, 1))
                s.buffer.timers["update"] = time.perf_counter() - tick
                s.update = update

                # Logging.
                sps = config.frames_per_update * ranks.world_size / config.env.frameskip / max(
                    time.time() - update_start, 1e-9)
                if s.logger is not None:
                    s.logger.update({
                        "update": update, "frames": s.frames, "charts/sps": sps,
                        "charts/lr": s.optimizer.param_groups[0]["lr"], **stats,
                        **{f"diagnostics/time_{key}_s": value for key, value in s.buffer.timers.items()},
                        "wall_seconds": time.time() - s.started,
                    })
                    bar.update(config.frames_per_update * ranks.world_size)
                    bar.set_postfix(score=f"{s.logger.score_mean:.0f}", sps=f"{sps:.0f}", refresh=False)

                # Checkpoint.
                out_of_time = 0 < config.train.time_limit_s <= time.time() - started
                stopped = ranks.any(interrupt["stop"] or out_of_time)
                last = update == end_update or stopped
                if update % config.train.checkpoint_every_updates == 0 or last:
                    save_session(s)
                if jobs is not None:
                    jobs.poll(s.logger)
                    if not stopped:
                        jobs.launch(s.agent, update, s.frames)
                if stopped:
                    break
            finished = not stopped
        finally:
            bar.close()
            if jobs is not None:
                jobs.close(s.logger, wait=finished)
            if s.logger is not None:
                s.logger.close()
            s.env.close()
    return {"update": s.update, "frames": s.frames, "games": s.logger.games if s.logger else None,
            "score_mean100": s.logger.score_mean if s.logger else None, "interrupted": stopped,
            "wall_seconds": time.time() - started}


# ---------------------------------------------------------------------------------------------------
# Set-up, resume and checkpoints


def start_session(config: Config, run_dir: Path, resume: bool, ranks: Ranks) -> Session:
    """Seeds everything, builds the env, agent and optimizer, and, with `resume`, restores them from the
    run's newest intact checkpoint (the emulators replay their games in progress)."""
    resumed = None
    if resume:  # rank 0 reads the checkpoint and sends it to the others
        resumed = ranks.own_share(ranks.decided_by_main(lambda: load_resumable(run_dir)[0]))
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        # Rows past the checkpoint (or, starting afresh, those of an attempt that died before its first one).
        truncate_metrics(run_dir, int(resumed["counters"]["update"]) if resumed is not None else 0)
    device = ranks.device(config.train.device)
    if config.train.torch_threads > 0:
        torch.set_num_threads(config.train.torch_threads)
    seed_everything(config.train.seed, config.train.deterministic)
    env = GameEnv(config.env, config.train.seed, pin_memory=device.type == "cuda",
                  env_offset=ranks.rank * config.env.num_envs)
    agent = place(Agent(config.env.obs_shape, env.num_actions, config.model), device)
    ranks.synchronize_start(agent, config.train.seed)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.ppo.lr, eps=1e-5)
    aux_optimizer = (torch.optim.Adam(agent.parameters(), lr=config.aux_lr, eps=1e-5) if config.recon.auxiliary
                     else None)
    update = frames = games = 0
    wall_seconds = 0.0
    recent: list[float] = []
    if resumed is None:
        obs = env.reset()
    else:
        try:
            agent.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
            if aux_optimizer is not None and "aux_optimizer" in resumed:  # absent from older checkpoints
                aux_optimizer.load_state_dict(resumed["aux_optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{run_dir} was trained with another architecture of the agent (older runs lack "
                                  f"the locator) and cannot be resumed: {first}") from None
        counters = resumed["counters"]
        update, frames, games = int(counters["update"]), int(counters["frames"]), int(counters["games"])
        recent = counters["recent_scores"].tolist()
        wall_seconds = float(counters.get("wall_seconds", 0.0))  # older checkpoints lack it
        torch.set_rng_state(resumed["rng"]["torch"])
        if device.type == "cuda" and "cuda" in resumed["rng"]:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], device)
        obs = env.restore(resumed["env"])
    logger = RunLogger(run_dir, recent, games, frames) if ranks.is_main else None
    if update == 0 and ranks.is_main:
        print_capacity(agent, config, ranks.world_size)
    buffer = RolloutBuffer.allocate(config, obs, device)
    return Session(config, run_dir, device, env, agent, optimizer, buffer, logger, ranks, update, frames,
                   time.time() - wall_seconds, aux_optimizer)


def save_session(s: Session) -> Path:
    """Writes latest.pt and a numbered copy (`train.keep_checkpoints`). Every rank calls it: every rank's
    emulator state and RNG go into the one checkpoint rank 0 writes."""
    rng = {"torch": torch.get_rng_state()}
    if s.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(s.device)
    logger = s.logger
    state = checkpoint_state(
        s.agent, s.config,
        optimizer=s.optimizer.state_dict(),
        **({"aux_optimizer": s.aux_optimizer.state_dict()} if s.aux_optimizer is not None else {}),
        rng=rng,
        counters={"update": s.update, "frames": s.frames, "games": logger.games if logger else 0,
                  "wall_seconds": time.time() - s.started,
                  "recent_scores": torch.tensor(list(logger.recent_scores) if logger else [], dtype=torch.float64)},
        env=s.env.state_dict(),
    )
    state = s.ranks.gather_state(state)
    latest = s.run_dir / "checkpoints" / "latest.pt"
    if not s.ranks.is_main:
        return latest
    try:
        save_checkpoint(state, latest)
        if s.config.train.keep_checkpoints > 0:
            save_checkpoint(state, numbered_path(s.run_dir, s.update))
            prune_checkpoints(s.run_dir, s.config.train.keep_checkpoints)
    except OSError as exc:
        raise CheckpointWriteError(f"could not write a checkpoint into {latest.parent} ({exc.strerror or exc}); "
                                   f"the checkpoints already there are intact: free space, then resume") from None
    return latest


def fit_locator_prior(s: Session) -> None:
    """The locator's first guess: each cell's share of objects in the first rollout (of all ranks)."""
    masks = s.buffer.object_masks()
    s.ranks.fit_locator_prior(s.agent.locator, masks)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, config: Config, update: int,
                      num_updates: int) -> None:
    """`lr`, annealed linearly towards 0 over the run's `num_updates` when ppo.anneal_lr is on."""
    if config.ppo.anneal_lr:
        optimizer.param_groups[0]["lr"] = lr * (1.0 - (update - 1.0) / num_updates)


def print_capacity(agent: Agent, config: Config, world_size: int) -> None:
    """The model's free parameters against the run's data, printed once at the start of a run."""
    samples = config.updates(world_size) * config.batch_size * world_size
    report = capacity_report(agent, samples, int(np.prod(config.env.obs_shape)), agent_outputs(agent))
    print(format_capacity(report), flush=True)


def truncate_metrics(run_dir: Path, last_update: int) -> None:
    """Drops metrics rows written after the checkpoint a run resumes from."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= last_update]
    if len(kept) == len(rows):
        return
    text = io.StringIO()
    csv.writer(text).writerows(kept)
    write_text_atomic(text.getvalue(), path)  # a crash mid-write leaves the old file whole


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


@contextmanager
def graceful_interrupt(announce: bool = True):
    """First Ctrl-C (or SIGTERM) asks the loop to stop after the current update and save; a second Ctrl-C
    aborts. Under torchrun the launcher passes its Ctrl-C on to every rank, and the ranks agree to stop
    after the same update (`Ranks.any`); `announce` is False on all but rank 0, which says so once."""
    state = {"stop": False}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        state["stop"] = True
        if announce:
            print("\nstopping after this update and saving a checkpoint (Ctrl-C again to abort)", flush=True)
        signal.signal(signal.SIGINT, previous[signal.SIGINT])

    try:
        for sig in previous:
            signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        pass
    try:
        yield state
    finally:
        try:
            for sig, old in previous.items():
                signal.signal(sig, old)
        except ValueError:
            pass
