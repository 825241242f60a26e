"""Summarize an ablation: the seeds of each variant, their scores, evaluations and knife reports, with the
mean and spread over seeds, as JSON (and, with --plot, their score curves as bands).

  kungfu-ablation --variant no_decoder=runs/n1,runs/n2,runs/n3 --variant plain=runs/p1 \\
      --variant knife_aware=runs/k1,runs/k2,runs/k3 --out docs/ablation/summary.json --plot docs/ablation/scores.png

Each RUN_DIR holds metrics.csv and config.yaml as training leaves them, evaluations under eval/*.json
(kungfu-evaluate --json; the newest checkpoint's counts) and, if measured, knife_report.json (the report.json
of kungfu-knife-report). The last-100-games scores are also read at equal frames (the shortest run's).
A variant given as NAME= (no folders) is listed with no runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.commands.cli import OneLineParser
from agent.commands.plot import parse_group
from agent.runs.files import check_output_file, write_json_atomic
from agent.watching.ablation import format_table, summarize
from agent.watching.plotting import plot_run_dirs


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=DIR,DIR",
                        help="a variant and its run folders, one per seed (repeatable)")
    parser.add_argument("--out", type=Path, required=True, metavar="JSON", help="the summary to write")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also draw each variant's score as a band")
    args = parser.parse_args(argv)
    try:  # "NAME=" lists a variant not run yet
        variants = dict(parse_group(text, "--variant", allow_empty=True) for text in args.variant)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        check_output_file(args.out, "--out", suffix=".json")
        if args.plot:
            check_output_file(args.plot, "--plot", suffix=".png")
        summary = summarize(variants)
        write_json_atomic(summary, args.out)
        if args.plot:
            plot_run_dirs([], args.plot, {name: dirs for name, dirs in variants.items() if dirs})
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(summary))
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
