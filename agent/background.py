"""Periodic evaluation and videos during training, as background processes.

At an update where one is due, the trainer saves a weights-only snapshot to RUN_DIR/eval/update_N.pt and
starts `scripts/evaluate.py` (writing RUN_DIR/eval/update_N.json) and/or `scripts/record_video.py`
(writing RUN_DIR/videos/update_N.mp4) on it. Training goes on meanwhile; each later update polls the jobs,
logs finished evaluations to TensorBoard under `eval/`, and deletes a snapshot once no job reads it.
A job still running when the next one is due makes the new one wait its turn (skipped, not queued).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from agent.checkpoint import checkpoint_state, save_checkpoint
from agent.config import Config
from agent.evaluation import evaluate_command
from agent.logger import RunLogger
from agent.models import Agent
from agent.video import video_command


@dataclass
class Job:
    kind: str
    process: subprocess.Popen
    snapshot: Path
    output: Path
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
            argv = evaluate_command(snapshot, out, cfg.eval_episodes, max_frames=cfg.eval_max_frames,
                                    num_envs=min(cfg.eval_episodes, 8), seed=self.config.train.seed, **common)
            self._start("eval", argv, snapshot, out, frames)
        if video:
            out = self.run_dir / "videos" / f"{name}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            argv = video_command(snapshot, out, max_frames=cfg.video_max_frames, seed=self.config.train.seed,
                                 **common)
            self._start("video", argv, snapshot, out, frames)

    def _start(self, kind: str, argv: list[str], snapshot: Path, output: Path, frames: int) -> None:
        log = output.with_suffix(".log")
        with open(log, "w") as f:
            process = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.jobs.append(Job(kind, process, snapshot, output, frames, log))

    def poll(self, logger: RunLogger) -> None:
        """Logs and forgets finished jobs."""
        for job in [j for j in self.jobs if j.process.poll() is not None]:
            self.jobs.remove(job)
            if job.process.returncode != 0:
                print(f"\nbackground {job.kind} failed (exit {job.process.returncode}), see {job.log}", flush=True)
            elif job.kind == "eval":
                result = json.loads(job.output.read_text())
                logger.tb.add_scalar("eval/mean_score", result["mean_score"], job.frames)
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
