"""Does the weighted decoder loss keep the knives? Trains plain and weighted autoencoders on the same frames
and compares how many knives each redraws (agent.research.recon_report).

    kungfu-recon-report --out DIR [--steps S] [--checkpoint CKPT] [--variants ...] [--device D]

Writes DIR/report.json (`variants.<name>` with mse, small_object_mse, small_object_recall and more) and
DIR/comparison.png (per example: input / plain / weighted / weight map, whole frame and a zoom on the
object). The defaults take about 13 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from agent.commands.cli import OneLineParser, positive
from agent.config import ConfigError
from agent.device import resolve_device
from agent.research.recon_report import DEFAULT_VARIANTS, LR_TAIL, VARIANTS, UsageError, base_configs, run_report
from agent.runs.checkpoint import CheckpointError
from agent.runs.files import OutputPathError, check_output_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(__doc__)
    parser.add_argument("--out", required=True, help="folder for report.json and comparison.png")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated; plain and weighted always run. Known: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=positive(int), default=16000, help="training steps per variant")
    parser.add_argument("--batch-size", type=positive(int), default=32)
    parser.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    parser.add_argument("--lr-tail", type=float, default=LR_TAIL,
                        help="share of the steps at the end over which the learning rate falls to 0 along a "
                             "half cosine (0: constant)")
    parser.add_argument("--frames", type=positive(int), default=48000,
                        help="observations kept (train + validation)")
    parser.add_argument("--object-share", type=float, default=0.75,
                        help="share of kept observations whose newest frame holds a small object (default 0.75)")
    parser.add_argument("--batch-object-share", type=float, default=None,
                        help="share of each training batch drawn from the training frames that hold an object "
                             "(default: draw uniformly, as collected)")
    parser.add_argument("--collect-steps", type=positive(int), default=30000,
                        help="vector-env steps of play at most")
    parser.add_argument("--num-envs", type=positive(int), default=16)
    parser.add_argument("--val-every", type=int, default=4, help="every k-th episode goes to validation")
    parser.add_argument("--checkpoint", default=None,
                        help="collect with this checkpoint's policy (else random play)")
    parser.add_argument("--examples", type=positive(int), default=6, help="examples in comparison.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive(int), default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="where the autoencoders train: auto, cpu or cuda[:N]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recon config key for every variant, e.g. recon.object_weight=50")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.val_every < 2:
        raise UsageError("--val-every must be at least 2")
    if not 0.0 <= args.lr_tail <= 1.0:
        raise UsageError("--lr-tail must be in [0, 1]")
    if not 0.0 <= args.object_share <= 1.0:
        raise UsageError("--object-share must be in [0, 1]")
    if args.batch_object_share is not None and not 0.0 <= args.batch_object_share <= 1.0:
        raise UsageError("--batch-object-share must be in [0, 1]")
    try:
        args.device = str(resolve_device(args.device))
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device: {exc}") from None
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise UsageError(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    extra = [v for v in dict.fromkeys(names) if v not in ("plain", "weighted")]
    args.variants = ["plain", "weighted", *extra]
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UsageError(f"--checkpoint: no such file {args.checkpoint}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        base, model_cfg = base_configs(args.overrides)
        out = check_output_dir(args.out, "--out")
    except (UsageError, ConfigError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        report = run_report(args, base, model_cfg, out)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"error: --checkpoint: {exc}", file=sys.stderr)
        return 2
    for name, v in report["variants"].items():
        print(f"{name:>16}: mse {v['mse']:.5f}  small_object_mse {v['small_object_mse']:.5f}  "
              f"small_object_recall {v['small_object_recall']:.3f} ({v['objects_found']}/{v['objects']})")
    print(f"wrote {out / 'report.json'} and {out / 'comparison.png'} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
