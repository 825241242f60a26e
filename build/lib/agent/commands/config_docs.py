"""Write docs/configuration.md, the table of every config key, from the config dataclasses' docstrings.

  kungfu-config-docs [--out docs/configuration.md] [--check]

--check writes nothing and exits 1 when the file differs from what the dataclasses say (a test runs it).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path

from agent.commands.cli import OneLineParser
from agent.config import Config

DEFAULT_OUT = Path("docs") / "configuration.md"


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows it), by name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _default(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def config_markdown() -> str:
    """The text of docs/configuration.md."""
    config = Config()
    lines = [
        "# Configuration",
        "",
        "Every key of the run configuration, its default and what it does. A YAML file under `configs/` only",
        "overrides these defaults; `--set section.key=value` overrides on top of it (`--set ppo.lr=1e-4`), and",
        "an unknown key or a bad value is a one-line error naming the key. This page is generated from the",
        "dataclasses in `agent/config.py` by `kungfu-config-docs`; a test fails when it drifts.",
    ]
    for section in dataclasses.fields(config):
        obj = getattr(config, section.name)
        cls = type(obj)
        lines += ["", f"## `{section.name}`", ""]
        if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
            lines += [" ".join(cls.__doc__.split()), ""]
        lines += ["| key | default | meaning |", "| --- | --- | --- |"]
        docs = field_docs(cls)
        for f in dataclasses.fields(obj):
            doc = docs.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{section.name}.{f.name}` | `{_default(getattr(obj, f.name))}` | {doc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the file to write (default {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = config_markdown()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run kungfu-config-docs", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    if not args.out.parent.is_dir():
        parser.error(f"--out: no folder {args.out.parent}")
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
