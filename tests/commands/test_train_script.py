import csv
import signal
import subprocess
import sys
import time

import torch
from conftest import ROOT, run_script

from agent.config import load_config


def test_smoke_run_leaves_every_artifact(tmp_path):
    run = tmp_path / "run"
    result = run_script("train.py", "--config", "configs/smoke.yaml", "--run-dir", str(run), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "finished: update 2, 256 frames" in result.stdout
    assert load_config(run / "config.yaml").env.num_envs == 2
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["update"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["losses/recon"]) > 0 and float(rows[-1]["charts/sps"]) > 0
    assert list((run / "tb").glob("events.out.tfevents.*"))
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["counters"]["frames"] == 256
    assert (run / "checkpoints" / "update_0000002.pt").exists()

    resumed = run_script("train.py", "--resume", str(run), "--set", "train.total_frames=384", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "finished: update 3, 384 frames" in resumed.stdout


def test_bad_input_exits_2_with_one_line(tmp_path):
    for args, message in [
        (["--config", "configs/smoke.yaml", "--set", "ppo.lrr=1"], "ppo.lrr: unknown key"),
        (["--config", "configs/missing.yaml"], "no such file"),
        (["--resume", str(tmp_path)], "no checkpoint"),
    ]:
        result = run_script("train.py", *args, "--run-dir", str(tmp_path / "x")) if "--config" in args \
            else run_script("train.py", *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", "configs/smoke.yaml", "--run-dir",
         str(run), "--set", "train.total_frames=1000000", "--set", "train.checkpoint_every_updates=1000",
         "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() or (run / "metrics.csv").read_text().count("\n") < 2:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped early" in out
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["counters"]["update"] >= 1


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"x")
    result = run_script("train.py", "--config", "configs/smoke.yaml", "--run-dir", str(tmp_path))
    assert result.returncode == 2 and "--resume" in result.stderr
