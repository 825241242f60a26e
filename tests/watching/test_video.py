import importlib

import numpy as np
import pytest
from conftest import run_script

from agent.config import Config, EnvConfig
from agent.env.game import GameEnv
from agent.env.single import SingleGame
from agent.runs.checkpoint import checkpoint_state, save_checkpoint
from agent.watching.video import BOX_COLOUR, FrameInfo, PanelLayout, compose_frame, upscale


@pytest.mark.parametrize("kw", [{}, {"crop": None, "resize": [84, 84]}], ids=["crop", "resize"])
def test_single_game_observations_match_the_vector_env(kw):
    cfg = EnvConfig(num_envs=1, num_threads=1, max_episode_frames=2000, **kw)
    vector = GameEnv(cfg, seed=7)
    single = SingleGame(cfg, seed=7, max_frames=2000)
    np.testing.assert_array_equal(single.reset(), vector.reset()[0])
    actions = np.random.default_rng(0).integers(0, 14, 150)
    score = 0.0
    for t, a in enumerate(actions):
        step = vector.step(np.array([a]))
        obs, reward, done = single.step(int(a))
        score += reward
        assert reward == step.reward[0]
        np.testing.assert_array_equal(obs, step.obs[0], err_msg=f"step {t}")
    assert score == single.score
    assert single.frames == vector.game_frames[0] == 600
    vector.close()
    single.close()


def test_single_game_stops_at_the_frame_cap():
    game = SingleGame(EnvConfig(), seed=0, max_frames=10)
    game.reset()
    dones = [game.step(0)[2] for _ in range(3)]
    assert dones == [False, False, True] and game.frames == 10 and not game.game_over
    game.close()


def _info(n_boxes=None):
    names = [f"A{i}" for i in range(14)]
    probs = np.full(14, 1 / 14)
    return FrameInfo(score=1200, lives=3, frames=400, value=0.5, action=2, probs=probs, action_names=names,
                     num_boxes=n_boxes)


def test_panel_layout_places_the_sharp_game_and_the_three_panels():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (210, 160, 3), dtype=np.uint8)
    obs = rng.integers(0, 255, (64, 144), dtype=np.uint8)
    recon = rng.random((64, 144))
    band = rng.integers(0, 255, (64, 144, 3), dtype=np.uint8)
    layout = PanelLayout(obs_hw=(64, 144))
    frame = compose_frame(layout, rgb, _info(), obs_frame=obs, recon=recon, band_rgb=band)
    assert frame.shape == (layout.height, layout.width, 3) == (812, 936, 3)
    assert frame.dtype == np.uint8 and layout.height % 2 == 0 and layout.width % 2 == 0
    # Every game pixel is a sharp 3x3 block at the game's place.
    x, y = layout.game_origin
    np.testing.assert_array_equal(frame[y:y + 630, x:x + 480], upscale(rgb, 3))
    # The input panel shows the observation, 3x, in gray; panels sit beside the game, inside the frame.
    assert layout.obs_scale == 3 and layout.panel_size == (432, 192)
    px, py = layout.panel_origin(0)
    assert px >= x + 480
    np.testing.assert_array_equal(frame[py:py + 192, px:px + 432, 1], upscale(obs, 3))
    bx, by = layout.panel_origin(2)
    np.testing.assert_array_equal(frame[by:by + 192, bx:bx + 432], upscale(band, 3))
    assert by + 192 <= layout.info_origin[1] and bx + 432 <= layout.width
    # Without panels the frame is the game and the info bar only.
    bare = PanelLayout(obs_hw=(64, 144), panels=False)
    assert compose_frame(bare, rgb, _info()).shape == (bare.height, bare.width, 3) == (778, 496, 3)


def test_detected_boxes_ring_the_object_in_the_detection_panel():
    layout = PanelLayout(obs_hw=(64, 144))
    band = np.zeros((64, 144, 3), np.uint8)
    frame = compose_frame(layout, np.zeros((210, 160, 3), np.uint8), _info(1), obs_frame=band[..., 0],
                          recon=np.zeros((64, 144)), band_rgb=band, boxes=[(40, 30, 5, 2)])
    bx, by = layout.panel_origin(2)
    panel = frame[by:by + 192, bx:bx + 432]
    ys, xs = np.nonzero(np.all(panel == BOX_COLOUR, axis=-1))
    # The ring surrounds the 15x6 panel pixels of the 5x2 object and leaves it visible.
    assert xs.min() < 40 * 3 and xs.max() >= 45 * 3 and ys.min() < 30 * 3 and ys.max() >= 32 * 3
    assert not np.all(panel[30 * 3:32 * 3, 40 * 3:45 * 3] == BOX_COLOUR, axis=-1).any()
    # Nothing is drawn in the other panels.
    ox, oy = layout.panel_origin(0)
    assert not np.all(frame[oy:oy + 192, ox:ox + 432] == BOX_COLOUR, axis=-1).any()


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    from agent.models import Agent

    config = Config()
    path = tmp_path_factory.mktemp("ckpt") / "fresh.pt"
    save_checkpoint(checkpoint_state(Agent(config.env.obs_shape, 14, config.model), config), path)
    return path


def test_recorded_video_is_browser_h264_with_the_expected_frames_and_size(fresh_checkpoint, tmp_path):
    import imageio.v2 as imageio

    out = tmp_path / "game.mp4"
    proc = run_script("record_video.py", "--checkpoint", str(fresh_checkpoint), "--out", str(out),
                      "--max-frames", "40", "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    reader = imageio.get_reader(out)
    meta = reader.get_meta_data()
    frames = [f for f in reader]
    reader.close()
    # One frame for the start and one per agent step: 40 frames / frameskip 4 = 10 steps.
    assert len(frames) == 11
    assert frames[0].shape == (812, 936, 3)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 15
    assert [p.name for p in tmp_path.iterdir()] == ["game.mp4"]


def test_a_damaged_checkpoint_is_one_line_and_exit_code_2(fresh_checkpoint, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(fresh_checkpoint.read_bytes()[:3000])
    proc = run_script("record_video.py", "--checkpoint", str(damaged), "--out", str(tmp_path / "v.mp4"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("args", [["--out", "v.avi"], ["--out", "v.mp4", "--fps", "0"],
                                  ["--out", "v.mp4", "--max-frames", "x"]])
def test_bad_options_are_one_line_and_exit_code_2(args, fresh_checkpoint, capsys):
    script = importlib.import_module("agent.commands.record_video")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--checkpoint", str(fresh_checkpoint), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")




def test_the_reconstruction_panel_says_when_the_decoder_has_not_learned_yet():
    from agent.watching.video import recon_title

    frame = np.full((64, 144), 85, np.uint8)
    frame[30:60, 40:48] = 214
    flat = np.full((64, 144), 85 / 255, np.float32)
    assert recon_title(flat, frame) == "reconstruction: flat, the decoder has not learned yet"
    learned = frame.astype(np.float32) / 255
    learned[31, 41] = 0.0
    assert recon_title(learned, frame) == f"reconstruction (decoder), mse {(214 / 255) ** 2 / (64 * 144):.5f}"
