"""Faults a run survives: a latest.pt cut short, overwritten with random bytes or with a flipped bit, a
process killed (SIGKILL) in the middle of a save, a full disk. Each leaves a run that resumes."""

import csv
import errno
import io
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agent.commands.train as train_command
from agent.config import load_config
from agent.learner.trainer import CheckpointWriteError, train
from agent.runs.checkpoint import CheckpointError, load_checkpoint, load_resumable

SMOKE = ROOT / "configs" / "smoke.yaml"
LATEST = Path("checkpoints") / "latest.pt"
UPDATE_1 = Path("checkpoints") / "update_0000001.pt"
UPDATE_2 = Path("checkpoints") / "update_0000002.pt"


def config(*overrides: str):
    return load_config(SMOKE, list(overrides))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A smoke run of 2 updates: latest.pt, update_0000001.pt and update_0000002.pt."""
    run = tmp_path_factory.mktemp("faults") / "run"
    train(config(), run, progress=False)
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A copy of the finished run for one test to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def flip_bit(path: Path) -> None:
    """Flips one bit in the middle of the file, inside the tensors' bytes: the zip container still reads."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # a damage torch itself does not see


def updates(run: Path) -> list[str]:
    return [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]


def resumes_to_update_3(run: Path) -> None:
    """Resuming the run trains its third update and leaves no temp file of a broken save behind."""
    train(config("train.total_frames=384"), run, resume=True, progress=False)
    assert load_checkpoint(run / LATEST)["counters"]["update"] == 3
    assert updates(run) == ["1", "2", "3"]
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize("damage", [truncate, random_bytes, flip_bit])
def test_a_damaged_latest_falls_back_to_the_newest_intact_checkpoint_and_resumes(run, damage, capsys):
    damage(run / LATEST)
    with pytest.raises(CheckpointError):
        load_checkpoint(run / LATEST)
    state, path = load_resumable(run)
    assert path == run / UPDATE_2 and state["counters"]["update"] == 2
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and warning.startswith("warning: ")
    assert str(run / LATEST) in warning and f"resuming from {run / UPDATE_2} instead" in warning
    resumes_to_update_3(run)
    assert capsys.readouterr().err.count(f"resuming from {run / UPDATE_2} instead") == 1  # the trainer's own


def test_damaged_newest_checkpoints_are_all_named_in_the_one_warning(run, capsys):
    truncate(run / LATEST)
    flip_bit(run / UPDATE_2)
    _, path = load_resumable(run)
    assert path == run / UPDATE_1
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0
    assert f"{run / LATEST} is damaged or not a checkpoint" in warning
    assert f"{run / UPDATE_2} is damaged: its content does not match the digest" in warning
    assert warning.endswith(f"resuming from {run / UPDATE_1} instead")


def test_no_intact_checkpoint_is_one_error_line_that_says_what_was_tried(run, capsys):
    truncate(run / LATEST)
    random_bytes(run / UPDATE_2)
    flip_bit(run / UPDATE_1)
    assert train_command.main(["--resume", str(run), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert f"{run} holds no intact checkpoint to resume; tried 3: " in err
    for name in (LATEST, UPDATE_2, UPDATE_1):
        assert str(run / name) in err
    assert "start a new run with --config" in err
    assert "RuntimeError" not in err and "UnpicklingError" not in err


def test_a_resume_from_an_older_checkpoint_replaces_the_logged_updates_after_it(run):
    # A crash after update 2 was logged but before it was saved: the run resumes from update 1, and
    # update 2 is trained again. Its first log must not stay beside the second.
    (run / LATEST).unlink()
    (run / UPDATE_2).unlink()
    first = (run / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in first[1:]] == ["1", "2"]
    resumes_to_update_3(run)
    again = (run / "metrics.csv").read_text().splitlines()
    assert again[:2] == first[:2]
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert [event.step for event in tb.Scalars("losses/policy")] == [128, 256, 384]


def test_a_resume_from_an_older_checkpoint_replaces_the_log_of_the_updates_after_it(run):
    # A crash after update 2 was logged but before it was saved: the run resumes from update 1 and trains
    # update 2 again. Its first log (metrics.csv row, TensorBoard events) must not stay beside the second,
    # and the run's wall seconds go on from the checkpoint's.
    (run / LATEST).unlink()
    (run / UPDATE_2).unlink()
    first = (run / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in first[1:]] == ["1", "2"]
    saved_wall = load_checkpoint(run / UPDATE_1)["counters"]["wall_seconds"]
    resumes_to_update_3(run)
    rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    assert (run / "metrics.csv").read_text().splitlines()[:2] == first[:2]
    assert float(rows[1]["wall_seconds"]) > saved_wall > 0
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert [event.step for event in tb.Scalars("losses/policy")] == [128, 256, 384]


@pytest.mark.slow  # about 10 s: a subprocess that trains one update
def test_make_train_resumes_a_truncated_latest_from_the_previous_checkpoint(run):
    # `make train` runs this command when RUN_DIR/checkpoints/latest.pt exists.
    truncate(run / LATEST)
    result = run_script("train.py", "--resume", str(run), "--set", "train.total_frames=384", "--no-progress")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {run / LATEST} is damaged or not a checkpoint: it cannot be read as one (cut "
                        f"short, overwritten, or another kind of file); resuming from {run / UPDATE_2} instead"]
    assert "finished: update 3, 384 frames" in result.stdout
    assert load_checkpoint(run / LATEST)["counters"]["update"] == 3


# A child process that saves the run's latest checkpoint over itself: the kill -9 lands in the middle of a
# save_checkpoint call. With HALF set, its torch.save writes half the bytes, says so, and waits to be killed.
SAVER = """
import io, os, sys, time
import torch
from agent.runs.checkpoint import load_checkpoint, save_checkpoint

path, half = sys.argv[1], sys.argv[2] == "half"
state = load_checkpoint(path)
state.pop("digest")
real_save = torch.save

def save_half(obj, f):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[: buffer.tell() // 2])
    f.flush()
    print("half written", flush=True)
    time.sleep(60)

if half:
    torch.save = save_half
while True:
    save_checkpoint(state, path)
    print("saved", flush=True)
"""


def start_saver(path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SAVER, str(path), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_after_line(proc: subprocess.Popen, line: str, delay: float = 0.0) -> None:
    first = proc.stdout.readline()
    assert first.strip() == line, proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_in_the_middle_of_writing_a_checkpoint_leaves_the_previous_one_whole(run):
    before = (run / LATEST).read_bytes()
    kill_after_line(start_saver(run / LATEST, "half"), "half written")
    assert (run / LATEST).read_bytes() == before
    assert len(list((run / "checkpoints").glob(".latest.pt.*.tmp"))) == 1  # the kill did land mid-write
    resumes_to_update_3(run)


@pytest.mark.slow  # about 10 s: two children that import torch
def test_kill_9_at_random_moments_of_a_save_loop_leaves_a_checkpoint_that_loads(run):
    rng = random.Random(22)
    for _ in range(2):
        kill_after_line(start_saver(run / LATEST, "loop"), "saved", delay=rng.uniform(0.0, 0.3))
        assert load_checkpoint(run / LATEST)["counters"]["update"] == 2  # whole: the digest matches
    resumes_to_update_3(run)


def disk_full_on_write(monkeypatch, failing_write: int) -> list[int]:
    """Makes the `failing_write`-th torch.save from now on (1: the first) write half its bytes and then fail
    as a full disk does; returns the list of writes seen so far."""
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) != failing_write:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    return calls


@pytest.mark.parametrize("failing_write, kept_update", [(1, 2), (2, 3)], ids=["latest", "numbered copy"])
def test_a_full_disk_during_a_save_keeps_the_checkpoints_whole_and_the_run_resumes(run, monkeypatch,
                                                                                    failing_write, kept_update):
    disk_full_on_write(monkeypatch, failing_write)
    with pytest.raises(CheckpointWriteError) as info:
        train(config("train.total_frames=384"), run, resume=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "free space, then resume" in message
    assert load_checkpoint(run / LATEST)["counters"]["update"] == kept_update
    assert load_checkpoint(run / UPDATE_2)["counters"]["update"] == 2
    assert not list((run / "checkpoints").glob(".*.tmp"))
    monkeypatch.undo()
    resumes_to_update_3(run)


def test_the_train_command_reports_a_full_disk_in_one_line_with_exit_1(run, monkeypatch, capsys):
    disk_full_on_write(monkeypatch, 1)
    code = train_command.main(["--resume", str(run), "--set", "train.total_frames=384", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"error: could not write a checkpoint into {run / 'checkpoints'}")
    assert "(No space left on device)" in err and "free space, then resume" in err
    assert load_checkpoint(run / LATEST)["counters"]["update"] == 2
