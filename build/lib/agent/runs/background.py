"""Periodic evaluation and videos during training, as background processes.

At an update where one is due, the trainer saves a weights-only snapshot to RUN_DIR/eval/update_N.pt and
starts `python -m agent.commands.evaluate` (writing RUN_DIR/eval/update_N.json) and/or
`python -m agent.commands.record_video` (writing RUN_DIR/videos/update_N.mp4) on it, with the interpreter
that runs the trainer: it works from any folder and from a non-editable install. Training goes on
meanwhile; each later update polls the jobs, logs finished evaluations to TensorBoard under `eval/`, and
deletes a snapshot once no job reads it. The evaluation's JSON then names where its agent came from (the
run, update and frames), not the deleted snapshot. A job still running when the next one is due makes the
new one wait its turn (skipped, not queued).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.models import Agent
from agent.runs.checkpoint import checkpoint_state, save_checkpoint
from agent.runs.files import write_json_atomic
from agent.runs.logger import RunLogger


def command_argv(command: str, **options: Any) -> list[str]:
    """The argv that runs `agent.commands.<command>` with this interpreter; `options` are its long options
    with underscores (`num_envs=4` -> `--num-envs 4`), a True flag passed bare, False and None left out."""
    argv = [sys.executable, "-m", f"agent.commands.{command}"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


@dataclass
class Job:
    kind: str
    process: subprocess.Popen
    snapshot: Path
    output: Path
    update: int
    frames: int
    log: Path


@dataclass
class BackgroundJobs:
    run_dir: Path
    config: Config
    jobs: list[Job] = field(default_factory=list)

    def due(self, update: int) -> tuple[bool, bool]:
        cfg = self.config.train
        running = {job.kind for job in self.jobs}
        evaluate = cfg.eval_every_updates > 0 and update % cfg.eval_every_updates == 0 and "eval" not in running
        video = cfg.video_every_updates > 0 and update % cfg.video_every_updates == 0 and "video" not in running
        return evaluate, video

    def launch(self, agent: Agent, update: int, frames: int) -> None:
        """Starts the jobs due at `update` on a snapshot of `agent`."""
        evaluate, video = self.due(update)
        if not (evaluate or video):
            return
        cfg = self.config.train
        name = f"update_{update:07d}"
        snapshot = self.run_dir / "eval" / f"{name}.pt"
        save_checkpoint(checkpoint_state(agent, self.config, counters={"update": update, "frames": frames}),
                        snapshot)
        common = {"device": "cpu", "threads": 1, "no_progress": True}
        if evaluate:
            out = self.run_dir / "eval" / f"{name}.json"
            argv = command_argv("evaluate", checkpoint=snapshot, episodes=cfg.eval_episodes, json=out,
                                max_frames=cfg.eval_max_frames, num_envs=min(cfg.eval_episodes, 8),
                                seed=self.config.train.seed, **common)
            self._start("eval", argv, snapshot, out, update, frames)
        if video:
            out = self.run_dir / "videos" / f"{name}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            argv = command_argv("record_video", checkpoint=snapshot, out=out, max_frames=cfg.video_max_frames,
                                seed=self.config.train.seed, **common)
            self._start("video", argv, snapshot, out, update, frames)

    def _start(self, kind: str, argv: list[str], snapshot: Path, output: Path, update: int, frames: int) -> None:
        log = output.with_suffix(".log")
        with open(log, "w") as f:
            process = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.jobs.append(Job(kind, process, snapshot, output, update, frames, log))

    def poll(self, logger: RunLogger) -> None:
        """Logs and forgets finished jobs."""
        for job in [j for j in self.jobs if j.process.poll() is not None]:
            self.jobs.remove(job)
            if job.process.returncode != 0:
                print(f"\nbackground {job.kind} failed (exit {job.process.returncode}), see {job.log}", flush=True)
            elif job.kind == "eval":
                result = json.loads(job.output.read_text())
                result["checkpoint"] = (f"{self.run_dir} at update {job.update} ({job.frames:,} frames; a "
                                        f"snapshot, removed after this evaluation)")
                result["source"] = {"run_dir": str(self.run_dir), "update": job.update, "frames": job.frames}
                write_json_atomic(result, job.output)
                logger.tb.add_scalar("eval/mean_score", result["mean_score"], job.frames)
                if result.get("human_normalized") is not None:
                    logger.tb.add_scalar("eval/human_normalized", result["human_normalized"], job.frames)
                job.log.unlink(missing_ok=True)
            else:
                job.log.unlink(missing_ok=True)
            if not any(other.snapshot == job.snapshot for other in self.jobs):
                job.snapshot.unlink(missing_ok=True)

    def close(self, logger: RunLogger, wait: bool) -> None:
        """Waits for the jobs (and logs them) or, with wait False, stops them."""
        for job in self.jobs:
            if wait:
                job.process.wait()
            else:
                job.process.terminate()
                job.process.wait()
        if wait:
            self.poll(logger)
        for job in self.jobs:
            job.snapshot.unlink(missing_ok=True)
        self.jobs.clear()
