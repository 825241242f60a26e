import pytest

from agent.config import Config, ConfigError, config_from_dict, drop_retired, fill_added, load_config, save_config


def test_defaults_are_the_play_band_protocol():
    cfg = Config().validate()
    assert cfg.env.obs_shape == (4, 64, 144)
    assert cfg.env.repeat_action_probability == 0.25
    assert cfg.env.max_episode_frames == 108_000
    assert cfg.model.features_dim == 64


def test_overrides_reach_nested_keys_and_derived_values_follow():
    cfg = config_from_dict({"env": {"num_envs": 4}}, ["ppo.lr=1e-4", "ppo.num_steps=32", "env.crop=null",
                                                      "env.resize=[84, 84]"])
    assert cfg.ppo.lr == 1e-4
    assert cfg.batch_size == 128 and cfg.minibatch_size == 32
    assert cfg.env.obs_shape == (4, 84, 84)


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"ppo": {"lrr": 1}}, [], "ppo.lrr: unknown key"),
        ({}, ["ppo.lr=fast"], "ppo.lr: expected a number"),
        ({}, ["env.num_envs=2.5"], "env.num_envs: expected an integer"),
        ({}, ["ppo.anneal_lr=1"], "ppo.anneal_lr: expected true or false"),
        ({}, ["bogus.key=1"], "bogus: unknown key"),
        ({}, ["ppo.lr"], "must look like section.key=value"),
        ({}, ["env.resize=[84, 84]"], "env.resize: cannot be combined with env.crop"),
        ({}, ["env.crop=[0, 300, 0, 10]"], "env.crop"),
        ({}, ["ppo.num_minibatches=3"], "ppo.num_minibatches: must divide"),
        ({}, ["model.normalization=whiten"], "model.normalization: must be one of"),
        ({}, ["model.code_layout=dense"], "model.code_layout: unknown key"),
        ({}, ["env.game=pong"], "env.crop: .* is KungFuMaster's play band"),
        ({}, ["env.game=Kung Fu"], "env.game: 'Kung Fu' is not an ALE game name"),
        ({}, ["recon.decode_share=0"], r"recon.decode_share: must be in \(0, 1\]"),
        ({}, ["recon.loss=balanced"], "recon.loss: must be one of plain, weighted"),
        ({}, ["model.locator_cell=[8]"], "model.locator_cell: must be two positive integers"),
        ({}, ["model.locator_cell=[0, 4]"], "model.locator_cell: must be two positive integers"),
        ({}, ["recon.locate_coef=-0.1"], "recon.locate_coef: must be non-negative"),
        ({}, ["recon.bridge_cols=-1"], "recon.bridge_cols: must be non-negative"),
        ({}, ["recon.bridge_rows=-1"], "recon.bridge_rows: must be non-negative"),
        ({}, ["recon.bridge_weight=-1"], "recon.bridge_weight: must be non-negative"),
        ({}, ["recon.false_weight=-1"], "recon.false_weight: must be non-negative"),
        ({"env": 3}, [], "env: expected a mapping"),
    ],
)
def test_bad_config_names_the_key_in_one_line(data, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(data, overrides)
    assert "\n" not in str(info.value)


def test_yaml_round_trip(tmp_path):
    cfg = config_from_dict({}, ["ppo.algo=a2c", "train.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").to_dict() == cfg.to_dict()


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("ppo: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    for path in (Path(__file__).parents[1] / "configs").glob("*.yaml"):
        load_config(path)


def test_another_game_trains_with_a_view_of_its_own():
    config = config_from_dict(None, ["env.game=pong", "env.crop=null", "env.resize=[84, 84]"])
    assert config.env.obs_shape == (4, 84, 84)
    assert config_from_dict(None, ["env.game=pong", "env.crop=[34, 194, 0, 160]"]).env.obs_shape == (4, 160, 160)


def test_retired_keys_of_saved_configs_are_dropped_unless_they_changed_the_model():
    saved = Config().to_dict()
    saved["model"].update(code_layout="dense", column_units=4, refine_channels=0, refine_bf16=True)
    saved["recon"].update(empty_frame_weight=1.0, balance=0.25)
    assert config_from_dict(drop_retired(saved)) == Config()
    saved["model"]["code_layout"] = "columns"
    with pytest.raises(ConfigError, match="model.code_layout: 'columns' is an option this version no longer has"):
        drop_retired(saved)


def test_a_saved_config_from_before_the_decoders_error_was_an_option_keeps_the_squared_error():
    saved = Config().to_dict()
    del saved["recon"]["error"]
    assert config_from_dict(saved).recon.error == "smooth_l1"  # a config file: today's default
    assert config_from_dict(fill_added(saved)).recon.error == "squared"  # a checkpoint's: what it trained with
    assert config_from_dict(fill_added(Config().to_dict())) == Config()  # a key it has stays as it is


def test_a_saved_config_from_before_detached_auxiliary_steps_keeps_them_training_the_encoder():
    saved = config_from_dict({}, ["recon.aux_steps=8"]).to_dict()
    del saved["recon"]["aux_detach"], saved["recon"]["aux_lr"]
    assert config_from_dict(saved).recon.aux_detach  # a config file: today's default
    old = config_from_dict(fill_added(saved))  # a checkpoint's: what it trained with
    assert not old.recon.aux_detach and old.aux_lr == old.ppo.lr


def test_a_saved_config_from_before_the_false_objects_were_weighed_keeps_them_unweighed():
    saved = Config().to_dict()
    del saved["recon"]["false_weight"], saved["recon"]["false_apart"]
    assert config_from_dict(saved).recon.false_weight == 20 and config_from_dict(saved).recon.false_apart == 3
    old = config_from_dict(fill_added(saved)).recon  # a checkpoint's: what it trained with
    assert (old.false_weight, old.false_apart) == (0, 0)
    # One that weighed them all, from before false_apart, still weighs them all.
    saved = config_from_dict({}, ["recon.false_weight=100"]).to_dict()
    del saved["recon"]["false_apart"]
    assert config_from_dict(fill_added(saved)).recon.false_apart == 0
