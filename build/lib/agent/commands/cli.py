"""What every script's command line shares: one-line errors with exit code 2, and checked numbers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `error: ...`, with exit code 2 (no usage dump)."""

    def __init__(self, description: str | None = None, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse `type` that parses `kind` (int or float) and accepts only values above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n' if kind is int else ''} "
                                             f"{kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{value} must be positive")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse
