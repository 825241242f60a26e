"""Strip a training checkpoint down to what evaluation and videos need: weights (normalizer included),
config and counters; no optimizer, RNG or emulator state. For sharing an agent, e.g. under pretrained/.

  kungfu-export-agent --checkpoint runs/default/checkpoints/latest.pt --out pretrained/agent.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.commands.cli import OneLineParser
from agent.runs.checkpoint import (
    CheckpointError,
    build_agent,
    checkpoint_config,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from agent.runs.files import OutputPathError, check_output_file


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the agent file to write (.pt)")
    args = parser.parse_args(argv)
    try:
        check_output_file(args.out, "--out", suffix=".pt")
        state = load_checkpoint(args.checkpoint)
        config = checkpoint_config(state)
        agent = build_agent(state, config)
    except (CheckpointError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counters = {k: v for k, v in state.get("counters", {}).items() if isinstance(v, int | float)}
    save_checkpoint(checkpoint_state(agent, config, counters=counters), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
