"""Train the KungFuMaster agent, or resume a run where its last checkpoint left it.

  kungfu-train --config configs/default.yaml --run-dir runs/default --set ppo.lr=1e-4
  kungfu-train --resume runs/default [--set train.total_frames=400000]
  torchrun --standalone --nproc-per-node 2 -m agent.commands.train --config configs/smoke.yaml --run-dir runs/dp

Writes RUN_DIR/config.yaml, RUN_DIR/metrics.csv, RUN_DIR/tb/ (TensorBoard) and RUN_DIR/checkpoints/.
Ctrl-C stops after the current update and saves; a second Ctrl-C aborts. --resume continues from the
newest intact checkpoint. Under torchrun every rank steps env.num_envs emulators of its own and rank 0
writes the run folder; a job torchrun restarts (--max-restarts) resumes from the run's last checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from agent.commands.cli import OneLineParser
from agent.config import ConfigError, config_from_dict, load_config
from agent.learner.distributed import SingleProcess, TorchDistributed, launched_by_torchrun
from agent.learner.trainer import CheckpointWriteError, NonFiniteLossError, train
from agent.runs.checkpoint import CheckpointError, checkpoint_config, load_resumable
from agent.runs.files import OutputPathError, check_output_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML file of overrides on the defaults")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run")
    parser.add_argument("--run-dir", type=Path,
                        help="where the run goes (default: runs/<config name>-<time>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set ppo.lr=1e-4 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    distributed = launched_by_torchrun()
    restarted = distributed and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    try:
        if args.resume is None and restarted and args.run_dir is not None \
                and (args.run_dir / "checkpoints").is_dir():
            args.resume, args.config = args.run_dir, None  # torchrun restarted the job: continue it
            args.run_dir = None
        if args.resume is not None:
            if args.run_dir is not None:
                raise ConfigError("--run-dir: a resumed run stays in its own folder; drop --run-dir")
            run_dir = args.resume
            if not run_dir.is_dir():
                raise ConfigError(f"--resume: {run_dir} is not a folder")
            state, _ = load_resumable(run_dir)
            config = checkpoint_config(state)
            if args.overrides:
                config = config_from_dict(config.to_dict(), args.overrides)
        else:
            config = load_config(args.config, args.overrides)
            run_dir = args.run_dir or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            if (run_dir / "checkpoints" / "latest.pt").exists():
                raise ConfigError(f"--run-dir: {run_dir} already holds a run; continue it with --resume {run_dir}")
            if not distributed or os.environ.get("RANK") == "0":
                check_output_dir(run_dir, "--run-dir")
    except (ConfigError, CheckpointError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    ranks = TorchDistributed(config.train.device) if distributed else SingleProcess()
    if ranks.is_main:
        print(f"run folder: {run_dir}" + (f" ({ranks.world_size} ranks)" if distributed else ""), flush=True)
    try:
        summary = train(config, run_dir, resume=args.resume is not None, progress=not args.no_progress,
                        ranks=ranks)
    except (NonFiniteLossError, CheckpointWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ranks.close()
    if ranks.is_main:
        state = "stopped early" if summary["interrupted"] else "finished"
        print(f"{state}: update {summary['update']}, {summary['frames']:,} frames, {summary['games']} games, "
              f"mean score of the last 100 games {summary['score_mean100']:.1f}, "
              f"{summary['wall_seconds']:.0f} s", flush=True)
        print(f"checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
