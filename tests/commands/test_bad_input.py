"""Bad input, tried in bulk: configs (`--set` and YAML files), damaged checkpoints and output paths.

Every bad config is exactly one `error:` line with exit code 2 and leaves no run folder; a damaged
checkpoint is one error line (or, on resume, a fall-back to an intact one); an output path that cannot
be written is one line naming its option before any work starts, and a missing folder is created with a
one-line notice. The commands run in-process (their `main`) so that hundreds of inputs take seconds.
"""

import dataclasses
import json
import math
import os
import random
import shutil
import string
import types
import typing
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import agent.commands.ablation as ablation
import agent.commands.benchmark as benchmark
import agent.commands.diagnose_channels as diagnose_channels
import agent.commands.evaluate as evaluate
import agent.commands.export_agent as export_agent
import agent.commands.knife_report as knife_report
import agent.commands.plot as plot
import agent.commands.recon_report as recon_report
import agent.commands.record_video as record_video
import agent.commands.train as train_command
from agent.config import NORMALIZATIONS, RECON_LOSSES, Config, config_from_dict, load_config
from agent.env.game import GameEnv
from agent.env.scores import SCORES
from agent.env.single import SingleGame
from agent.learner.trainer import train
from agent.models import Agent
from agent.runs.checkpoint import CheckpointError, checkpoint_state, load_checkpoint, load_resumable, save_checkpoint

SMOKE = ROOT / "configs" / "smoke.yaml"
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def call(main, argv: list[str], capsys, quiet: bool = True) -> tuple[int, str, str]:
    """Runs a command's main in-process; returns (exit code, stdout, stderr). argparse errors exit. With
    `quiet`, a Python warning (which a user would read on stderr beside the error line) fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    assert not quiet or not caught, [str(w.message) for w in caught]
    return code, out, err


def one_error_line(err: str) -> str:
    """The message of stderr's one `error:` line; fails on anything else."""
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err[len("error: "):-1]


@pytest.fixture
def no_training(monkeypatch):
    """Training or an emulator that starts on bad input fails the test at once (instead of running)."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started on bad input")

    monkeypatch.setattr(train_command, "train", refuse)
    monkeypatch.setattr(GameEnv, "__init__", refuse)
    monkeypatch.setattr(SingleGame, "__init__", refuse)


# ---------------------------------------------------------------------------------------------------
# Bad configs: `--set` overrides and YAML files

SECTIONS = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}
KEYS = {f"{section}.{name}": hint for section, cls in SECTIONS.items()
        for name, hint in typing.get_type_hints(cls).items() if name in {f.name for f in dataclasses.fields(cls)}}
"""Every config key and its annotation: int, float, bool, str, list[int] or list[int] | None."""


def is_word(text: str) -> bool:
    """A string that YAML reads as a string and `--set` does not turn into a number (not yes, null, nan, ...)."""
    try:
        float(text)
        return False
    except ValueError:
        return isinstance(yaml.safe_load(text), str)


words = st.text(string.ascii_letters, min_size=1, max_size=8).filter(is_word)
non_integral = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).filter(
    lambda x: not x.is_integer())
mappings = st.dictionaries(words, st.integers(), min_size=1, max_size=2)


def wrong_type(annotation) -> st.SearchStrategy:
    """Values no field of this annotation accepts."""
    if annotation is int:
        return st.one_of(non_integral, st.booleans(), words, st.lists(st.integers(), max_size=3), mappings,
                         st.none())
    if annotation is float:
        return st.one_of(st.booleans(), words, st.lists(non_integral, max_size=3), mappings, st.none())
    if annotation is bool:
        return st.one_of(st.integers(), non_integral, words, st.lists(st.booleans(), max_size=3), mappings, st.none())
    if annotation is str:
        return st.one_of(st.integers(), non_integral, st.booleans(), st.lists(words, max_size=3), mappings, st.none())
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    bad_lists = st.one_of(st.integers(), non_integral, st.booleans(), words, mappings,
                          st.lists(words, min_size=1, max_size=4), st.lists(non_integral, min_size=1, max_size=4))
    return bad_lists if optional else st.one_of(bad_lists, st.none())


def unknown_word(*known: str) -> st.SearchStrategy:
    """Words that are none of `known` and start with none of them (cuda0 would be a device)."""
    return words.filter(lambda w: not w.startswith(known))


def below(low: int) -> st.SearchStrategy:
    return st.integers(min_value=-10**6, max_value=low - 1)


negative = st.one_of(st.floats(max_value=-1e-6, min_value=-1e6), st.just(math.nan))
outside_unit = st.one_of(st.floats(max_value=-1e-6, min_value=-1e6), st.floats(min_value=1.000001, max_value=1e6),
                         st.just(math.nan))
non_positive = st.one_of(st.floats(max_value=0.0, min_value=-1e6), st.just(math.nan))
OUT_OF_RANGE = {
    "env.num_envs": below(1), "env.num_threads": below(0), "env.repeat_action_probability": outside_unit,
    "env.frameskip": below(1), "env.stack": below(1), "env.max_episode_frames": below(1), "env.noop_max": below(0),
    "env.crop": st.sampled_from([[0, 64, 0], [100, 50, 0, 144], [0, 300, 0, 144]]),
    "env.resize": st.just([84, 84]),  # beside the default crop
    "model.features_dim": below(1), "model.head_hidden": below(0), "model.norm_clip": non_positive,
    "model.norm_contrast": non_positive, "model.normalization": unknown_word(*NORMALIZATIONS),
    "model.locator_cell": st.just([0, 4]),
    "ppo.algo": unknown_word("ppo", "a2c"), "ppo.num_steps": below(1), "ppo.lr": non_positive,
    "ppo.gamma": outside_unit, "ppo.gae_lambda": outside_unit, "ppo.num_minibatches": below(1),
    "ppo.update_epochs": below(1), "ppo.clip_coef": non_positive, "ppo.max_grad_norm": non_positive,
    "recon.coef": negative, "recon.loss": unknown_word(*RECON_LOSSES), "recon.object_weight": negative,
    "recon.mask_grow": below(0), "recon.bridge_cols": below(0), "recon.bridge_rows": below(0),
    "recon.bridge_weight": negative, "recon.sprite_weight": negative, "recon.aug_noise_std": negative,
    "recon.aug_shift": below(0),
    "recon.decode_share": st.one_of(non_positive, st.floats(min_value=1.000001, max_value=10.0)),
    "recon.locate_coef": negative, "recon.detect_min_contrast": st.one_of(below(1), st.integers(256, 10**6)),
    "recon.detect_max_width": below(1), "recon.detect_max_height": below(1), "recon.detect_min_area": below(1),
    "recon.detect_group_rows": below(0), "recon.detect_group_cols": below(0),
    "train.total_frames": below(1), "train.device": unknown_word("cpu", "auto", "cuda"),
    "train.checkpoint_every_updates": below(1), "train.keep_checkpoints": below(0), "train.torch_threads": below(0),
    "train.eval_every_updates": below(0), "train.eval_episodes": below(1), "train.eval_max_frames": below(1),
    "train.video_every_updates": below(0), "train.video_max_frames": below(1), "train.time_limit_s": negative,
}
"""Values of the right type outside each key's documented range (the docstrings in agent/config.py)."""

GOOD = {"ppo.lr": 1e-4, "env.num_envs": 2, "train.seed": 3, "recon.coef": 0.5, "model.normalization": "scale",
        "ppo.update_epochs": 2}
"""Overrides that are fine on their own, mixed in around the bad one."""


@st.composite
def bad_setting(draw) -> tuple[str, object, str]:
    """(dotted key, value, what the error must start with) of one bad key or value."""
    kind = draw(st.sampled_from(["type", "range", "unknown section", "unknown key", "too deep"]))
    if kind == "type":
        key = draw(st.sampled_from(sorted(KEYS)))
        return key, draw(wrong_type(KEYS[key])), key
    if kind == "range":
        key = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        return key, draw(OUT_OF_RANGE[key]), key
    if kind == "unknown section":
        section = draw(words.filter(lambda w: w not in SECTIONS))
        return f"{section}.{draw(words)}", draw(st.integers()), section
    section = draw(st.sampled_from(sorted(SECTIONS)))
    if kind == "unknown key":
        name = draw(words.filter(lambda w: f"{section}.{w}" not in KEYS))
        return f"{section}.{name}", draw(st.integers()), f"{section}.{name}: unknown key"
    key = draw(st.sampled_from(sorted(k for k in KEYS if k.startswith(section))))
    return f"{key}.{draw(words)}", 1, key


def as_override(key: str, value: object) -> str:
    text = json.dumps(value)  # JSON is YAML: `--set` reads the value back as exactly this
    assert yaml.safe_load(text) == value or value != value
    return f"{key}={text}"


@st.composite
def bad_overrides(draw) -> tuple[list[str], str]:
    """Good `--set` overrides with one bad one among them, and what the error must start with."""
    malformed = draw(st.sampled_from(["", "no equals", "unclosed"]))
    if malformed == "no equals":
        bad, expect = draw(st.sampled_from(sorted(KEYS))), "an override must look like section.key=value"
    elif malformed == "unclosed":
        key = draw(st.sampled_from(sorted(KEYS)))
        opening = draw(st.sampled_from(["[", "{", '"', "'"]))
        bad, expect = f"{key}={opening}{draw(words)}", f"{key}: cannot read value"
    else:
        key, value, expect = draw(bad_setting())
        bad = as_override(key, value)
    good = draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=3, unique=True))
    overrides = [f"{k}={json.dumps(GOOD[k])}" for k in good if not bad.startswith(f"{k}=")]
    overrides.insert(draw(st.integers(0, len(overrides))), bad)
    return overrides, expect


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@FUZZ
@given(case=bad_overrides())
def test_every_bad_set_override_is_one_error_line_exit_2_and_no_run_folder(case, scratch, no_training, capsys):
    overrides, expect = case
    run_dir = scratch / "run"
    argv = ["--config", SMOKE, "--run-dir", run_dir, *[a for o in overrides for a in ("--set", o)]]
    code, out, err = call(train_command.main, argv, capsys)
    assert code == 2
    message = one_error_line(err)
    assert expect in message if "override" in expect else message.startswith(expect), (overrides, message)
    assert out == "" and not run_dir.exists()


@st.composite
def bad_yaml(draw) -> tuple[str, str]:
    """The text of a YAML config file with one bad entry among good ones, and what the error starts with."""
    kind = draw(st.sampled_from(["entry", "entry", "entry", "not a mapping", "section not a mapping"]))
    if kind == "not a mapping":
        top = draw(st.one_of(st.lists(st.integers(), min_size=1, max_size=3), st.integers().filter(bool), words))
        return yaml.safe_dump(top), "config: the file must hold a mapping of sections"
    tree: dict = {}
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=3, unique=True)):
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = GOOD[key]
    if kind == "section not a mapping":
        section = draw(st.sampled_from(sorted(SECTIONS)))
        tree[section] = draw(st.one_of(st.integers(), words, st.lists(st.integers(), min_size=1, max_size=2)))
        return yaml.safe_dump(tree), f"{section}: expected a mapping of keys"
    key, value, expect = draw(bad_setting())
    *path, name = key.split(".")
    node = tree
    for part in path:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[name] = value  # for "section.key.more", a mapping where the key's value belongs
    return yaml.safe_dump(tree), expect


@FUZZ
@given(case=bad_yaml())
def test_every_bad_yaml_file_is_one_error_line_exit_2_and_no_run_folder(case, scratch, no_training, capsys):
    text, expect = case
    config = scratch / "bad.yaml"
    config.write_text(text)
    run_dir = scratch / "run"
    code, out, err = call(train_command.main, ["--config", config, "--run-dir", run_dir], capsys)
    assert code == 2
    assert one_error_line(err).startswith(expect), (text, err)
    assert out == "" and not run_dir.exists()


@pytest.mark.parametrize("overrides, expect", [
    (["env.game=pong"], "env.crop: [96, 160, 8, 152] is KungFuMaster's play band; for env.game pong choose"),
    (["env.game=space_invaders", "env.crop=[96, 160, 8, 152]"], "env.crop:"),
    (["env.game=no_such_game", "env.crop=null"], "env.game: ALE has no game 'no_such_game'"),
    (["model.kernels=[100, 4, 3]"], "model: the conv trunk shrinks a (4, 64, 144) observation to nothing"),
    (["env.crop=[0, 8, 0, 8]"], "model: the conv trunk shrinks a (4, 8, 8) observation to nothing"),
    (["train.device=cudafoo"], "train.device: 'cudafoo' is not a device name"),
], ids=["pong with the play band", "another game with the play band", "unknown game", "model too deep",
        "crop too small", "misspelled device"])
def test_configs_that_validate_but_cannot_run_are_refused_before_the_run_folder(overrides, expect, tmp_path,
                                                                                 no_training, capsys):
    run_dir = tmp_path / "run"
    argv = ["--config", SMOKE, "--run-dir", run_dir, *[a for o in overrides for a in ("--set", o)]]
    code, out, err = call(train_command.main, argv, capsys)
    assert code == 2 and one_error_line(err).startswith(expect), err
    assert out == "" and not run_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_before_the_run_folder(tmp_path, no_training, capsys):
    code, _, err = call(train_command.main, ["--config", SMOKE, "--run-dir", tmp_path / "run", "--set",
                                             "train.device=cuda"], capsys)
    assert code == 2 and one_error_line(err).startswith("train.device:")
    assert not (tmp_path / "run").exists()


# Config files and values that the properties above would find with a wider alphabet.


@pytest.mark.parametrize("text", [
    pytest.param("env: [1, 2\n", id="unclosed bracket"),
    pytest.param("env:\n\tnum_envs: 2\n", id="tab"),
    pytest.param("ppo:\n  lr: 1\n lr2: 2\n", id="indentation"),
])
def test_a_yaml_syntax_error_is_one_line(text, tmp_path, no_training, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    code, _, err = call(train_command.main, ["--config", path, "--run-dir", tmp_path / "run"], capsys)
    assert code == 2 and one_error_line(err).startswith(f"config: {path} is not valid YAML")


@pytest.mark.parametrize("content", [
    pytest.param(b"\xff\xfe\x00\x01", id="not UTF-8"),
    pytest.param(b"[]\n", id="empty list"),
    pytest.param(b"0\n", id="zero"),
    pytest.param(b"false\n", id="false"),
])
def test_a_file_that_is_not_a_mapping_of_sections_is_one_line(content, tmp_path, no_training, capsys):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    code, _, err = call(train_command.main, ["--config", path, "--run-dir", tmp_path / "run"], capsys)
    assert code == 2 and one_error_line(err).startswith("config:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, expect", [
    pytest.param("ppo.lr=\x07", "ppo.lr: cannot read value", id="control character"),
    pytest.param("=3", "=3: an override must look like section.key=value", id="no key"),
    pytest.param("ppo.ent_coef=nan", "ppo.ent_coef:", id="nan"),
    pytest.param("recon.object_weight=inf", "recon.object_weight:", id="inf"),
])
def test_an_unreadable_key_or_a_non_finite_number_is_one_line(override, expect, tmp_path, no_training, capsys):
    code, _, err = call(train_command.main, ["--config", SMOKE, "--run-dir", tmp_path / "run", "--set", override],
                        capsys)
    assert code == 2 and one_error_line(err).startswith(expect)


def test_a_number_in_scientific_notation_reads_the_same_in_a_file_as_in_set(tmp_path):
    (tmp_path / "lr.yaml").write_text("ppo:\n  lr: 1e-4\n")
    assert load_config(tmp_path / "lr.yaml").ppo.lr == load_config(SMOKE, ["ppo.lr=1e-4"]).ppo.lr == 1e-4


# ---------------------------------------------------------------------------------------------------
# Damaged checkpoints: evaluate, record_video and --resume

TINY = {"model": {"channels": [4], "kernels": [8], "strides": [8], "features_dim": 4, "head_hidden": 0}}


def tiny_checkpoint(path: Path, update: int = 3, data: dict | None = None, num_actions: int = 14) -> Path:
    config = config_from_dict({**TINY, **(data or {})})
    torch.manual_seed(update)
    agent = Agent(config.env.obs_shape, num_actions, config.model)
    save_checkpoint(checkpoint_state(agent, config, counters={"update": update, "frames": 1000 * update}), path)
    return path


@pytest.fixture(scope="module")
def tiny(scratch) -> Path:
    return tiny_checkpoint(scratch / "tiny.pt")


def raw_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):  # bit for bit (-0.0 is not 0.0), whatever the strides
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(raw_bytes(a), raw_bytes(b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


def holds(path: Path, original: dict) -> bool:
    """Whether the (damaged) file at `path` still holds `original` bit for bit, judged without this project's
    loader: a bit flipped in the zip container's padding, or in a storage's location tag, harms nothing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "pickle protocol 163" on some flips
            return same(torch.load(path, map_location="cpu", weights_only=True), original)
    except Exception:
        return False


@st.composite
def damage(draw, size: int) -> tuple[str, int, int]:
    """(how, where, what): a cut at a byte, a flipped bit or a run of random bytes."""
    how = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    return how, draw(st.integers(0, size - 1)), draw(st.integers(0, 2**31))


def damaged_copy(source: Path, target: Path, how: str, where: int, seed: int) -> Path:
    data = bytearray(source.read_bytes())
    if how == "truncate":
        data = data[:where]
    elif how == "flip":
        data[where] ^= 1 << (seed % 8)
    else:
        n = min(1 + seed % 4096, len(data) - where)
        data[where:where + n] = random.Random(seed).randbytes(n)
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("command", ["evaluate", "record_video"])
def test_damaged_checkpoints_are_one_error_line_and_exit_2(command, tiny, scratch, no_training, capsys):
    original = torch.load(tiny, weights_only=True)
    size = tiny.stat().st_size

    @FUZZ
    @given(hurt=damage(size))
    @example(hurt=("truncate", 37042, 0))  # torch raises OSError (EINVAL) for this cut, not a read error
    @example(hurt=("flip", 2892, 7))  # the flip renames a storage's location: harmless under map_location="cpu"
    @example(hurt=("flip", 2464, 0))  # a zero bias gets stride 0: the same values
    def check(hurt):
        path = damaged_copy(tiny, scratch / "damaged.pt", *hurt)
        assume(not holds(path, original))
        out = scratch / ("out.json" if command == "evaluate" else "out.mp4")
        argv = (["--checkpoint", path, "--episodes", 1, "--json", out] if command == "evaluate"
                else ["--checkpoint", path, "--out", out])
        code, _, err = call(evaluate.main if command == "evaluate" else record_video.main, argv, capsys)
        assert code == 2
        message = one_error_line(err)
        assert str(path) in message and "damaged" in message
        assert not out.exists()

    check()


@pytest.fixture(scope="module")
def tiny_run(scratch) -> Path:
    """A run folder of tiny checkpoints: latest.pt (update 3), update_0000002.pt and update_0000003.pt."""
    run = scratch / "tiny_run"
    (run / "checkpoints").mkdir(parents=True)
    tiny_checkpoint(run / "checkpoints" / "update_0000002.pt", update=2)
    tiny_checkpoint(run / "checkpoints" / "update_0000003.pt", update=3)
    shutil.copy(run / "checkpoints" / "update_0000003.pt", run / "checkpoints" / "latest.pt")
    return run


@settings(FUZZ, max_examples=40)
@given(hurts=st.lists(st.one_of(st.none(), damage(600_000)), min_size=3, max_size=3))
def test_resume_after_random_damage_takes_the_newest_intact_checkpoint_or_says_what_was_tried(
        hurts, tiny_run, scratch, capsys):
    run = scratch / "damaged_run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tiny_run, run)
    names = ["latest.pt", "update_0000003.pt", "update_0000002.pt"]  # the order resume tries them in
    intact = []
    for name, hurt in zip(names, hurts, strict=True):
        path = run / "checkpoints" / name
        if hurt is not None:
            damaged_copy(tiny_run / "checkpoints" / name, path, *hurt)
        if holds(path, torch.load(tiny_run / "checkpoints" / name, weights_only=True)):
            intact.append(path)
    capsys.readouterr()
    if intact:
        state, path = load_resumable(run)
        assert path == intact[0] and state["counters"]["update"] == (2 if path.name.endswith("2.pt") else 3)
        err = capsys.readouterr().err
        if path.name == "latest.pt":
            assert err == ""
        else:
            assert err.count("\n") == 1 and str(run / "checkpoints" / "latest.pt") in err
            assert err.endswith(f"resuming from {path} instead\n")
    else:
        with pytest.raises(CheckpointError) as info:
            load_resumable(run)
        message = str(info.value)
        assert "\n" not in message and "holds no intact checkpoint to resume; tried 3" in message
        assert all(str(run / "checkpoints" / name) in message for name in names)


@pytest.fixture(scope="module")
def smoke_run(scratch) -> Path:
    run = scratch / "smoke_run"
    train(load_config(SMOKE), run, progress=False)
    return run


@pytest.mark.slow  # about 15 s: each example resumes a real run
@settings(FUZZ, max_examples=5)
@given(hurts=st.lists(damage(8_000_000), min_size=3, max_size=3), spared=st.sampled_from([None, 0, 1, 2]))
def test_the_resume_command_after_random_damage_resumes_or_fails_in_one_line(hurts, spared, smoke_run, scratch,
                                                                             capsys):
    run = scratch / "damaged_smoke_run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(smoke_run, run)
    resumable = False
    for i, (name, hurt) in enumerate(zip(["latest.pt", "update_0000002.pt", "update_0000001.pt"], hurts, strict=True)):
        path = run / "checkpoints" / name
        if i != spared:  # None: all three damaged
            damaged_copy(smoke_run / "checkpoints" / name, path, *hurt)
        resumable = resumable or holds(path, torch.load(smoke_run / "checkpoints" / name, weights_only=True))
    code, out, err = call(train_command.main, ["--resume", run, "--set", "train.total_frames=384", "--no-progress"],
                          capsys)
    if resumable:
        assert code == 0, err
        assert "finished: update 3, 384 frames" in out
        assert load_checkpoint(run / "checkpoints" / "latest.pt")["counters"]["update"] == 3
    else:
        assert code == 2 and "holds no intact checkpoint to resume" in one_error_line(err)


# ---------------------------------------------------------------------------------------------------
# Output paths: checked before any work


class Reached(Exception):
    """Raised where a command's work begins."""


def reached(*args, **kwargs):
    raise Reached


COMMANDS = {
    # name: (main, argv with OUT for the output path, the option, the module attribute where work starts, suffix)
    "train": (train_command.main, ["--config", SMOKE, "--run-dir", "OUT", "--no-progress"], "--run-dir",
              (train_command, "train"), ""),
    "evaluate": (evaluate.main, ["--checkpoint", "TINY", "--episodes", 1, "--json", "OUT"], "--json",
                 (evaluate, "evaluate_checkpoint"), ".json"),
    "record_video": (record_video.main, ["--checkpoint", "TINY", "--out", "OUT"], "--out",
                     (record_video, "record_checkpoint_video"), ".mp4"),
    "plot": (plot.main, ["RUN", "--out", "OUT"], "--out", (plot, "plot_run_dirs"), ".png"),
    "ablation": (ablation.main, ["--variant", "VARIANT", "--out", "OUT"], "--out", (ablation, "summarize"), ".json"),
    "export_agent": (export_agent.main, ["--checkpoint", "TINY", "--out", "OUT"], "--out",
                     (export_agent, "load_checkpoint"), ".pt"),
    "benchmark": (benchmark.main, ["--config", SMOKE, "--seconds", 1, "--json", "OUT"], "--json",
                  (benchmark, "env_rates"), ".json"),
    "recon_report": (recon_report.main, ["--out", "OUT", "--steps", 1], "--out", (recon_report, "run_report"), ""),
    "diagnose_channels": (diagnose_channels.main, ["--out", "OUT", "--quick"], "--out",
                          (diagnose_channels, "run_report"), ""),
    "knife_report": (knife_report.main, ["--checkpoint", "TINY", "--out", "OUT"], "--out",
                     (knife_report, "knife_report"), ""),
}


def command_argv(name: str, out: Path, tiny: Path, run: Path) -> list:
    replace = {"OUT": out, "TINY": tiny, "RUN": run, "VARIANT": f"variant={run}"}
    return [replace.get(a, a) if isinstance(a, str) else a for a in COMMANDS[name][1]]


def out_name(name: str) -> str:
    return "out" + COMMANDS[name][4]


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("where", ["parent is a file", "grandparent is a file", "is a folder"])
def test_an_unwritable_output_path_is_one_line_naming_the_option_before_any_work(name, where, tiny, tmp_path,
                                                                                  monkeypatch, no_training, capsys):
    main, _, option, (module, work), suffix = COMMANDS[name]
    monkeypatch.setattr(module, work, reached)
    (tmp_path / "file").write_text("not a folder")
    if where == "is a folder":
        if not suffix:
            pytest.skip("this option names a folder")
        out = tmp_path / f"folder{suffix}"
        out.mkdir()
    else:
        out = tmp_path / "file" / ("sub/" if where == "grandparent is a file" else "") / out_name(name)
    before = sorted(tmp_path.rglob("*"))
    code, stdout, err = call(main, command_argv(name, out, tiny, tmp_path), capsys)
    assert code == 2
    message = one_error_line(err)
    assert message.startswith(f"{option}: ") and ("file" in message or "folder" in message), message
    assert stdout == "" and sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_read_only_folder_is_one_line_naming_the_option(name, tiny, tmp_path, monkeypatch, no_training, capsys):
    main, _, option, (module, work), _ = COMMANDS[name]
    monkeypatch.setattr(module, work, reached)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code, _, err = call(main, command_argv(name, locked / "sub" / out_name(name), tiny, tmp_path), capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and one_error_line(err).startswith(f"{option}: ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_missing_output_folder_is_created_with_a_one_line_notice_before_any_work(name, tiny, tmp_path,
                                                                                   monkeypatch, no_training, capsys):
    main, _, _, (module, work), _ = COMMANDS[name]
    if name != "export_agent":  # its work takes a moment and proves the file is written there
        monkeypatch.setattr(module, work, reached)
    folder = tmp_path / "new" / "deeper"
    out = folder / out_name(name) if COMMANDS[name][4] else folder
    try:
        code, stdout, _ = call(main, command_argv(name, out, tiny, tmp_path), capsys)
    except Reached:
        code, stdout = None, capsys.readouterr().out
    assert folder.is_dir()
    assert stdout.splitlines()[0] == f"created folder {folder}"
    assert stdout.count("created folder") == 1
    if name == "export_agent":
        assert code == 0 and load_checkpoint(out)["counters"]["update"] == 3


# ---------------------------------------------------------------------------------------------------
# Another game's own reference scores


@pytest.mark.emulator
def test_an_evaluation_of_another_game_records_that_games_random_and_human_scores(scratch, capsys):
    pong = {"env": {"game": "pong", "crop": None, "resize": [84, 84]}}
    path = tiny_checkpoint(scratch / "pong.pt", data=pong, num_actions=6)
    out = scratch / "pong.json"
    code, stdout, err = call(evaluate.main, ["--checkpoint", path, "--episodes", 1, "--num-envs", 1,
                                              "--max-frames", 200, "--device", "cpu", "--json", out,
                                              "--no-progress"], capsys, quiet=False)
    assert code == 0, err
    result = json.loads(out.read_text())
    random_score, human_score = SCORES["pong"]
    assert (random_score, human_score) == (-20.7, 14.6)
    assert result["protocol"]["game"] == "pong"
    assert (result["protocol"]["random_score"], result["protocol"]["human_score"]) == (-20.7, 14.6)
    assert result["human_normalized"] == pytest.approx((result["mean_score"] + 20.7) / (14.6 + 20.7))
    assert "(random -20.7, human 14.6)" in stdout
