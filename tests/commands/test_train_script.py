import csv
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_script

from agent.config import load_config
from agent.runs.checkpoint import load_checkpoint, numbered_checkpoints


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


# ---------------------------------------------------------------------------------------------------
# Under torchrun: 2 ranks of the smoke config, 256 frames an update.


def torchrun(*args, max_restarts: int = 0) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 scripts/train.py ARGS` in a session of its own, as from a
    terminal: a Ctrl-C reaches the launcher, which starts each rank in a session of its own too."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", str(max_restarts), str(ROOT / "scripts" / "train.py"), *map(str, args), "--no-progress"]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@contextmanager
def stopped_at_the_end(proc: subprocess.Popen):
    """Yields `proc`; at the end, a torchrun still running is stopped, and with it its ranks."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # torchrun passes SIGTERM on to the ranks, and kills them after 30 s
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def wait_for_updates(run: Path, proc: subprocess.Popen, count: int) -> None:
    deadline = time.time() + 180
    while not (run / "metrics.csv").exists() or (run / "metrics.csv").read_text().count("\n") < count + 1:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)


def rank_pid(launcher: int, rank: int) -> int:
    """The pid of the launcher's child process that runs `rank` (from /proc: torchrun sets RANK)."""
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == launcher and f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no process of rank {rank} under {launcher}")


def updates_logged(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(row["update"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_ctrl_c_on_torchrun_stops_every_rank_after_the_update_and_saves_once(tmp_path):
    run = tmp_path / "run"
    with stopped_at_the_end(torchrun("--config", "configs/smoke.yaml", "--run-dir", run, "--set",
                                     "train.total_frames=1000000", "--set", "train.checkpoint_every_updates=1000",
                                     "--set", "train.keep_checkpoints=5")) as proc:
        wait_for_updates(run, proc, 1)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C; torchrun passes it on to each rank
        out, err = proc.communicate(timeout=120)
    assert "forcefully" not in err  # the ranks ended by themselves, before torchrun's timeout
    assert out.count("stopped early") == 1 and out.count("stopping after this update") == 1  # rank 0 speaks
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    stopped = state["counters"]["update"]
    assert f"stopped early: update {stopped}, {256 * stopped:,} frames" in out
    assert updates_logged(run) == list(range(1, stopped + 1))  # no update after the one the signal fell in
    assert [p.name for p in numbered_checkpoints(run)] == [f"update_{stopped:07d}.pt"]  # saved once
    assert len(state["ranks"]) == 2

    with stopped_at_the_end(torchrun("--resume", run, "--set", f"train.total_frames={256 * (stopped + 1)}")) as resumed:
        out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert f"finished: update {stopped + 1}, {256 * (stopped + 1):,} frames" in out
    assert updates_logged(run) == list(range(1, stopped + 2))


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_attempt_and_torchrun_resumes_from_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    with stopped_at_the_end(torchrun("--config", "configs/smoke.yaml", "--run-dir", run, "--set",
                                     "train.total_frames=3072", "--set", "train.keep_checkpoints=1",
                                     max_restarts=1)) as proc:
        wait_for_updates(run, proc, 2)
        os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    # The survivor says what happened and what is left; torchrun then restarts both ranks, which resume.
    # gloo words it as the socket fell: "Connection closed by peer" or "Read error ...: Connection reset by peer".
    assert re.search(r"error: rank 0 of 2 lost contact with the others \([^)]*Connection (closed|reset) by peer", err)
    assert f"the checkpoints in {run / 'checkpoints'} are intact" in err
    assert "damaged" not in err
    assert f"torchrun restarted the job: resuming {run}" in out
    assert "finished: update 12, 3,072 frames" in out
    assert updates_logged(run) == list(range(1, 13))
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["counters"]["update"] == 12
