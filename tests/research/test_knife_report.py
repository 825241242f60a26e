import json

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, run_script

from agent.config import load_config
from agent.models import Agent
from agent.research import knife_report as kr
from agent.runs.checkpoint import checkpoint_state, save_checkpoint


def test_balanced_accuracy_weighs_each_class_alike():
    truth = np.array([0] * 90 + [1] * 10)
    assert kr.balanced_accuracy(truth, np.zeros(100, int)) == 0.5  # all "no knife": 90% right, half balanced
    assert kr.balanced_accuracy(truth, truth) == 1.0


def test_a_probe_finds_a_linearly_coded_column_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    code = rng.normal(size=(400, 16))
    code[:, 3] += 6.0 * labels  # the column, written along one unit
    assert kr.probe_accuracy(code[:300], labels[:300], code[300:], labels[300:], 4) > 0.9
    noise = rng.normal(size=(400, 16))
    assert kr.probe_accuracy(noise[:300], labels[:300], noise[300:], labels[300:], 4) < 0.4
    assert kr.probe_accuracy(code[:300], np.zeros(300, int), code[300:], labels[300:], 4) is None


def fake_play(health, lives, knife_at):
    n = len(health)
    data = kr.Play()
    for i in range(n):
        data.frames.append(np.zeros((4, 64, 144), np.uint8))
        data.recon.append(np.zeros((64, 144), np.uint8))
        data.code.append(np.zeros(64, np.float32))
        data.random_code.append(np.zeros(64, np.float32))
        data.game.append(0)
        data.knife.append((60, 33, 5, 2) if i in knife_at else None)
        data.player.append((70, 30, 8, 34))
        data.enemies.append([])
        data.health.append(health[i])
        data.lives.append(lives[i])
        data.pose.append(7)
    data.scores.append(0.0)
    return data


def test_knife_hits_and_deaths_are_told_apart_by_what_took_the_health():
    # Life 1: a knife hit (-7, a knife on screen the step before), grips (-1 a step), then a blow with no
    # knife in sight takes the rest; the life is lost to an enemy. Life 2: two knife hits take it all.
    health = [39, 39, 32, 31, 30, 0, 0, 0, 39, 39, 7, 7, 0, 0, 39]
    lives = [4] * 8 + [3] * 6 + [2]
    events = kr.knife_events(fake_play(health, lives, knife_at={1, 9, 11}))
    assert events["knife_damage_per_game"] == 3
    assert events["health_lost_per_game"] == {"knife": 7 + 32 + 7, "enemy": 1 + 1 + 30}
    assert events["deaths_per_game"] == {"all": 2, "knife": 1, "enemy": 1, "time": 0}
    assert events["knife_hits_per_game"] == 1


def test_a_decoder_whose_loss_is_off_has_no_recall_and_no_false_boxes():
    # A knife (5 x 2, 60 levels off the wall) in the input of frames 1 and 2 and drawn again only in
    # frame 1's reconstruction; frame 0 holds no knife, and its reconstruction a blob of its own.
    data = fake_play([39, 39, 39], [4, 4, 4], knife_at={1, 2})
    for i in (1, 2):
        data.frames[i][-1, 33:35, 60:65] = 60
    data.recon[1][33:35, 60:65] = 60
    data.recon[0][20:22, 30:35] = 60
    on = kr.detection_scores(data, load_config(ROOT / "configs" / "smoke.yaml"))
    assert (on["input_recall"], on["recon_recall"], on["recon_false_per_empty"]) == (1.0, 0.5, 1.0)
    assert on["recon_recall_chance"] == 0.0  # frame 0's blob lies far from where the knives fly
    off = kr.detection_scores(data, load_config(ROOT / "configs" / "smoke.yaml", ["recon.coef=0"]))
    assert off["input_recall"] == 1.0
    assert (off["recon_recall"], off["recon_recall_all"], off["recon_false_per_empty"]) == (None, None, None)
    assert off["recon_recall_chance"] is None


def test_the_decoders_recall_is_split_by_the_knifes_distance_to_a_fighter():
    # The player's RAM box starts at x 70. Frame 1's knife (x 60-64) is 5 px from him, frame 2's (x 64-68)
    # 1 px; both are in the input, and only frame 1's is drawn again.
    data = fake_play([39, 39, 39], [4, 4, 4], knife_at={1, 2})
    data.knife[2] = (64, 33, 5, 2)
    data.frames[1][-1, 33:35, 60:65] = 60
    data.frames[2][-1, 33:35, 64:69] = 60
    data.recon[1][33:35, 60:65] = 60
    scores = kr.detection_scores(data, load_config(ROOT / "configs" / "smoke.yaml"))
    assert (scores["knives_near_fighter"], scores["input_recall_near_fighter"]) == (1, 1.0)
    split = (scores["recon_recall"], scores["recon_recall_near_fighter"], scores["recon_recall_apart"])
    assert split == (0.5, 0.0, 1.0)


def test_false_boxes_where_knives_fly_set_the_chance_level_of_the_decoders_recall():
    # Knife-free frames 0, 3 and 4; knives in frames 1 and 2 at x 60 and 90. The knives' boxes are laid on
    # the knife-free frames in turn: frame 0 gets the first (x 60), frame 3 the second (x 90), frame 4 the
    # first again. Blobs 3 px right of the laid box in frame 0 (within the 2-px tolerance: 3 < 5 + 2) and
    # in frame 4 at x 120 (far): one of three laid knives is "found" by chance.
    data = fake_play([39] * 5, [4] * 5, knife_at={1, 2})
    data.knife[2] = (90, 33, 5, 2)
    data.recon[0][33:35, 63:68] = 60
    data.recon[4][33:35, 120:125] = 60
    scores = kr.detection_scores(data, load_config(ROOT / "configs" / "smoke.yaml"))
    assert scores["recon_recall_chance"] == pytest.approx(1 / 3)
    assert scores["recon_false_per_empty"] == pytest.approx(2 / 3)
    # Split by the player's RAM box (x 70-77): frame 0's blob (x 63-67) is 2 px from him, frame 4's far.
    assert scores["recon_false_near_fighter_per_empty"] == pytest.approx(1 / 3)
    assert scores["recon_false_apart_per_empty"] == pytest.approx(1 / 3)
    assert scores["recon_false_on_sprite_per_empty"] == 0  # both drawn on the wall
    # A fighter's arm in frame 3's input (rows 33-34, x 100-107, on his body) drawn loose in its picture:
    # a false box over a sprite of the input.
    data.frames[3][-1, 33:35, 100:108] = 60
    data.frames[3][-1, 10:50, 108:116] = 60
    data.recon[3][33:35, 100:105] = 60
    scores = kr.detection_scores(data, load_config(ROOT / "configs" / "smoke.yaml"))
    assert scores["recon_false_per_empty"] == pytest.approx(1)
    assert scores["recon_false_on_sprite_per_empty"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_the_report_on_a_fresh_agent_writes_every_contract_key(tmp_path):
    config = load_config(ROOT / "configs" / "smoke.yaml")
    torch.manual_seed(0)
    agent = Agent(config.env.obs_shape, 14, config.model)
    checkpoint = tmp_path / "fresh.pt"
    save_checkpoint(checkpoint_state(agent, config), checkpoint)
    out = tmp_path / "knives"
    proc = run_script("knife_report.py", "--checkpoint", str(checkpoint), "--out", str(out), "--games", "2",
                      "--held-out", "1", "--max-frames", "3000", "--no-progress", "--set", "recon.detect_group_rows=2",
                      timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    for key in ("input_recall", "recon_recall", "recon_false_per_empty", "knife_frames", "knife_hits_per_game"):
        assert key in report
    assert set(report["probes"]) == {"present", "row", "column"}
    for probe in report["probes"].values():
        assert set(probe) == {"agent", "random_init"}
    assert report["knife_frames"] > 0 and report["input_recall"] > 0.9  # the detector finds random play's knives
    assert cv2.imread(str(out / "knives.png")).ndim == 3
    assert config.recon.detect_group_rows != 2 and report["settings"]["recon"]["detect_group_rows"] == 2


def test_the_report_sets_only_the_detectors_keys(tmp_path):
    proc = run_script("knife_report.py", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "k"),
                      "--set", "ppo.lr=1e-3")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "recon.detect_" in proc.stderr


def test_another_game_is_refused_in_one_line(tmp_path):
    config = load_config(ROOT / "configs" / "smoke.yaml", ["env.game=pong", "env.crop=null", "env.resize=[84, 84]"])
    agent = Agent(config.env.obs_shape, 6, config.model)
    checkpoint = tmp_path / "pong.pt"
    save_checkpoint(checkpoint_state(agent, config), checkpoint)
    proc = run_script("knife_report.py", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "k"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "KungFuMaster's RAM" in proc.stderr


def test_each_loss_terms_pull_on_the_encoder_scales_with_its_coefficient():
    from agent.research.gradients import encoder_gradient_norms

    config = load_config(ROOT / "configs" / "smoke.yaml")
    scaled = load_config(ROOT / "configs" / "smoke.yaml", [f"recon.coef={10 * config.recon.coef}", "ppo.vf_coef=0"])
    torch.manual_seed(0)
    agent = Agent(config.env.obs_shape, 14, config.model)
    # Six rollouts of 16 steps: the play band is empty for the first 70-odd steps of a game.
    base = encoder_gradient_norms(agent, config, seed=1, rollouts=6, minibatch=32)
    more = encoder_gradient_norms(agent, scaled, seed=1, rollouts=6, minibatch=32)
    assert set(base) == {"policy", "value", "entropy", "decoder", "locator"}
    assert base["decoder"] > 0 and more["decoder"] == pytest.approx(10 * base["decoder"], rel=1e-4)
    assert more["value"] == 0 and more["policy"] == pytest.approx(base["policy"], rel=1e-5)
