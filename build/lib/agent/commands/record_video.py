"""Record the agent of a checkpoint playing one protocol game (sticky actions 0.25, the full game) to an
H.264 MP4 a browser plays.

  python scripts/record_video.py --checkpoint runs/default/checkpoints/latest.pt --out runs/default/game.mp4

Beside the game (in colour, upscaled with sharp pixels): the agent's input, the decoder's reconstruction
and the play band with the detected small objects boxed (--no-panels leaves them out); below it: score,
lives, value estimate, the chosen action and the most probable actions. One video frame per agent step,
so 15 fps is real time at frameskip 4. The file appears only when it is complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from agent.commands.cli import OneLineParser, positive
from agent.env.protocol import PROTOCOL_MAX_FRAMES
from agent.runs.files import OutputPathError, check_output_file
from agent.watching.video import record_checkpoint_video


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint file (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the video to write (.mp4)")
    parser.add_argument("--max-frames", type=positive(int), default=PROTOCOL_MAX_FRAMES, metavar="F",
                        help="stop after F emulator frames if the game goes on (default: the protocol's "
                             f"{PROTOCOL_MAX_FRAMES:,}, i.e. the whole game)")
    parser.add_argument("--fps", type=positive(float), default=15.0,
                        help="video frames per second (default 15: real time at frameskip 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the game and the action sampling (default 0); the game has the "
                             "emulator seed of env 0's first game in evaluate.py --seed SEED")
    parser.add_argument("--panels", action=argparse.BooleanOptionalAction, default=True,
                        help="show the input, reconstruction and detection panels (default: on)")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most probable action (default: sample from the policy)")
    parser.add_argument("--scale", type=positive(int), default=3,
                        help="upscale of the game screen (default 3)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    parser.add_argument("--threads", type=positive(int), default=1,
                        help="torch threads (default 1: the policy sees one observation at a time)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        check_output_file(args.out, "--out", suffix=".mp4")
    except OutputPathError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    try:
        summary = record_checkpoint_video(
            args.checkpoint, args.out, max_frames=args.max_frames, fps=args.fps, seed=args.seed,
            panels=args.panels, greedy=args.greedy, device=args.device, game_scale=args.scale,
            progress=not args.no_progress,
        )
    except OSError as exc:  # ffmpeg or the file system, after --out was found writable
        print(f"error: --out: writing {args.out} failed ({exc.strerror or exc}); check the free space there and "
              f"run again", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # CheckpointError and ConfigError are ValueErrors
        message = (str(exc).strip().splitlines() or ["the recording stopped on an error that gave no reason"])[0]
        print(f"error: {message}", file=sys.stderr)
        return 2
    ended = "game over" if summary["game_over"] else "frame cap"
    print(f"wrote {summary['video']}: {summary['video_frames']} frames of "
          f"{summary['width']}x{summary['height']} at {summary['fps']:g} fps; score {summary['score']:,.0f} "
          f"in {summary['emulator_frames']:,} emulator frames ({ended})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
