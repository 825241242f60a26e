"""Evaluate a checkpoint under the evaluation protocol: full games (all lives) until game over or
108,000 frames, sticky actions 0.25, the unclipped game score. Prints a table; --json writes the result.

  python scripts/evaluate.py --checkpoint runs/default/checkpoints/latest.pt --episodes 10 --json eval.json

The games run in parallel on the vector env; each env plays a fixed quota of games, so short games are
not favoured. The checkpoint's observation pipeline and normalizer are used as saved. --max-frames caps
each game for quick checks; the JSON then records the cap and `standard: false`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from agent.commands.cli import OneLineParser, positive
from agent.runs.files import check_output_file, write_json_atomic
from agent.watching.evaluation import evaluate_checkpoint, format_table


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint file (.pt)")
    parser.add_argument("--episodes", type=positive(int), required=True, help="full games to play")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the result here (atomically)")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most probable action (default: sample from the policy)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds every game and the action sampling (default 0; training defaults to 1)")
    parser.add_argument("--num-envs", type=positive(int), default=8,
                        help="parallel emulators (at most --episodes are used; default 8)")
    parser.add_argument("--max-frames", type=positive(int), metavar="F",
                        help="cap each game at F emulator frames (default: the protocol's 108,000)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    parser.add_argument("--threads", type=positive(int), default=1,
                        help="torch threads (default 1: the policy's batches are small, and on a busy CPU "
                             "more threads fight the emulator's)")
    parser.add_argument("--env-threads", type=int, default=0,
                        help="emulator threads (default 0: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        if args.json is not None:
            check_output_file(args.json, "--json")
        if args.env_threads < 0:
            raise ValueError("--env-threads must be 0 (one per core) or positive")
        result = evaluate_checkpoint(
            args.checkpoint, args.episodes, seed=args.seed, greedy=args.greedy, num_envs=args.num_envs,
            max_frames=args.max_frames, device=args.device, num_threads=args.env_threads,
            progress=not args.no_progress,
        )
    except (ValueError, RuntimeError) as exc:  # CheckpointError, ConfigError, OutputPathError are ValueErrors
        message = (str(exc).strip().splitlines() or ["the evaluation stopped on an error that gave no reason"])[0]
        print(f"error: {message}", file=sys.stderr)
        return 2

    print(format_table(result))
    if args.json is not None:
        write_json_atomic(result.to_json(), args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
