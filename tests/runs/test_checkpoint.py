import pytest
import torch

from agent.config import Config, config_from_dict
from agent.models import Agent
from agent.runs.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_agent,
    load_checkpoint,
    numbered_path,
    prune_checkpoints,
    save_checkpoint,
)


def fresh(config: Config | None = None) -> tuple[Agent, Config]:
    config = config or Config()
    return Agent(config.env.obs_shape, 14, config.model), config


def test_round_trip_restores_weights_normalizer_and_config(tmp_path):
    agent, config = fresh(config_from_dict({"model": {"normalization": "running"}}))
    agent.normalizer.update(torch.randint(0, 256, (8, 4, 64, 144), dtype=torch.uint8))
    path = tmp_path / "c.pt"
    save_checkpoint(checkpoint_state(agent, config, counters={"update": 3}), path)
    raw = torch.load(path, weights_only=True)  # plain tensors and numbers only
    assert raw["counters"]["update"] == 3
    loaded, loaded_config = load_agent(path)
    assert loaded_config.to_dict() == config.to_dict()
    for key, value in agent.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.normalizer.fitted and not loaded.training


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    agent, config = fresh()
    path = tmp_path / "ck" / "latest.pt"
    save_checkpoint(checkpoint_state(agent, config), path)
    save_checkpoint(checkpoint_state(agent, config), path)
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]


def test_damaged_foreign_and_mismatched_checkpoints_give_one_line_errors(tmp_path):
    agent, config = fresh()
    good = tmp_path / "good.pt"
    save_checkpoint(checkpoint_state(agent, config), good)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(good.read_bytes()[:1000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    other = checkpoint_state(agent, config)
    other["config"]["model"]["features_dim"] = 32  # weights no longer fit the config
    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint(other, mismatched)
    for path, message in [(damaged, "damaged or not a checkpoint"), (foreign, "not a checkpoint of this project"),
                          (mismatched, "do not fit"), (tmp_path / "missing.pt", "no checkpoint")]:
        with pytest.raises(CheckpointError, match=message) as info:
            load_agent(path)
        assert "\n" not in str(info.value)
    future = checkpoint_state(agent, config)
    future["version"] = 99
    save_checkpoint(future, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="checkpoint format 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_checkpoints_from_before_the_locator_load_for_acting(tmp_path):
    agent, config = fresh()
    old = checkpoint_state(agent, config)
    old["model"] = {k: v for k, v in old["model"].items() if not k.startswith("locator.")}
    save_checkpoint(old, tmp_path / "old.pt")
    loaded, _ = load_agent(tmp_path / "old.pt")
    assert torch.equal(loaded.actor[0].weight, agent.actor[0].weight)
    # Only the locator may be missing.
    old["model"] = {k: v for k, v in old["model"].items() if not k.startswith("critic.")}
    save_checkpoint(old, tmp_path / "older.pt")
    with pytest.raises(CheckpointError, match="do not fit.*critic"):
        load_agent(tmp_path / "older.pt")


def test_prune_keeps_the_newest_numbered_checkpoints(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for update in (1, 5, 12, 40):
        numbered_path(tmp_path, update).write_bytes(b"x")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "update_0000012.pt", "update_0000040.pt"]
