"""Which input channels does a network use, and does input normalization matter? Measures both.

    kungfu-diagnose-channels --out DIR [--checkpoint CKPT] [--seed 0] [--quick]

The agent's input channels (weights and ablation, a fresh agent and, with --checkpoint, a trained
one), the oracle-channel experiment among 512 distractors, up to 2**20 channels, net surgery, input
normalization and capacity: the experiments of agent.research.channels, listed in
agent/research/channels_report.py.

Writes DIR/report.json, DIR/summary.md and the plots beside them. --quick shrinks everything (seconds;
for smoke tests): its numbers show that the code runs, not what the experiments find.
Exit 0 on success, 2 with a one-line error on bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.commands.cli import OneLineParser, positive
from agent.models.capacity import format_capacity
from agent.research.channels_report import run_report
from agent.runs.checkpoint import CheckpointError
from agent.runs.files import OutputPathError, check_output_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--checkpoint", type=Path, help="also analyse this trained agent (.pt)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every experiment (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    parser.add_argument("--threads", type=positive(int), default=1,
                        help="torch threads (default 1: on a shared CPU more threads wait on each other)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    try:
        out = check_output_dir(args.out, "--out")
    except OutputPathError as exc:
        parser.error(str(exc))

    try:
        report = run_report(args, out)
    except CheckpointError as exc:
        parser.error(f"--checkpoint: {exc}")
    print(format_capacity(report["capacity"]))
    print(f"wrote {out / 'report.json'}, {out / 'summary.md'} and 5 plots in {report['settings']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
