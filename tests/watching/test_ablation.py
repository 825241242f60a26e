import json

import pytest
import yaml
from conftest import run_script

from agent.watching.ablation import spread, summarize


def write_run(run_dir, seed, scores, frames_per_row=1000, eval_mean=None, knife=None):
    """A run folder as training, kungfu-evaluate and kungfu-knife-report leave it: one metrics row per
    score (the first without a finished game), the seed in config.yaml, an eval JSON, a knife report."""
    run_dir.mkdir(parents=True)
    rows = ["update,frames,charts/game_score_mean100"]
    rows += [f"{i + 1},{(i + 1) * frames_per_row},{'' if s is None else s}" for i, s in enumerate(scores)]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"env": {"game": "kung_fu_master"}, "train": {"seed": seed}}))
    if eval_mean is not None:
        (run_dir / "eval").mkdir()
        for frames, mean in ((frames_per_row, 1.0), (len(scores) * frames_per_row, eval_mean)):
            (run_dir / "eval" / f"at_{frames}.json").write_text(json.dumps(
                {"mean_score": mean, "std_score": 10.0, "checkpoint_counters": {"frames": frames}}))
    if knife is not None:
        (run_dir / "knife_report.json").write_text(json.dumps(
            {"checkpoint": "c.pt", "knife_hits_per_game": knife, "knife_damage_per_game": 2 * knife,
             "recon_recall": 0.5, "recon_recall_chance": 0.25, "recon_false_per_empty": 3.0,
             "probes": {k: {"agent": 0.9, "random_init": 0.6} for k in ("present", "row", "column")}}))
    return run_dir


def test_each_run_is_read_at_its_end_and_at_the_shortest_runs_frames(tmp_path):
    long = [write_run(tmp_path / f"long{s}", s, [None, 100 * s, 200 * s, 300 * s, 400 * s], eval_mean=1000.0 * s,
                      knife=0.5 * s) for s in (1, 2, 3)]
    short = write_run(tmp_path / "short", 7, [None, 50, 60])
    summary = summarize({"long": long, "short": [short]})
    assert summary["equal_frames"] == 3000
    first = summary["variants"]["long"][0]
    assert first["seed"] == 1 and first["frames"] == 5000 and first["score_mean100"] == 400
    assert first["score_mean100_at_equal_frames"] == 200
    assert (first["eval_mean"], first["eval_frames"]) == (1000.0, 5000)  # the newest evaluation, not the first
    assert first["knife_hits_per_game"] == 0.5 and first["probe_row_random_init"] == 0.6
    assert (first["recon_recall"], first["recon_recall_chance"]) == (0.5, 0.25)
    over = summary["over_seeds"]["long"]
    assert over["score_mean100"] == {"mean": 800.0, "std": 400.0, "min": 400.0, "max": 1200.0, "n": 3}
    assert over["eval_mean"]["mean"] == 2000.0 and over["knife_hits_per_game"]["mean"] == pytest.approx(1.0)
    alone = summary["over_seeds"]["short"]
    assert alone["score_mean100"] == {"mean": 60.0, "std": None, "min": 60.0, "max": 60.0, "n": 1}
    assert alone["eval_mean"]["n"] == 0 and summary["variants"]["short"][0]["knife_hits_per_game"] is None


def test_a_run_before_its_first_game_has_no_score_and_spread_skips_it(tmp_path):
    run = write_run(tmp_path / "r", 1, [None, None])
    assert summarize({"v": [run]})["variants"]["v"][0]["score_mean100"] is None
    assert spread([None, 2.0, 4.0]) == {"mean": 3.0, "std": pytest.approx(2 ** 0.5), "min": 2.0, "max": 4.0, "n": 2}


def test_the_command_writes_the_contracts_summary_and_a_band_per_variant(tmp_path):
    runs = [write_run(tmp_path / f"k{s}", s, [None, 10, 20 * s], eval_mean=30.0 * s, knife=1.0) for s in (1, 2)]
    plain = write_run(tmp_path / "p1", 1, [None, 5, 6], eval_mean=7.0)
    out, png = tmp_path / "abl" / "summary.json", tmp_path / "abl" / "scores.png"
    result = run_script("ablation_summary.py", "--variant", f"knife_aware={runs[0]},{runs[1]}",
                        "--variant", f"plain={plain}", "--variant", "not_run=", "--out", str(out), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert "knife_aware: last-100 30 (14) n=2" in result.stdout
    data = json.loads(out.read_text())
    for run in data["variants"]["knife_aware"] + data["variants"]["plain"]:
        assert {"seed", "frames", "score_mean100", "eval_mean", "knife_hits_per_game"} <= set(run)
    assert [r["eval_mean"] for r in data["variants"]["knife_aware"]] == [30.0, 60.0]
    assert data["variants"]["not_run"] == [] and data["over_seeds"]["not_run"]["eval_mean"]["n"] == 0
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("variant, message", [
    ("nameless", "--variant 'nameless': expected NAME=RUN_DIR,RUN_DIR,..."),
    ("v=MISSING", "no run folder at MISSING"),
    ("v=", "give at least one run folder"),
])
def test_bad_variants_are_one_line_errors(variant, message, tmp_path):
    missing = str(tmp_path / "missing")
    result = run_script("ablation_summary.py", "--variant", variant.replace("MISSING", missing),
                        "--out", str(tmp_path / "s.json"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message.replace('MISSING', missing)}"]
    assert not (tmp_path / "s.json").exists()
