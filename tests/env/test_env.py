import numpy as np
import pytest

from agent.config import ConfigError, EnvConfig
from agent.env.game import GameEnv, episode_seed
from agent.env.scores import human_normalized


def small_env(**kw) -> GameEnv:
    cfg = EnvConfig(num_envs=2, num_threads=1, **kw)
    return GameEnv(cfg, seed=3)


def test_observation_is_the_cropped_native_play_band():
    env = small_env()
    obs = env.reset()
    assert obs.shape == (2, 4, 64, 144) and obs.dtype == np.uint8
    native = GameEnv(EnvConfig(num_envs=2, num_threads=1, crop=None), seed=3)
    full = native.reset()
    assert full.shape == (2, 4, 210, 160)
    np.testing.assert_array_equal(obs, full[:, :, 96:160, 8:152])


def test_autoreset_reports_the_game_and_continues_with_a_fresh_seeded_game():
    # A 40-frame cap ends every game after 10 steps of 4 frames.
    env = small_env(max_episode_frames=40)
    env.reset()
    rng = np.random.default_rng(0)
    for t in range(10):
        step = env.step(rng.integers(0, env.num_actions, 2))
        if t < 9:
            assert not step.done.any()
    assert step.done.all()
    assert step.finished_frames == [40, 40]
    assert len(step.finished_scores) == 2
    # The observation returned with the end of game 0 is the first observation of game 1:
    # the same as a fresh env reset with game 1's seed.
    after_done = step.obs.copy()
    fresh = small_env(max_episode_frames=40)
    seeds = np.array([episode_seed(3, i, 1) for i in range(2)])
    raw, _ = fresh.env.reset(seed=seeds)
    np.testing.assert_array_equal(after_done, raw[:, :, 96:160, 8:152])
    assert env.game_frames.tolist() == [0, 0] and env.game_score.tolist() == [0.0, 0.0]


def test_restore_replays_games_in_progress_exactly():
    env = small_env(max_episode_frames=60)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(23):  # env games end at step 15; both are 8 steps into their second game
        env.step(rng.integers(0, env.num_actions, 2))
    state = env.state_dict()
    expected = [env.step(a).obs.copy() for a in rng.integers(0, env.num_actions, (5, 2))]
    rng = np.random.default_rng(1)
    for _ in range(23):
        rng.integers(0, env.num_actions, 2)
    other = small_env(max_episode_frames=60)
    other.restore(state)
    for want, actions in zip(expected, rng.integers(0, env.num_actions, (5, 2)), strict=True):
        np.testing.assert_array_equal(other.step(actions).obs, want)


def test_bad_game_name_is_a_config_error():
    with pytest.raises(ConfigError, match="env.game"):
        GameEnv(EnvConfig(game="no_such_game", num_envs=1), seed=0)


def test_human_normalized_anchors():
    assert human_normalized(258.5) == 0.0
    assert human_normalized(22_736.3) == pytest.approx(1.0)


def test_restore_handles_games_of_different_lengths():
    import torch

    histories = [[3, 1, 4, 1, 5, 9, 2], [6, 5, 3], []]
    state = {
        "seed": 3,
        "games_started": torch.tensor([0, 2, 5]),
        "game_score": torch.zeros(3, dtype=torch.float64),
        "actions": [torch.tensor(h, dtype=torch.uint8) for h in histories],
    }
    env = GameEnv(EnvConfig(num_envs=3, num_threads=1), seed=0)
    restored = env.restore(state).copy()
    for i, (history, game) in enumerate(zip(histories, [0, 2, 5], strict=True)):
        single = GameEnv(EnvConfig(num_envs=1, num_threads=1), seed=3)
        raw, _ = single.env.reset(seed=np.array([episode_seed(3, i, game)]))
        for a in history:
            raw = single.env.step(np.array([a]))[0]
        np.testing.assert_array_equal(restored[i], raw[0, :, 96:160, 8:152])
    assert env.game_frames.tolist() == [28, 12, 0]


def test_send_then_recv_is_a_step_and_leaves_the_last_obs_alone_until_recv():
    # Past the end of a game too (40-frame cap: games end at step 10), where recv reseeds it.
    stepped, split = small_env(max_episode_frames=40), small_env(max_episode_frames=40)
    stepped.reset()
    last = split.reset()
    rng = np.random.default_rng(2)
    for actions in rng.integers(0, stepped.num_actions, (14, 2)):
        want = stepped.step(actions)
        before = last.copy()
        split.send(actions)
        np.testing.assert_array_equal(last, before)  # the emulator writes elsewhere until recv
        got = split.recv()
        np.testing.assert_array_equal(got.obs, want.obs)
        assert got.reward.tolist() == want.reward.tolist() and got.done.tolist() == want.done.tolist()
        assert got.finished_scores == want.finished_scores
        last = got.obs
    assert split.state_dict()["actions"][0].tolist() == stepped.state_dict()["actions"][0].tolist()


def test_recv_without_send_and_a_second_send_are_refused():
    env = small_env()
    env.reset()
    with pytest.raises(RuntimeError, match="no step was sent"):
        env.recv()
    env.send(np.zeros(2, dtype=np.int64))
    with pytest.raises(RuntimeError, match="has not been received"):
        env.send(np.zeros(2, dtype=np.int64))
    assert env.recv().obs.shape == (2, 4, 64, 144)
