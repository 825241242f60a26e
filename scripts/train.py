#!/usr/bin/env python
"""Train the KungFuMaster agent, or resume a run where its last checkpoint left it.

  python scripts/train.py --config configs/default.yaml --run-dir runs/default --set ppo.lr=1e-4
  python scripts/train.py --resume runs/default [--set train.total_frames=400000]

Writes RUN_DIR/config.yaml, RUN_DIR/metrics.csv, RUN_DIR/tb/ (TensorBoard) and RUN_DIR/checkpoints/.
Ctrl-C stops after the current update and saves; a second Ctrl-C aborts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from agent.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
from agent.cli import OneLineParser
from agent.config import ConfigError, config_from_dict, load_config
from agent.trainer import NonFiniteLossError, train


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

    try:
        if args.resume is not None:
            if args.run_dir is not None:
                raise ConfigError("--run-dir: a resumed run stays in its own folder")
            run_dir = args.resume
            state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
            config = checkpoint_config(state)
            if args.overrides:
                config = config_from_dict(config.to_dict(), args.overrides)
        else:
            config = load_config(args.config, args.overrides)
            run_dir = args.run_dir or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            if (run_dir / "checkpoints" / "latest.pt").exists():
                raise ConfigError(f"--run-dir: {run_dir} already holds a run; "
                                  f"continue it with --resume {run_dir}")
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"run folder: {run_dir}", flush=True)
    try:
        summary = train(config, run_dir, resume=args.resume is not None, progress=not args.no_progress)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "stopped early" if summary["interrupted"] else "finished"
    print(f"{state}: update {summary['update']}, {summary['frames']:,} frames, {summary['games']} games, "
          f"mean score of the last 100 games {summary['score_mean100']:.1f}, "
          f"{summary['wall_seconds']:.0f} s", flush=True)
    print(f"checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
