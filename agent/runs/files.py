"""Files a run or a command writes: checked before any work starts, written whole or not at all."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class OutputPathError(ValueError):
    """An output path that cannot be written; the message is one line naming the option."""


def check_output_file(path: str | Path, option: str, suffix: str | None = None) -> Path:
    """`path` as a Path, after checking that a file can be written there: its folder exists (or is created,
    said in one line) and is writable, and the path is not a folder. Raises OutputPathError naming
    `option` otherwise."""
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise OutputPathError(f"{option}: {path} must end in {suffix}")
    if path.is_dir():
        raise OutputPathError(f"{option}: {path} is a folder; give a file name")
    check_output_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{option}: {path} exists and cannot be overwritten (no write permission)")
    return path


def check_output_dir(path: str | Path, option: str) -> Path:
    """`path` as a Path, after checking that files can be written into it: created when missing (said in one
    line), otherwise it must be a writable folder. Raises OutputPathError naming `option` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option}: {path} is a file, not a folder")
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"{option}: cannot create {path}: {parent} is not a writable folder")
        path.mkdir(parents=True, exist_ok=True)
        print(f"created folder {path}", flush=True)
    elif not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option}: cannot write into {path} (no write permission)")
    return path


def fsync_dir(path: str | Path) -> None:
    """Flushes a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(data: dict[str, Any], path: str | Path) -> None:
    """Writes JSON whole or not at all (`write_text_atomic`). NaN and infinities become null, which strict
    JSON readers accept."""
    write_text_atomic(json.dumps(finite(data), indent=2) + "\n", path)


def write_text_atomic(text: str, path: str | Path) -> None:
    """Writes `text` as it is (no newline translation) to a temp file in the same folder, flushes it to
    disk, then renames it over `path` and flushes the folder: a reader, or a crash, never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: the rename is atomic
    try:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float, however deeply nested, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
