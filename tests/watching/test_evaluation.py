import importlib
import json
import math
import sys

import numpy as np
import pytest
import torch
from conftest import run_script

from agent.config import Config, EnvConfig, ModelConfig
from agent.env.game import Step
from agent.env.protocol import protocol_env_config
from agent.env.scores import human_normalized
from agent.models import Agent
from agent.runs.checkpoint import checkpoint_state, save_checkpoint
from agent.runs.files import write_json_atomic
from agent.watching import evaluation
from agent.watching.evaluation import evaluate, game_quotas, policy_step


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    config = Config()
    agent = Agent(config.env.obs_shape, 14, config.model)
    path = tmp_path_factory.mktemp("ckpt") / "fresh.pt"
    save_checkpoint(checkpoint_state(agent, config), path)
    return path


def test_game_quotas_split_the_games_evenly_over_the_envs():
    np.testing.assert_array_equal(game_quotas(10, 4), [3, 3, 2, 2])
    np.testing.assert_array_equal(game_quotas(3, 3), [1, 1, 1])
    assert game_quotas(7, 1).tolist() == [7]


def test_protocol_settings_override_the_training_ones_but_keep_the_observation_pipeline():
    trained = EnvConfig(repeat_action_probability=0.0, max_episode_frames=5000, noop_max=30, crop=None,
                        resize=[84, 84], stack=2)
    cfg = protocol_env_config(trained, num_envs=3)
    assert (cfg.repeat_action_probability, cfg.max_episode_frames, cfg.noop_max) == (0.25, 108_000, 0)
    assert (cfg.num_envs, cfg.resize, cfg.stack, cfg.obs_shape) == (3, [84, 84], 2, (2, 84, 84))
    assert protocol_env_config(trained, 1, max_frames=400).max_episode_frames == 400


class FakeGameEnv:
    """Env 0 finishes a 1-point game every step; env 1 a 100-point game every 5 steps."""

    def __init__(self, cfg, seed):
        self.num_envs, self.num_actions, self.t = cfg.num_envs, 14, 0

    def reset(self):
        return np.zeros((self.num_envs, 4, 64, 144), np.uint8)

    def step(self, actions):
        self.t += 1
        done = np.array([True, self.t % 5 == 0])
        scores = [1.0] + ([100.0] if done[1] else [])
        frames = [4] + ([20] if done[1] else [])
        return Step(self.reset(), np.zeros(2, np.float32), done, np.zeros(2, bool), scores, frames)

    def close(self):
        pass


def test_short_games_are_not_favoured(monkeypatch):
    # Taking the first 4 games to finish would give three 1-point games and one 100-point game;
    # each env playing its quota of 2 gives two of each.
    monkeypatch.setattr(evaluation, "GameEnv", FakeGameEnv)
    config = Config()
    agent = Agent(config.env.obs_shape, 14, config.model).eval()
    result = evaluate(agent, protocol_env_config(config.env, num_envs=2), episodes=4)
    assert result.scores == [1.0, 1.0, 100.0, 100.0]
    assert result.lengths == [4, 4, 20, 20]
    assert result.mean_score == pytest.approx(50.5)


def test_greedy_actions_are_the_most_probable_and_sampling_is_seeded():
    config = Config(model=ModelConfig(channels=[8, 8], kernels=[8, 4], strides=[4, 2], head_hidden=0))
    agent = Agent(config.env.obs_shape, 14, config.model).eval()
    with torch.no_grad():  # a peaked policy, so sampled and greedy actions can differ in a visible way
        agent.actor.weight.mul_(300.0)
    obs = torch.randint(0, 255, (64, *config.env.obs_shape), dtype=torch.uint8)
    greedy = policy_step(agent, obs, greedy=True)
    assert torch.equal(greedy.actions, greedy.probs.argmax(-1))
    assert torch.allclose(greedy.probs.sum(-1), torch.ones(64))
    first = policy_step(agent, obs, False, torch.Generator().manual_seed(5)).actions
    again = policy_step(agent, obs, False, torch.Generator().manual_seed(5)).actions
    assert torch.equal(first, again)


def test_json_is_written_atomically_and_without_nan(tmp_path):
    path = tmp_path / "out" / "eval.json"
    write_json_atomic({"mean_score": math.nan, "scores": [1.0, math.inf]}, path)
    assert json.loads(path.read_text()) == {"mean_score": None, "scores": [1.0, None]}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_evaluate_script_writes_the_contract_json_with_its_protocol(fresh_checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    proc = run_script("evaluate.py", "--checkpoint", str(fresh_checkpoint), "--episodes", "3",
                      "--num-envs", "2", "--max-frames", "400", "--device", "cpu", "--json", str(out),
                      "--no-progress", "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    contract = {"mean_score", "median_score", "std_score", "human_normalized", "scores", "lengths",
                "protocol"}
    assert contract <= set(data)
    assert len(data["scores"]) == len(data["lengths"]) == 3
    # A fresh agent survives 400 frames (100 steps): every game is cut by the cap.
    assert data["lengths"] == [400, 400, 400]
    assert data["mean_score"] == pytest.approx(np.mean(data["scores"]))
    assert data["human_normalized"] == pytest.approx(human_normalized(data["mean_score"]))
    protocol = data["protocol"]
    assert protocol["repeat_action_probability"] == 0.25
    assert protocol["max_episode_frames"] == 400 and protocol["standard"] is False
    assert (protocol["episodes"], protocol["num_envs"], protocol["seed"]) == (3, 2, 4)
    assert protocol["actions"] == "sampled" and protocol["full_game"] is True
    assert "mean" in proc.stdout and "NOT the standard protocol" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def _unusable_checkpoint(kind: str, tmp_path, fresh_checkpoint):
    path = tmp_path / f"{kind}.pt"
    if kind == "damaged":  # a truncated copy
        path.write_bytes(fresh_checkpoint.read_bytes()[:4000])
    elif kind == "other-architecture":  # weights of a wider encoder saved under the default config
        wide = Config(model=ModelConfig(channels=[16, 32, 32]))
        save_checkpoint(checkpoint_state(Agent(wide.env.obs_shape, 14, wide.model), Config()), path)
    return path


@pytest.mark.parametrize("kind", ["damaged", "other-architecture", "missing"])
def test_an_unusable_checkpoint_is_one_line_and_exit_code_2(kind, tmp_path, fresh_checkpoint):
    path = _unusable_checkpoint(kind, tmp_path, fresh_checkpoint)
    proc = run_script("evaluate.py", "--checkpoint", str(path), "--episodes", "1", "--max-frames", "40")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not _ale_banner(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--episodes", "0"], ["--episodes", "two"],
                                  ["--max-frames", "-5", "--episodes", "1"], []])
def test_bad_numbers_are_one_line_and_exit_code_2(args, fresh_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module("agent.commands.evaluate").main(["--checkpoint", str(fresh_checkpoint), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def _ale_banner(line: str) -> bool:
    return line.startswith("A.L.E:") or line.startswith("[Powered by Stella]")


def test_background_command_runs_the_evaluate_command_through_this_interpreter(tmp_path):
    from agent.runs.background import command_argv

    argv = command_argv("evaluate", checkpoint=tmp_path / "c.pt", episodes=8, json=tmp_path / "e.json",
                        num_envs=4, greedy=True, seed=None, no_progress=False, threads=1)
    assert argv[:3] == [sys.executable, "-m", "agent.commands.evaluate"]
    assert argv[3:] == ["--checkpoint", str(tmp_path / "c.pt"), "--episodes", "8", "--json",
                        str(tmp_path / "e.json"), "--num-envs", "4", "--greedy", "--threads", "1"]
