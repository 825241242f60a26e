import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
from conftest import run_script

from agent.env.scores import HUMAN_SCORE, RANDOM_SCORE
from agent.watching.plotting import load_run, plot_run_dirs, plot_runs, read_metrics, smooth


def write_run(run_dir, header, rows):
    run_dir.mkdir(parents=True)
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_columns_are_read_by_name_and_empty_cells_are_nan(tmp_path):
    run = write_run(tmp_path / "r", ["frames", "update", "charts/game_score_mean100", "losses/policy"],
                    [[512, 1, "", 0.5], [1024, 2, 300.5, ""], [1536, 3, 310, "bad"]])
    cols = read_metrics(run / "metrics.csv")
    assert set(cols) == {"frames", "update", "charts/game_score_mean100", "losses/policy"}
    np.testing.assert_array_equal(cols["charts/game_score_mean100"], [math.nan, 300.5, 310.0])
    np.testing.assert_array_equal(cols["losses/policy"], [0.5, math.nan, math.nan])
    x, y = load_run(run).series("charts/game_score_mean100")
    np.testing.assert_array_equal(x, [1024, 1536])
    assert load_run(run).series("losses/value") is None


def test_smoothing_is_a_debiased_moving_average():
    np.testing.assert_allclose(smooth(np.full(5, 3.0)), np.full(5, 3.0))
    np.testing.assert_allclose(smooth(np.array([0.0, 1.0]), weight=0.5), [0.0, 1.0 * 0.5 / 0.75])


def test_the_score_axis_scales_to_the_run_and_names_the_references_it_cannot_show(tmp_path):
    columns = ["frames", "charts/game_score_mean100"]
    early = write_run(tmp_path / "early", columns, [[i * 100, 300 + 50 * i] for i in range(20)])
    late = write_run(tmp_path / "late", columns, [[i * 100, 15000 + 500 * i] for i in range(20)])
    ax = plot_runs([load_run(early)]).axes[0]
    assert {line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"} == {RANDOM_SCORE}
    assert ax.get_ylim()[1] < 2000 and any("off the chart: human 22,736" in t.get_text() for t in ax.texts)
    ax = plot_runs([load_run(late)]).axes[0]
    assert {line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"} == {RANDOM_SCORE,
                                                                                               HUMAN_SCORE}
    assert not ax.texts and ax.get_ylim()[1] > HUMAN_SCORE


def test_a_group_is_drawn_as_its_mean_with_a_band_from_lowest_to_highest(tmp_path):
    from agent.watching.plotting import RunGroup

    runs = [load_run(write_run(tmp_path / f"s{k}", ["frames", "charts/game_score_mean100"],
                               [[i * 100, 1000 * k + 10 * i] for i in range(11)])) for k in (1, 2, 3)]
    x, mean, low, high = RunGroup("seeds", runs).band(points=11)
    assert x[0] == 0 and x[-1] == 1000
    assert mean.tolist() == pytest.approx([2000 + 10 * i for i in range(11)])
    assert low.tolist() == pytest.approx([1000 + 10 * i for i in range(11)])
    assert high.tolist() == pytest.approx([3000 + 10 * i for i in range(11)])
    out = tmp_path / "groups.png"
    proc = run_script("plot_run.py", "--group", f"seeds={runs[0].name and tmp_path / 's1'},{tmp_path / 's2'}",
                      "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert mpimg.imread(out).ndim == 3
    proc = run_script("plot_run.py", "--group", "nothing")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "NAME=RUN_DIR" in proc.stderr


def test_only_logged_losses_get_panels_and_evaluations_are_placed_by_frames(tmp_path):
    a = write_run(tmp_path / "a", ["frames", "charts/game_score_mean100", "losses/policy", "losses/value"],
                  [[i * 100, 200 + i, 0.1, 1.0] for i in range(20)])
    b = write_run(tmp_path / "b", ["update", "losses/policy", "charts/sps"], [[1, 0.2, ""], [2, 0.3, 900]])
    (a / "eval").mkdir()
    (a / "eval" / "e1.json").write_text(json.dumps({"mean_score": 500.0, "std_score": 50.0,
                                                    "checkpoint_counters": {"frames": 1000}}))
    fig = plot_runs([load_run(a), load_run(b)])
    score_ax, *small = fig.axes
    assert [ax.get_title() for ax in small] == ["policy loss", "value loss", "agent steps per second"]
    assert load_run(a).evals == [(1000.0, 500.0, 50.0)]


def test_plot_script_writes_a_png_and_tolerates_a_run_without_rows(tmp_path):
    run = write_run(tmp_path / "run", ["update", "frames", "charts/game_score_mean100"], [])
    proc = run_script("plot_run.py", str(run))
    assert proc.returncode == 0, proc.stderr
    image = mpimg.imread(run / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    out = tmp_path / "cmp.png"
    plot_run_dirs([run, run], out)
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png", "run"]


@pytest.mark.parametrize("case", ["missing-run", "not-png"])
def test_bad_input_is_one_line_and_exit_code_2(case, tmp_path):
    run = write_run(tmp_path / "run", ["update"], [[1]])
    args = {"missing-run": [str(tmp_path / "nothing")],
            "not-png": [str(run), "--out", str(tmp_path / "x.jpg")]}[case]
    proc = run_script("plot_run.py", *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr


def test_a_groups_evaluations_share_its_colour_and_one_legend_entry_and_the_title_counts_its_runs(tmp_path):
    from matplotlib.colors import to_rgba

    from agent.watching.plotting import RunGroup

    runs = []
    for k in (1, 2, 3):
        run = write_run(tmp_path / f"s{k}", ["frames", "charts/game_score_mean100"],
                        [[i * 100, 1000 * k + 10 * i] for i in range(11)])
        (run / "eval").mkdir()
        (run / "eval" / "e.json").write_text(json.dumps({"mean_score": 900.0 * k, "std_score": 10.0,
                                                         "checkpoint_counters": {"frames": 1000}}))
        runs.append(load_run(run))
    alone = load_run(write_run(tmp_path / "alone", ["frames", "charts/game_score_mean100"], [[0, 5], [100, 6]]))
    fig = plot_runs([*runs, alone], [RunGroup("seeds", runs)])
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert [label for label in labels if "evaluation" in label] == ["seeds: evaluations (mean, std), one per run"]
    band = next(c for c in ax.collections if c.get_label() == "seeds: lowest to highest run")
    points = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert sorted(line.get_ydata()[0] for line in points) == [900.0, 1800.0, 2700.0]
    assert {to_rgba(line.get_color()) for line in points} == {tuple(band.get_facecolor()[0][:3]) + (1.0,)}
    assert fig._suptitle.get_text() == "seeds (3), alone"


def test_ten_groups_get_ten_band_colours(tmp_path):
    from agent.watching.plotting import RunGroup

    groups = [RunGroup(f"v{k}", [load_run(write_run(tmp_path / f"v{k}", ["frames", "charts/game_score_mean100"],
                                                    [[0, k], [100, k + 1]]))]) for k in range(10)]
    fig = plot_runs([run for group in groups for run in group.runs], groups)
    bands = [c for c in fig.axes[0].collections if c.get_label().endswith("lowest to highest run")]
    assert len(bands) == 10
    assert len({tuple(band.get_facecolor()[0][:3]) for band in bands}) == 10


def test_a_groups_runs_share_its_colour_and_one_name_in_the_small_panels_and_a_long_title_wraps(tmp_path):
    from agent.watching.plotting import TITLE_WIDTH, RunGroup

    header = ["frames", "charts/game_score_mean100", "losses/value"]
    groups = []
    for g in range(12):
        name = f"variant_with_a_long_name_{g}"
        rows = [[i * 100, i, g + 0.1 * i] for i in range(11)]
        runs = [load_run(write_run(tmp_path / f"{name}-s{k}", header, rows)) for k in (1, 2)]
        groups.append(RunGroup(name, runs))
    alone = load_run(write_run(tmp_path / "alone", header, [[i * 100, i, 0.5] for i in range(11)]))
    fig = plot_runs([run for group in groups for run in group.runs] + [alone], groups)
    value_ax = next(ax for ax in fig.axes if ax.get_title() == "value loss")
    smooth_lines = [line for line in value_ax.get_lines() if line.get_linewidth() == 1.5]
    assert len(smooth_lines) == 25
    for g in range(12):
        first, second = smooth_lines[2 * g:2 * g + 2]
        assert first.get_color() == second.get_color()
        assert first.get_label() == f"variant_with_a_long_name_{g} (2)" and second.get_label().startswith("_")
    assert len({line.get_color() for line in smooth_lines[:24:2]}) == 12
    assert smooth_lines[-1].get_label() == "alone"
    legend_texts = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert legend_texts.count("alone") == 1 and legend_texts.count("variant_with_a_long_name_0 (2)") == 1
    title = fig._suptitle.get_text()
    assert len(title.splitlines()) > 1 and max(len(line) for line in title.splitlines()) <= TITLE_WIDTH
    assert " ".join(title.split()) == ", ".join([f"{group.name} (2)" for group in groups] + ["alone"])
