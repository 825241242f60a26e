import dataclasses

from conftest import ROOT

from agent.commands.config_docs import config_markdown, field_docs, main
from agent.config import Config


def test_configuration_page_is_generated_from_the_dataclasses_and_up_to_date():
    assert (ROOT / "docs" / "configuration.md").read_text() == config_markdown(), \
        "docs/configuration.md is stale: run kungfu-config-docs"


def test_every_config_key_has_a_docstring_and_a_row():
    text = config_markdown()
    config = Config()
    for section in dataclasses.fields(config):
        obj = getattr(config, section.name)
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            assert docs.get(f.name), f"{section.name}.{f.name} has no docstring"
            assert f"| `{section.name}.{f.name}` |" in text


def test_check_mode_fails_on_a_stale_page(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    page.write_text("stale\n")
    assert main(["--out", str(page), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--out", str(page)]) == 0
    assert main(["--out", str(page), "--check"]) == 0
