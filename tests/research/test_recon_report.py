import importlib
import json

import numpy as np
import pytest
from conftest import run_script


def test_recon_report_smoke(tmp_path):
    out = tmp_path / "report"
    result = run_script("recon_report.py", "--out", str(out), "--steps", "3", "--batch-size", "4",
                        "--frames", "48", "--collect-steps", "80", "--num-envs", "4", "--examples", "2",
                        "--variants", "plain,weighted,weighted_shift", "--set", "model.normalization=channel_mean",
                        "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"]) == {"plain", "weighted", "weighted_shift"}
    for variant in report["variants"].values():
        assert {"mse", "small_object_mse", "small_object_recall"} <= set(variant)
        assert variant["mse"] > 0
    assert report["variants"]["weighted"]["recon"]["loss"] != "plain"
    # plain is the decoder's MSE alone; weighted adds the locator's loss.
    assert report["variants"]["plain"]["recon"]["locate_coef"] == 0
    assert report["variants"]["weighted"]["recon"]["locate_coef"] > 0
    assert report["model"]["normalization"] == "channel_mean" and report["model"]["features_dim"] == 64
    assert report["data"]["train_episodes"] >= 1 and report["data"]["val_episodes"] >= 1
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_recon_report_rejects_bad_input_with_one_line(tmp_path):
    for args in (["--steps", "0"], ["--variants", "plain,nonsense"], ["--set", "recon.nope=1"],
                 ["--set", "ppo.lr=1"], ["--device", "tpu"], ["--batch-object-share", "1.5"],
                 ["--lr-tail", "-0.1"]):
        result = run_script("recon_report.py", "--out", str(tmp_path / "x"), *args, timeout=60)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_recon_report_help():
    result = run_script("recon_report.py", "--help", timeout=60)
    assert result.returncode == 0 and "--out" in result.stdout


def test_learning_rate_holds_then_falls_along_a_half_cosine_over_the_tail():
    lr = importlib.import_module("agent.research.recon_report").learning_rate
    # 12 steps, a tail of a third (4 steps): 9 steps at lr, the tail's first included, then
    # lr * (1 + cos(pi * k / 4)) / 2 for k = 1, 2, 3.
    got = [lr(step, 12, 2.0, 1 / 3) for step in range(12)]
    assert got[:9] == [2.0] * 9
    assert got[9:] == pytest.approx([1 + np.cos(np.pi / 4), 1.0, 1 - np.cos(np.pi / 4)])
    assert [lr(step, 12, 2.0, 0.0) for step in range(12)] == [2.0] * 12
    assert lr(0, 10, 1.0, 1.0) == 1.0 and 0 < lr(9, 10, 1.0, 1.0) < 0.03  # the whole run, never 0


def _dataset(n_frames: int, object_frames: list[int]):
    report = importlib.import_module("agent.research.recon_report")
    boxes = np.array([[i, 2, 3, 5, 2] for i in object_frames], dtype=np.int64).reshape(-1, 5)
    return report, report.Dataset(np.zeros((n_frames, 4, 8, 8), np.uint8), np.arange(n_frames),
                                  np.zeros((n_frames, 8, 8), bool), boxes)


def test_batch_sampler_draws_object_frames_at_the_asked_share():
    report, data = _dataset(40, [3, 17, 30])  # 3 of 40 frames hold an object
    for share, want in ((1.0, 1.0), (0.0, 0.0), (0.8, 0.8)):
        draw = report.batch_sampler(data, share, 64, seed=5)
        picks = np.concatenate([draw() for _ in range(200)])
        assert np.isin(picks, [3, 17, 30]).mean() == pytest.approx(want, abs=0.02), share
        assert picks.min() >= 0 and picks.max() < 40
    draw = report.batch_sampler(data, None, 64, seed=5)
    uniform = np.concatenate([draw() for _ in range(200)])
    assert np.isin(uniform, [3, 17, 30]).mean() == pytest.approx(3 / 40, abs=0.02)  # as collected
    # The uniform draws are the ones earlier versions of the report made: the README's figures still hold.
    assert np.array_equal(report.batch_sampler(data, None, 16, seed=9)(), np.random.default_rng(9).integers(0, 40, 16))
    # Seeded: the same seed gives every variant the same batches.
    a, b = report.batch_sampler(data, 0.8, 16, seed=9), report.batch_sampler(data, 0.8, 16, seed=9)
    assert all(np.array_equal(a(), b()) for _ in range(5))


def test_batch_sampler_falls_back_to_uniform_without_one_kind_of_frame():
    report, data = _dataset(10, [])
    draw = report.batch_sampler(data, 0.95, 32, seed=0)
    picks = np.concatenate([draw() for _ in range(20)])
    assert set(picks.tolist()) == set(range(10))
