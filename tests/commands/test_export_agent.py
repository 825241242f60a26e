import torch
from conftest import run_script

from agent.config import Config
from agent.models import Agent
from agent.runs.checkpoint import checkpoint_state, load_agent, save_checkpoint


def test_export_keeps_weights_and_config_and_drops_training_state(tmp_path):
    config = Config()
    agent = Agent(config.env.obs_shape, 14, config.model)
    source = tmp_path / "train.pt"
    optimizer = torch.optim.Adam(agent.parameters())
    save_checkpoint(checkpoint_state(agent, config, optimizer=optimizer.state_dict(),
                                     counters={"update": 7, "frames": 100}), source)
    out = tmp_path / "agent.pt"
    result = run_script("export_agent.py", "--checkpoint", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    state = torch.load(out, weights_only=True)
    assert "optimizer" not in state and state["counters"] == {"update": 7, "frames": 100}
    loaded, loaded_config = load_agent(out)
    assert loaded_config.to_dict() == config.to_dict()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in agent.state_dict().items())


def test_export_of_a_missing_file_is_one_line_exit_2(tmp_path):
    result = run_script("export_agent.py", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "a.pt"))
    assert result.returncode == 2 and result.stderr.strip() == f"error: no checkpoint at {tmp_path / 'nope.pt'}"
