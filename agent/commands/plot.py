"""Plot the score and loss curves of one or more training runs, against the game's random and human
scores where they fit the chart.

  kungfu-plot runs/default                                   # writes runs/default/curves.png
  kungfu-plot runs/a runs/b --out compare.png                # several runs on the same axes
  kungfu-plot --group knife=runs/k1,runs/k2,runs/k3 --group plain=runs/p1,runs/p2 --out ablation.png

Reads RUN_DIR/metrics.csv by column name (missing columns and empty cells are skipped) and, when
present, the evaluation results RUN_DIR/eval/*.json. A --group draws its runs (the seeds of one variant)
as their mean score curve with a band from the lowest to the highest run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.commands.cli import OneLineParser
from agent.runs.files import check_output_file
from agent.watching.plotting import plot_run_dirs


def parse_group(text: str, option: str = "--group", allow_empty: bool = False) -> tuple[str, list[Path]]:
    """'name=dir1,dir2' -> ('name', [dir1, dir2]), and with `allow_empty` 'name=' -> ('name', []); a
    malformed one is a ValueError naming `option`."""
    name, sep, dirs = text.partition("=")
    paths = [Path(d) for d in dirs.split(",") if d]
    if not sep or not name or not (paths or (allow_empty and dirs == "")):
        raise ValueError(f"{option} {text!r}: expected NAME=RUN_DIR,RUN_DIR,...")
    return name, paths


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN_DIR", help="run folders")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=DIR,DIR",
                        help="draw these runs as one band named NAME (repeatable)")
    parser.add_argument("--out", type=Path, metavar="PNG",
                        help="the image to write (default: curves.png in the first run folder)")
    args = parser.parse_args(argv)
    try:
        groups = dict(parse_group(text) for text in args.group)
    except ValueError as exc:
        parser.error(str(exc))
    first = args.run_dirs[0] if args.run_dirs else next((d[0] for d in groups.values()), None)
    if first is None:
        parser.error("give at least one RUN_DIR or --group")
    out = args.out or first / "curves.png"
    try:
        check_output_file(out, "--out", suffix=".png")
        plot_run_dirs(args.run_dirs, out, groups)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
