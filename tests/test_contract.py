"""The names CONTRACT.md promises users' scripts, at the paths it gives."""

import numpy as np
import torch

from agent.config import Config


def test_the_public_api_keeps_its_names(tmp_path):
    from agent.checkpoint import load_agent
    from agent.detection import detect_small_objects
    from agent.models import Agent
    from agent.runs.checkpoint import checkpoint_state, save_checkpoint

    frame = np.full((64, 144), 85, np.uint8)
    frame[30:32, 50:55] = 74
    assert detect_small_objects(frame) == [(50, 30, 5, 2)]
    config = Config()
    agent = Agent(config.env.obs_shape, 14, config.model)
    save_checkpoint(checkpoint_state(agent, config), tmp_path / "a.pt")
    loaded, loaded_config = load_agent(tmp_path / "a.pt")
    obs = torch.full((2, *config.env.obs_shape), 85, dtype=torch.uint8)
    assert loaded.encode(obs).shape == (2, config.model.features_dim)
    picture = loaded.reconstruct(obs)
    assert picture.shape == (2, 1, 64, 144) and 0 <= picture.min() and picture.max() <= 1
    assert loaded_config == config and not loaded.training
