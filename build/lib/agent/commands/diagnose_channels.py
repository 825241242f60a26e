"""Which input channels does a network use, and does input normalization matter? Measures both.

    kungfu-diagnose-channels --out DIR [--checkpoint CKPT] [--seed 0] [--quick]

1. The agent: weight magnitude per input channel of every layer that reads a multi-channel map (the
   first conv over the frame stack, the trunk, the code layer and the heads after the encoder), and the
   loss change when each stacked frame is ablated, on frames of random play. A fresh agent always; a
   trained one as well with --checkpoint.
2. The oracle experiment: a synthetic two-class segmentation task, C = 512 distractor channels plus one
   oracle channel equal to the mask. Accuracy, and the oracle's share of weight magnitude and of ablation
   importance, as its scale, the distractors' scale and normalization, its alignment and the head change.
3. Up to 2**20 (about a million) channels with the per-pixel linear head a 1x1 conv is.
4. Net surgery: the head hand-set to the oracle alone, its gradient there, and how far training moves it.
5. Normalization: raw / scaled / mean-subtracted / standardized inputs for a dense and an image-level task,
   and what each of the agent's normalizations does to the 5x2 knife of contrast 11/255.
6. The agent's parameters per layer against the data's degrees of freedom.

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
