"""Train the KungFuMaster agent, or resume a run where its last checkpoint left it.

  kungfu-train --config configs/default.yaml --run-dir runs/default --set ppo.lr=1e-4
  kungfu-train --resume runs/default [--set train.total_frames=400000]
  torchrun --standalone --nproc-per-node 2 -m agent.commands.train --config configs/smoke.yaml --run-dir runs/dp

Writes RUN_DIR/config.yaml, RUN_DIR/metrics.csv, RUN_DIR/tb/ (TensorBoard) and RUN_DIR/checkpoints/.
Ctrl-C stops after the current update and saves; a second Ctrl-C aborts. --resume continues from the
newest intact checkpoint.

Under torchrun every rank steps env.num_envs emulators of its own and rank 0 alone reads and writes the
run folder (the default folder is then runs/<config name>-<rendezvous id>). Ctrl-C on the launcher stops
every rank after the same update and saves once; torchrun waits 30 s for that before it kills the ranks
(raise it with torchrun --shutdown-timeout when an update takes longer). A rank that dies ends the job;
the last checkpoint stays intact, and a job that torchrun restarts (--max-restarts) resumes from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

from ale_py import roms

from agent.commands.cli import OneLineParser
from agent.config import Config, ConfigError, config_from_dict, load_config
from agent.device import resolve_device
from agent.learner.distributed import LostRankError, Ranks, SingleProcess, TorchDistributed, launched_by_torchrun
from agent.learner.trainer import CheckpointWriteError, NonFiniteLossError, train
from agent.models import Agent
from agent.runs.checkpoint import CheckpointError, checkpoint_config, load_resumable
from agent.runs.files import OutputPathError, check_output_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML file of overrides on the defaults")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run")
    parser.add_argument("--run-dir", type=Path,
                        help="where the run goes (default: runs/<config name>-<time>; under torchrun "
                             "runs/<config name>-<rendezvous id>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set ppo.lr=1e-4 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    ranks = TorchDistributed() if launched_by_torchrun() else SingleProcess()
    try:
        return run(args, ranks)
    finally:
        ranks.close()


def run(args: argparse.Namespace, ranks: Ranks) -> int:
    """Settles the run on rank 0, trains it on every rank; returns the exit code."""
    try:
        config, run_dir, resume = ranks.decided_by_main(lambda: settle_run(args))
    except (ConfigError, CheckpointError, OutputPathError) as exc:
        if ranks.is_main:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except LostRankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    if ranks.is_main:
        print(f"run folder: {run_dir}" + (f" ({ranks.world_size} ranks)" if ranks.world_size > 1 else ""),
              flush=True)
    rank = f"rank {ranks.rank}: " if ranks.world_size > 1 else ""
    try:
        summary = train(config, run_dir, resume=resume, progress=not args.no_progress, ranks=ranks)
    except (NonFiniteLossError, CheckpointWriteError) as exc:
        print(f"error: {rank}{exc}", file=sys.stderr)
        return 1
    except LostRankError as exc:
        print(f"error: {exc}; the checkpoints in {run_dir / 'checkpoints'} are intact: torchrun --max-restarts "
              f"resumes from them, and so does torchrun ... --resume {run_dir}", file=sys.stderr, flush=True)
        return 1
    except (ConfigError, CheckpointError, ValueError) as exc:  # every rank raises these alike
        if ranks.is_main:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if ranks.is_main:
        state = "stopped early" if summary["interrupted"] else "finished"
        print(f"{state}: update {summary['update']}, {summary['frames']:,} frames, {summary['games']} games, "
              f"mean score of the last 100 games {summary['score_mean100']:.1f}, "
              f"{summary['wall_seconds']:.0f} s", flush=True)
        print(f"checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}")
    return 0


def settle_run(args: argparse.Namespace) -> tuple[Config, Path, bool]:
    """The run's config, its folder and whether it resumes, from the command line and the run folder.
    Under torchrun rank 0 alone calls it; a job torchrun restarted continues the run it had begun."""
    resume_dir, run_dir = args.resume, args.run_dir
    restarted = launched_by_torchrun() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if resume_dir is None and restarted:
        folder = run_dir or default_run_dir(args.config)
        if any((folder / "checkpoints").glob("*.pt")):
            resume_dir, run_dir = folder, None
            print(f"torchrun restarted the job: resuming {folder}", flush=True)
    if resume_dir is not None:
        if run_dir is not None:
            raise ConfigError("--run-dir: a resumed run stays in its own folder; drop --run-dir")
        if not resume_dir.is_dir():
            raise ConfigError(f"--resume: {resume_dir} is not a folder")
        state, _ = load_resumable(resume_dir, quiet=True)  # the trainer warns when it loads it
        config = checkpoint_config(state)
        if args.overrides:
            config = config_from_dict(config.to_dict(), args.overrides)
        check_runnable(config)
        return config, resume_dir, True
    config = load_config(args.config, args.overrides)
    check_runnable(config)
    run_dir = run_dir or default_run_dir(args.config)
    if (run_dir / "checkpoints" / "latest.pt").exists():
        raise ConfigError(f"--run-dir: {run_dir} already holds a run; continue it with --resume {run_dir}")
    check_output_dir(run_dir, "--run-dir")
    return config, run_dir, False


def check_runnable(config: Config) -> None:
    """What a valid config can still hold that the run would meet only once its folder exists: a game ALE
    does not have, a device this machine does not have, a model that does not fit the observation. Each is
    a ConfigError naming the key."""
    if config.env.game not in roms.get_all_rom_ids():
        raise ConfigError(f"env.game: ALE has no game {config.env.game!r}; give an ALE ROM name such as "
                          f"kung_fu_master or pong")
    try:
        resolve_device(config.train.device)
    except RuntimeError:
        raise ConfigError(f"train.device: {config.train.device!r} is not a device name; use auto, cpu or "
                          f"cuda[:N]") from None
    except ValueError as exc:  # a device this machine lacks
        raise ConfigError(f"train.device: {exc}; use auto or cpu") from None
    try:
        Agent(config.env.obs_shape, 1, config.model)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"model: {str(exc).strip().splitlines()[0]}; use fewer or smaller model.kernels and "
                          f"model.strides, or a larger env.crop") from None


def default_run_dir(config_path: Path) -> Path:
    """runs/<config name>-<time>; under torchrun runs/<config name>-<rendezvous id>, the same for every
    rank and every restart of the job (the first 8 characters of the id torchrun --standalone draws)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none") if launched_by_torchrun() else "none"
    if run_id == "none":
        tag = time.strftime("%Y%m%d-%H%M%S")
    else:
        try:
            tag = uuid.UUID(run_id).hex[:8]
        except ValueError:
            tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return Path("runs") / f"{config_path.stem}-{tag}"


if __name__ == "__main__":
    sys.exit(main())
