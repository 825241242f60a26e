"""An ablation's summary: for each variant (the seeds of one config), each run's score, its newest
evaluation and its knife report, with the mean and spread over the seeds; what `kungfu-ablation` writes.

A run folder holds what training leaves (`metrics.csv`, `config.yaml`), its evaluations as
`eval/*.json` (`kungfu-evaluate --json`) and, when measured, `knife_report.json` (the `report.json` of
`kungfu-knife-report`). Runs of different lengths are also compared at equal frames: each run's
last-100-games score at the last update at or below the frames the shortest run reached.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agent.watching.plotting import SCORE, RunData, load_run

# The knife report's figures a summary keeps, by their names in it.
KNIFE_FIGURES = ("knife_hits_per_game", "knife_damage_per_game", "recon_recall", "recon_recall_chance",
                 "recon_false_per_empty")
# The figures averaged over a variant's seeds.
AVERAGED = ("score_mean100", "score_mean100_at_equal_frames", "eval_mean", *KNIFE_FIGURES,
            "probe_present", "probe_row", "probe_column")


def final_frames(run: RunData) -> int:
    """The frame counter at a run's last logged update."""
    frames = run.columns.get("frames")
    if frames is None or not np.isfinite(frames).any():
        raise ValueError(f"the metrics.csv of {run.name} logs no frames")
    return int(np.nanmax(frames))


def score_at(run: RunData, frames: int) -> float | None:
    """The last-100-games score at the last update at or below `frames`; None before the first game."""
    series = run.series(SCORE)
    if series is None:
        return None
    x, y = series
    below = y[x <= frames]
    return float(below[-1]) if len(below) else None


def run_summary(run_dir: str | Path, run: RunData, equal_frames: int | None = None) -> dict[str, Any]:
    """One run's figures, from its folder and its loaded metrics and evaluations (`load_run`): seed,
    frames, last-100-games score (at the end, and at `equal_frames`), its newest evaluation (mean, std, the
    frames of the checkpoint it played) and its knife report's figures; a figure the folder has no file
    for is None."""
    run_dir = Path(run_dir)
    frames = final_frames(run)
    try:
        seed = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["seed"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ValueError(f"{run_dir}/config.yaml gives no train.seed") from exc
    evals = run.evals
    eval_frames, eval_mean, eval_std = evals[-1] if evals else (None, None, None)
    summary = {"run": run_dir.as_posix(), "seed": seed, "frames": frames, "score_mean100": score_at(run, frames),
               "score_mean100_at_equal_frames": score_at(run, equal_frames or frames),
               "eval_mean": eval_mean, "eval_std": eval_std,
               "eval_frames": None if eval_frames is None else int(eval_frames)}
    report_path = run_dir / "knife_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    summary.update({key: report.get(key) for key in KNIFE_FIGURES})
    summary["knife_report_checkpoint"] = report.get("checkpoint")
    for probe in ("present", "row", "column"):
        scores = report.get("probes", {}).get(probe, {})
        summary[f"probe_{probe}"] = scores.get("agent")
        summary[f"probe_{probe}_random_init"] = scores.get("random_init")
    return summary


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, standard deviation over seeds (n - 1 in the divisor; None for one value), lowest, highest and
    the count of the values that are not None."""
    known = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not known:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(known)), "std": float(np.std(known, ddof=1)) if len(known) > 1 else None,
            "min": min(known), "max": max(known), "n": len(known)}


def summarize(variants: dict[str, list[str | Path]]) -> dict[str, Any]:
    """`{"equal_frames", "variants": {name: [run_summary, ...]}, "over_seeds": {name: {figure: spread}}}`
    for the runs of each variant (a variant may have none yet); equal frames are the frames the shortest of
    all runs reached."""
    if not any(variants.values()):
        raise ValueError("give at least one run folder")
    loaded = {name: [(d, load_run(d)) for d in dirs] for name, dirs in variants.items()}
    equal = min(final_frames(run) for pairs in loaded.values() for _, run in pairs)
    runs = {name: [run_summary(d, run, equal) for d, run in pairs] for name, pairs in loaded.items()}
    over_seeds = {name: {key: spread([r[key] for r in rows]) for key in AVERAGED} for name, rows in runs.items()}
    return {"equal_frames": equal, "variants": runs, "over_seeds": over_seeds}


def format_table(summary: dict[str, Any]) -> str:
    """The summary as lines of text: per variant, the mean (std) over seeds of its main figures."""

    def cell(s: dict[str, Any], digits: int) -> str:
        if s["mean"] is None:
            return "-"
        std = "" if s["std"] is None else f" ({s['std']:,.{digits}f})"
        return f"{s['mean']:,.{digits}f}{std} n={s['n']}"

    lines = [f"means over seeds (std); last-100 scores at equal frames: {summary['equal_frames']:,}"]
    for name, s in summary["over_seeds"].items():
        lines.append(f"{name}: last-100 {cell(s['score_mean100_at_equal_frames'], 0)}; at the end "
                     f"{cell(s['score_mean100'], 0)}; evaluation {cell(s['eval_mean'], 1)}; knife deaths per "
                     f"game {cell(s['knife_hits_per_game'], 2)}; probes present {cell(s['probe_present'], 3)}, "
                     f"high/low {cell(s['probe_row'], 3)}")
    return "\n".join(lines)
