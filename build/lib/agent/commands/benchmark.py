"""Measure raw emulator throughput and training throughput on the same settings, in one run.

  python scripts/benchmark.py --seconds 30 --json bench.json [--config configs/full.yaml] [--nproc 4]

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

With --nproc N, `scaling` adds two more phases of about --seconds each: the train command trains with 1
rank (`python -m agent.commands.train`) and with N data-parallel ranks (`torchrun --standalone
--nproc-per-node N`, each rank stepping env.num_envs emulators), in throw-away run folders; each one's
training frames/s (emulator frames of all ranks) are read from its metrics.csv, from the first update to
the last (the first pays for warm-up), and `speedup` is the N-rank rate over the 1-rank one.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agent.commands.cli import OneLineParser, positive
from agent.config import ConfigError, config_from_dict, load_config, save_config
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


def command_rate(config, ranks: int, seconds: float) -> dict:
    """Runs the train command with `ranks` ranks for about `seconds` in a throw-away folder; returns its
    training frames/s (all ranks): the frames between the first and the last update's metrics.csv rows
    over the wall time between them; and the frames and count of its updates."""
    with tempfile.TemporaryDirectory() as tmp:
        settings, run = Path(tmp) / "config.yaml", Path(tmp) / "run"
        save_config(config, settings)
        launcher = [sys.executable] if ranks == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
        argv = [*launcher, "-m", "agent.commands.train", "--config", str(settings), "--run-dir", str(run),
                "--no-progress"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600 + 10 * seconds)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"training with {ranks} rank(s) failed (exit code {done.returncode}): {tail}")
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    frames = [int(r["frames"]) for r in rows]
    first, last = (rows[0], rows[-1]) if len(rows) > 1 else ({"frames": 0, "wall_seconds": 0.0}, rows[-1])
    rate = (int(last["frames"]) - int(first["frames"])) / (float(last["wall_seconds"]) - float(first["wall_seconds"]))
    return {"frames_per_s": rate, "frames_per_update": frames[0], "updates": len(rows)}


def scaling(config, nproc: int, seconds: float) -> dict:
    """Training frames/s of the train command with 1 and with `nproc` ranks, and the speed-up."""
    runs = []
    for ranks in (1, nproc):
        runs.append(command_rate(config, ranks, seconds))
        print(f"train, {ranks} rank{'s' if ranks > 1 else ' '}:   {runs[-1]['frames_per_s']:10.0f} frames/s over "
              f"{runs[-1]['updates']} updates", flush=True)
    speedup = runs[1]["frames_per_s"] / runs[0]["frames_per_s"]
    return {"ranks": [1, nproc], "train_frames_per_s": [r["frames_per_s"] for r in runs], "speedup": speedup,
            "efficiency": speedup / nproc, "frames_per_update": [r["frames_per_update"] for r in runs],
            "updates": [r["updates"] for r in runs], "envs_per_rank": config.env.num_envs}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"the settings to measure (default: {DEFAULT_CONFIG} where it exists, else the "
                             f"built-in defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--seconds", type=positive(float), default=20.0, help="length of each phase")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--nproc", type=positive(int), metavar="N",
                        help="also train with 1 and with N data-parallel ranks (torchrun) and report the speed-up")
    args = parser.parse_args(argv)
    overrides = [*args.overrides, f"train.time_limit_s={args.seconds}", "train.total_frames=1000000000",
                 "train.keep_checkpoints=0", "train.checkpoint_every_updates=1000000",
                 "train.eval_every_updates=0", "train.video_every_updates=0"]
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
    try:
        scaled = scaling(config, args.nproc, args.seconds) if args.nproc else None
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
    if scaled is not None:
        result["scaling"] = scaled
    print(f"ratio train/env:  {result['ratio']:.3f}; detection adds {100 * result['detection_overhead']:.1f}% "
          f"to env stepping")
    print("profile of training time: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in result["profile"].items()))
    if scaled is not None:
        print(f"speed-up with {args.nproc} ranks: {scaled['speedup']:.2f}x ({100 * scaled['efficiency']:.0f}% of "
              f"linear)")
    if args.json:
        write_json_atomic(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
