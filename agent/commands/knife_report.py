"""Does the agent's own code hold the knives? Plays a checkpoint's own protocol games and measures, with the
emulator's RAM as the truth of each knife's place (agent.research.knife_report).

  kungfu-knife-report --checkpoint runs/default/checkpoints/latest.pt --out runs/default/knives [--games 6]
  kungfu-knife-report --checkpoint OLD.pt --out DIR --set recon.detect_group_rows=3

The detector is the checkpoint's, as it trained; --set measures with another setting of its
recon.detect_* keys (the report's settings record the one used).

Writes DIR/report.json: input_recall (the detector on the input), recon_recall (the detector on the
decoder's picture, of the knives found in the input; recon_recall_all of all; recon_recall_chance, the
same on knife boxes laid on knife-free frames), recon_false_per_empty (split into
recon_false_near_fighter_per_empty and recon_false_apart_per_empty by a fighter's RAM box;
recon_false_on_sprite_per_empty: those over a sprite pixel of the input),
knife_frames, knife_hits_per_game (lives lost to a knife), deaths and health lost by cause, and probes
(present, row, column; each for the agent's code and a random-init encoder's, balanced accuracy on the
held-out games); and DIR/knives.png (frames where the agent dodged a knife and where one hit it).
KungFuMaster checkpoints only (the RAM map is that game's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from agent.commands.cli import OneLineParser, positive
from agent.config import ConfigError, config_from_dict
from agent.env.protocol import PROTOCOL_MAX_FRAMES
from agent.research.knife_report import NEAR_FIGHTER_PX, ReportError, knife_report
from agent.runs.checkpoint import CheckpointError, load_agent
from agent.runs.files import OutputPathError, check_output_dir, write_json_atomic


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint file (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and knives.png")
    parser.add_argument("--games", type=positive(int), default=6, help="protocol games to play (default 6)")
    parser.add_argument("--held-out", type=positive(int), default=2,
                        help="the last games, on which the probes are scored (default 2)")
    parser.add_argument("--max-frames", type=positive(int), default=PROTOCOL_MAX_FRAMES, metavar="F",
                        help=f"emulator frames per game at most (default the protocol's {PROTOCOL_MAX_FRAMES:,})")
    parser.add_argument("--seed", type=int, default=0, help="seeds the games and the action sampling")
    parser.add_argument("--threads", type=positive(int), default=1, help="torch threads (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="recon.detect_KEY=VALUE",
                        help="measure with this detector setting instead of the checkpoint's (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for text in args.set:
        if not text.strip().startswith("recon.detect_"):
            parser.error(f"--set {text}: only the detector's keys (recon.detect_*) can be set; the agent is "
                         f"measured as it trained")
    torch.set_num_threads(args.threads)
    try:
        out = check_output_dir(args.out, "--out")
        agent, config = load_agent(args.checkpoint)
        config = config_from_dict(config.to_dict(), args.set)
        report = knife_report(agent, config, out, games=args.games, held_out=args.held_out, seed=args.seed,
                              max_frames=args.max_frames, progress=not args.no_progress,
                              checkpoint=str(args.checkpoint))
    except (CheckpointError, ReportError, OutputPathError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json_atomic(report, out / "report.json")
    p = report["probes"]
    print(f"knife frames {report['knife_frames']} of {report['frames']}; detector on the input finds "
          f"{_f(report['input_recall'])} (within {NEAR_FIGHTER_PX} px of a fighter "
          f"{_f(report['input_recall_near_fighter'])}); the decoder redraws {_f(report['recon_recall'])} of those "
          f"(within {NEAR_FIGHTER_PX} px of a fighter {_f(report['recon_recall_near_fighter'])}, apart "
          f"{_f(report['recon_recall_apart'])}), with {_f(report['recon_false_per_empty'])} false boxes per "
          f"knife-free frame ({_f(report['recon_false_near_fighter_per_empty'])} within {NEAR_FIGHTER_PX} px of a "
          f"fighter, {_f(report['recon_false_on_sprite_per_empty'])} over a sprite of the input; by chance it "
          f"would redraw {_f(report['recon_recall_chance'])})")
    print(f"probes (agent / random init): present {_f(p['present']['agent'])} / {_f(p['present']['random_init'])}, "
          f"row {_f(p['row']['agent'])} / {_f(p['row']['random_init'])}, column {_f(p['column']['agent'])} / "
          f"{_f(p['column']['random_init'])}")
    d = report["deaths_per_game"]
    print(f"per game: {report['knife_damage_per_game']:.1f} knives hit the player; lives lost {d['all']:.1f} (to a "
          f"knife {d['knife']:.1f}, to an enemy {d['enemy']:.1f}, to the timer {d['time']:.1f}); "
          f"scores {', '.join(f'{s:,.0f}' for s in report['scores'])}")
    g = report["encoder_gradients"]
    print("gradient norm at the encoder: " + ", ".join(f"{k} {v:.2g}" for k, v in g.items()))
    print(f"wrote {out / 'report.json'} and {out / 'knives.png'} in {report['seconds']:.0f} s")
    return 0


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
