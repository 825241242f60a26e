import json

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
    assert report["model"]["normalization"] == "channel_mean" and report["model"]["features_dim"] == 64
    assert report["data"]["train_episodes"] >= 1 and report["data"]["val_episodes"] >= 1
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_recon_report_rejects_bad_input_with_one_line(tmp_path):
    for args in (["--steps", "0"], ["--variants", "plain,nonsense"], ["--set", "recon.nope=1"],
                 ["--set", "ppo.lr=1"]):
        result = run_script("recon_report.py", "--out", str(tmp_path / "x"), *args, timeout=60)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_recon_report_help():
    result = run_script("recon_report.py", "--help", timeout=60)
    assert result.returncode == 0 and "--out" in result.stdout
