"""Run logging: one metrics.csv row per update, TensorBoard scalars under namespaced tags.

Tags: `charts/` (game score, SPS, learning rate), `losses/`, `recon/`, `diagnostics/`, `eval/`. A game score
is written only when a game really ends (game over or the frame cap), never per life.
"""

from __future__ import annotations

import csv
import math
from collections import deque
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

# metrics.csv columns, fixed so that a resumed run appends to the same table.
COLUMNS = [
    "update", "frames", "charts/game_score_mean100", "charts/games", "charts/sps", "charts/lr",
    "losses/policy", "losses/value", "losses/entropy", "losses/recon", "losses/locate", "losses/approx_kl",
    "losses/clip_fraction", "losses/aux_recon", "losses/aux_locate", "losses/aux_clone", "recon/mse",
    "recon/small_object_mse", "recon/small_object_recall", "recon/located",
    "diagnostics/explained_variance", "diagnostics/code_saturation", "diagnostics/time_policy_s",
    "diagnostics/time_env_s", "diagnostics/time_detect_s", "diagnostics/time_update_s", "wall_seconds",
]


class RunLogger:
    """metrics.csv and TensorBoard of a run, continued from `frames` (those of the checkpoint a resumed run
    loaded, 0 for a new run): TensorBoard hides the events an earlier attempt wrote past them."""

    def __init__(self, run_dir: Path, recent_scores: list[float] = (), games: int = 0, frames: int = 0):
        self.run_dir = Path(run_dir)
        path = self.run_dir / "metrics.csv"
        header = None
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
        self._file = open(path, "a", newline="")
        # A run resumed from an older version keeps the columns its file started with.
        self._csv = csv.DictWriter(self._file, fieldnames=header or COLUMNS, extrasaction="ignore")
        if header is None:
            self._csv.writeheader()
        self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=frames + 1 if frames else None)
        self.recent_scores: deque[float] = deque(recent_scores, maxlen=100)
        self.games = games

    def game_over(self, score: float, frames_in_game: int, frames: int) -> None:
        self.games += 1
        self.recent_scores.append(score)
        self.tb.add_scalar("charts/game_score", score, frames)
        self.tb.add_scalar("charts/game_frames", frames_in_game, frames)

    @property
    def score_mean(self) -> float:
        return sum(self.recent_scores) / len(self.recent_scores) if self.recent_scores else math.nan

    def update(self, row: dict[str, float]) -> None:
        """Writes one update's scalars to TensorBoard and a row to metrics.csv."""
        row = {**row, "charts/game_score_mean100": self.score_mean, "charts/games": self.games}
        frames = int(row["frames"])
        for key, value in row.items():
            if "/" in key and not (isinstance(value, float) and math.isnan(value)):
                self.tb.add_scalar(key, value, frames)
        self._csv.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self.tb.close()
        self._file.close()
