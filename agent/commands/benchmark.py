"""Measure raw emulator throughput and training throughput on the same settings, in one run.

  python scripts/benchmark.py --seconds 30 --json bench.json [--config configs/full.yaml]

Three phases, each about --seconds long:
1. env: the vector env alone, random actions (agent steps/s, all envs together);
2. env + detection: the same, plus the small-object detector on every newest frame, as the learner runs it:
   on the last step's frames while the emulator computes the next. Phases 1 and 2 alternate every
   STRETCH steps on one env, so both see the same games and the same load on the machine;
   `detection_overhead` = env_sps / env_with_detection_sps - 1. (Run as separate phases of a few
   seconds, one after the other, the same detector read from -4% to +11% on this shared 2-core machine.)
3. train: the real training loop (rollout, update, logging) in a throw-away run folder.
`ratio` = train_sps / env_sps. `profile` splits the training time into policy inference, waiting for the
emulator, detection (which runs while the emulator steps) and the update, from the timers the training
loop logs.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agent.commands.cli import OneLineParser, positive
from agent.config import ConfigError, config_from_dict, load_config
from agent.device import resolve_device
from agent.env.game import GameEnv
from agent.learner.trainer import train
from agent.perception.weights import object_masks
from agent.runs.files import OutputPathError, check_output_file, write_json_atomic

DEFAULT_CONFIG = Path("configs") / "default.yaml"

STRETCH = 8
"""Vector steps between the env phase's switches of the detector on and off (about 25 ms on 2 cores)."""


def env_rates(config, seconds: float) -> tuple[float, float]:
    """Agent steps/s of the vector env under random actions, without and with detection, each run about
    `seconds` in all, alternating every STRETCH steps on one env."""
    env = GameEnv(config.env, config.train.seed)
    frames = env.reset()
    rng = np.random.default_rng(0)
    elapsed, steps = [0.0, 0.0], [0, 0]
    stretch = 0
    while min(elapsed) < seconds:
        detect = stretch % 2
        started = time.perf_counter()
        for _ in range(STRETCH):
            env.send(rng.integers(0, env.num_actions, env.num_envs))
            if detect:
                object_masks(frames[:, -1], config.recon)
            frames = env.recv().obs
        elapsed[detect] += time.perf_counter() - started
        steps[detect] += STRETCH * env.num_envs
        stretch += 1
    env.close()
    return steps[0] / elapsed[0], steps[1] / elapsed[1]


def train_profile(config, seconds: float) -> dict:
    """Runs the training loop for about `seconds`; returns steps/s (first update excluded) and a profile."""
    with tempfile.TemporaryDirectory() as tmp:
        train(config, Path(tmp) / "run", max_updates=max(2, config.num_updates), progress=False)
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    measured = rows[1:] if len(rows) > 1 else rows  # the first update pays for warm-up
    steps = len(measured) * config.batch_size
    parts = {key: sum(float(r[f"diagnostics/time_{key}_s"]) for r in measured)
             for key in ("policy", "env", "detect", "update")}
    total = sum(config.batch_size / float(r["charts/sps"]) for r in measured)
    parts["other"] = max(0.0, total - sum(parts.values()))
    return {"train_sps": steps / total, "updates": len(measured),
            "profile": {key: round(value / total, 4) for key, value in parts.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"the settings to measure (default: {DEFAULT_CONFIG} where it exists, else the "
                             f"built-in defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--seconds", type=positive(float), default=20.0, help="length of each phase")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    overrides = [*args.overrides, f"train.time_limit_s={args.seconds}", "train.total_frames=1000000000",
                 "train.keep_checkpoints=0", "train.checkpoint_every_updates=1000000"]
    try:
        if args.json is not None:
            check_output_file(args.json, "--json")
        if args.config is None and DEFAULT_CONFIG.is_file():
            args.config = DEFAULT_CONFIG
        config = (load_config(args.config, overrides) if args.config is not None
                  else config_from_dict(None, overrides))
        device = resolve_device(config.train.device)
    except (ConfigError, OutputPathError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"benchmark: {config.env.num_envs} envs, obs {config.env.obs_shape}, device {device}, "
          f"{args.seconds:g} s per phase", flush=True)
    raw, detected = env_rates(config, args.seconds)
    print(f"env:              {raw:10.0f} steps/s", flush=True)
    print(f"env + detection:  {detected:10.0f} steps/s", flush=True)
    trained = train_profile(config, args.seconds)
    print(f"train:            {trained['train_sps']:10.0f} steps/s over {trained['updates']} updates", flush=True)
    result = {
        "train_sps": trained["train_sps"],
        "env_sps": raw,
        "ratio": trained["train_sps"] / raw,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "num_envs": config.env.num_envs,
        "env_with_detection_sps": detected,
        "detection_overhead": raw / detected - 1.0,
        "profile": trained["profile"],
        "obs_shape": list(config.env.obs_shape),
        "config": str(args.config) if args.config is not None else "built-in defaults",
        "overrides": args.overrides,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"ratio train/env:  {result['ratio']:.3f}; detection adds {100 * result['detection_overhead']:.1f}% "
          f"to env stepping")
    print("profile of training time: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in result["profile"].items()))
    if args.json:
        write_json_atomic(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
