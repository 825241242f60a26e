"""Curves of training runs: the game score against the random and human references, and the losses.

A run folder holds `metrics.csv` (one row per update, written by `agent.runs.logger`); columns are read by
name, and a missing column or an empty cell (no finished game yet, a metric the run did not log) is
simply not drawn. Evaluation results saved as `RUN_DIR/eval/*.json` (the JSON of `kungfu-evaluate`)
are drawn on the score panel as points with their standard deviation, at the frame counter stored in
the checkpoint they evaluated. Runs can be grouped (the seeds of one variant): a group is drawn as the
mean of its runs' score curves with a band from the lowest to the highest.

The score axis scales to the runs; a reference line (random, human) is drawn where it fits on it, and
named in the corner where it does not.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from agent.env.scores import reference_scores  # noqa: E402

SCORE = "charts/game_score_mean100"
LEGEND_INSIDE = 12
"""Most legend entries drawn inside the score panel; a longer legend goes beside it."""
TITLE_WIDTH = 120
"""Characters on a line of the figure's title (the runs' and groups' names); a longer title wraps."""
# The smaller panels, in order; a panel no run has data for is left out.
PANELS = [
    ("losses/policy", "policy loss"),
    ("losses/value", "value loss"),
    ("losses/entropy", "entropy"),
    ("losses/recon", "reconstruction loss"),
    ("recon/small_object_recall", "small-object recall"),
    ("diagnostics/code_saturation", "code units at |tanh| > 0.99"),
    ("charts/sps", "agent steps per second"),
]


@dataclass
class RunData:
    name: str
    columns: dict[str, np.ndarray]
    """metrics.csv by column name, float64; empty or unreadable cells are NaN."""
    evals: list[tuple[float, float, float]] = field(default_factory=list)
    """(frames, mean score, std) of the run's saved evaluations."""
    game: str = "kung_fu_master"
    """The game, from the run's config.yaml (for its reference scores)."""

    @property
    def x(self) -> tuple[np.ndarray, str]:
        """The x axis: emulator frames when logged, else the update number, else the row."""
        for name, label in (("frames", "emulator frames"), ("update", "update")):
            values = self.columns.get(name)
            if values is not None and np.isfinite(values).any():
                return values, label
        rows = len(next(iter(self.columns.values()))) if self.columns else 0
        return np.arange(rows, dtype=np.float64), "row"

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(x, y) of the rows where `column` has a value; None when it has none."""
        y = self.columns.get(column)
        if y is None:
            return None
        x, _ = self.x
        keep = np.isfinite(y) & np.isfinite(x)
        return (x[keep], y[keep]) if keep.any() else None


def _number(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """Every column of a metrics CSV as a float array; an empty file gives no columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        names = [n for n in (reader.fieldnames or []) if n]
    return {name: np.array([_number(row.get(name)) for row in rows], dtype=np.float64) for name in names}


def read_evals(run_dir: Path) -> list[tuple[float, float, float]]:
    """(frames, mean, std) of RUN_DIR/eval/*.json results that know their checkpoint's frame counter."""
    points = []
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            frames = float(data["checkpoint_counters"]["frames"])
            points.append((frames, float(data["mean_score"]), float(data.get("std_score") or 0.0)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a result from elsewhere, or one without a frame counter: not placeable
    return sorted(points)


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.csv")
    return RunData(name=run_dir.resolve().name, columns=read_metrics(metrics), evals=read_evals(run_dir),
                   game=_run_game(run_dir))


def _run_game(run_dir: Path) -> str:
    try:
        return str(yaml.safe_load((run_dir / "config.yaml").read_text())["env"]["game"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "kung_fu_master"


@dataclass
class RunGroup:
    """Runs drawn as one curve: the mean of their score curves on a common frame grid, with a band from
    the lowest to the highest run, over the frames all of them reached."""

    name: str
    runs: list[RunData]

    @property
    def title(self) -> str:
        """The name with its count of runs, as the figure's title and the small panels' legend give it."""
        return f"{self.name} ({len(self.runs)})"

    def band(self, points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(frames, mean, low, high) of the group's score curves; None when a run has no score yet."""
        curves = [run.series(SCORE) for run in self.runs]
        if not curves or any(c is None or len(c[0]) < 2 for c in curves):
            return None
        start = max(c[0][0] for c in curves)
        end = min(c[0][-1] for c in curves)
        if end <= start:
            return None
        grid = np.linspace(start, end, points)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        return grid, ys.mean(0), ys.min(0), ys.max(0)


def smooth(y: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """TensorBoard-style exponential moving average, debiased at the start."""
    out = np.empty_like(y)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(y):
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


def _frames_formatter(value: float, _pos: int) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _score_panel(ax: plt.Axes, runs: list[RunData], colours: list, groups: list[RunGroup] = ()) -> None:
    drawn: list[float] = []
    # A grouped run's evaluations (in its group's colour, from `colours`) have one legend entry for the group.
    group_of = {id(run): (i, group) for i, group in enumerate(groups) for run in group.runs}
    labelled: set[int] = set()
    for run, colour in zip(runs, colours, strict=True):
        data = run.series(SCORE)
        if data is not None and id(run) not in group_of:
            ax.plot(*data, color=colour, lw=1.8, label=f"{run.name}: mean of last 100 games")
            drawn += [float(data[1].min()), float(data[1].max())]
        if run.evals:
            label = f"{run.name}: evaluation (mean, std)"
            if id(run) in group_of:
                i, group = group_of[id(run)]
                label = f"{group.name}: evaluations (mean, std), one per run" if i not in labelled else None
                labelled.add(i)
            frames, means, stds = (np.array(v) for v in zip(*run.evals, strict=True))
            ax.errorbar(frames, means, yerr=stds, fmt="o", color=colour, ms=5, capsize=3, label=label)
            drawn += [float((means - stds).min()), float((means + stds).max())]
    for i, group in enumerate(groups):
        band = group.band()
        if band is None:
            continue
        colour = _group_colour(i)
        x, mean, low, high = band
        count = f"{len(group.runs)} run" + ("s" if len(group.runs) > 1 else "")
        ax.plot(x, mean, color=colour, lw=2.2, label=f"{group.name}: mean of {count}")
        ax.fill_between(x, low, high, color=colour, alpha=0.25, label=f"{group.name}: lowest to highest run")
        drawn += [float(low.min()), float(high.max())]
    if not drawn:
        ax.text(0.5, 0.5, "no finished games yet", transform=ax.transAxes, ha="center", va="center",
                color="grey", fontsize=12)
    ref = reference_scores(runs[0].game) if runs else None
    bottom, top = (min(drawn), max(drawn)) if drawn else (0.0, 1.0)
    if ref is not None:
        _reference_lines(ax, ref, bottom, top)
    ax.set_title("game score (full games, unclipped)")
    ax.set_ylabel("score")
    if ref is not None:
        random, human = ref
        secondary = ax.secondary_yaxis(
            "right", functions=(lambda s: (s - random) / (human - random), lambda h: random + h * (human - random))
        )
        secondary.set_ylabel("human-normalized")
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > LEGEND_INSIDE:
        ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8)  # beside the panel, past its right axis
    elif entries:
        ax.legend(loc="upper left", fontsize=8)


GROUP_COLOURS = [plt.get_cmap(name)(k) for name in ("Dark2", "Set1") for k in range(plt.get_cmap(name).N)]
"""The group bands' colours: Dark2's 8, then Set1's 9; they repeat only past 17 groups."""


def _group_colour(i: int) -> tuple[float, ...]:
    return GROUP_COLOURS[i % len(GROUP_COLOURS)]


def _reference_lines(ax: plt.Axes, ref: tuple[float, float], bottom: float, top: float) -> None:
    """Random and human lines where they fit the runs' range (with a margin); the others named in a corner."""
    span = max(top - bottom, 1.0)
    low, high = min(bottom, 0.0), top + 0.15 * span
    off_chart = []
    for (value, name, colour) in ((ref[1], "human", "tab:green"), (ref[0], "random", "grey")):
        if low - 0.15 * span <= value <= high:
            ax.axhline(value, color=colour, ls="--", lw=1.2, label=f"{name} {value:,.1f}")
            low, high = min(low, value), max(high, value + 0.05 * span)
        else:
            off_chart.append(f"{name} {value:,.0f}")
    ax.set_ylim(low, high)
    if off_chart:
        ax.text(0.99, 0.97, "off the chart: " + ", ".join(off_chart), transform=ax.transAxes, ha="right",
                va="top", color="grey", fontsize=8)


def _run_styles(runs: list[RunData], groups: list[RunGroup]) -> tuple[list, list[str | None]]:
    """Each run's colour and its legend label in the small panels: a grouped run takes its group's colour,
    and the group is named once (on its first run); the other runs take tab10's colours in turn."""
    group_of = {id(run): i for i, group in enumerate(groups) for run in group.runs}
    colours, labels, named = [], [], set()
    alone = 0
    for run in runs:
        if id(run) in group_of:
            i = group_of[id(run)]
            colours.append(_group_colour(i))
            labels.append(groups[i].title if i not in named else None)
            named.add(i)
        else:
            colours.append(plt.get_cmap("tab10")(alone % 10))
            labels.append(run.name)
            alone += 1
    return colours, labels


def _small_panel(ax: plt.Axes, runs: list[RunData], colours: list, labels: list[str | None], column: str,
                 title: str) -> None:
    for run, colour, label in zip(runs, colours, labels, strict=True):
        data = run.series(column)
        if data is None:
            continue
        x, y = data
        if len(y) >= 10:
            ax.plot(x, y, color=colour, lw=0.8, alpha=0.3)
            ax.plot(x, smooth(y), color=colour, lw=1.5, label=label)
        else:
            ax.plot(x, y, color=colour, lw=1.5, marker="o", ms=3, label=label)
    ax.set_title(title, fontsize=10)


def plot_runs(runs: list[RunData], groups: list[RunGroup] = ()) -> Figure:
    """The figure: the score panel across the top, one small panel per logged loss or chart below.
    `groups` draws some of the runs as one band each on the score panel, and in the group's colour, named
    once, in the small panels."""
    colours, labels = _run_styles(runs, groups)
    panels = [(c, t) for c, t in PANELS if any(run.series(c) is not None for run in runs)]
    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig = plt.figure(figsize=(13, 5 + 3 * nrows), layout="constrained")
    grid = fig.add_gridspec(1 + nrows, ncols, height_ratios=[1.7] + [1] * nrows)
    score_ax = fig.add_subplot(grid[0, :])
    _score_panel(score_ax, runs, colours, groups)
    axes = [score_ax]
    for i, (column, title) in enumerate(panels):
        ax = fig.add_subplot(grid[1 + i // ncols, i % ncols], sharex=score_ax)
        _small_panel(ax, runs, colours, labels, column, title)
        axes.append(ax)
    x_label = runs[0].x[1] if runs else "emulator frames"
    for ax in axes:
        ax.xaxis.set_major_formatter(FuncFormatter(_frames_formatter))
        ax.grid(alpha=0.3)
        ax.set_xlabel(x_label, fontsize=8)
    entries = sum(label is not None for label in labels)
    if entries > 1 and len(axes) > 1:
        if entries > LEGEND_INSIDE and len(panels) % ncols:
            # The runs' names fill the first free cell of the last row rather than cover a panel.
            spare = fig.add_subplot(grid[nrows, len(panels) % ncols])
            spare.axis("off")
            spare.legend(*axes[1].get_legend_handles_labels(), loc="upper left", fontsize=8,
                         ncols=2 if entries > 2 * LEGEND_INSIDE // 3 else 1)
        else:
            axes[1].legend(fontsize=8)
    grouped = {id(run) for group in groups for run in group.runs}
    names = [group.title for group in groups]
    names += [run.name for run in runs if id(run) not in grouped]
    fig.suptitle(textwrap.fill(", ".join(names), TITLE_WIDTH), fontsize=12)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Saves as PNG through a temp file and a rename: a reader never sees half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def plot_run_dirs(run_dirs: list[str | Path], out: str | Path,
                  groups: dict[str, list[str | Path]] | None = None) -> Path:
    """Reads the runs and writes their curves to `out` (PNG); what `kungfu-plot` runs. `groups` maps a
    name to run folders drawn as one band (they need not be among `run_dirs`)."""
    runs = [load_run(d) for d in run_dirs]
    run_groups = []
    for name, dirs in (groups or {}).items():
        members = [load_run(d) for d in dirs]
        runs += members
        run_groups.append(RunGroup(name, members))
    save_figure(plot_runs(runs, run_groups), out)
    return Path(out)
