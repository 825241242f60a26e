#!/usr/bin/env python
"""Plot the score and loss curves of one or more training runs, with the random (258.5) and human
(22,736.3) scores as reference lines.

  python scripts/plot_run.py runs/default                      # writes runs/default/curves.png
  python scripts/plot_run.py runs/a runs/b --out compare.png   # several runs on the same axes

Reads RUN_DIR/metrics.csv by column name (missing columns and empty cells are skipped) and, when
present, the evaluation results RUN_DIR/eval/*.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.cli import OneLineParser
from agent.plotting import plot_run_dirs


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run folders")
    parser.add_argument("--out", type=Path, metavar="PNG",
                        help="the image to write (default: curves.png in the first run folder)")
    args = parser.parse_args(argv)

    out = args.out or args.run_dirs[0] / "curves.png"
    if out.suffix.lower() != ".png":
        parser.error(f"--out: {out} must end in .png")
    try:
        plot_run_dirs(args.run_dirs, out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
