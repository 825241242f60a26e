import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: float = 300):
    """Runs scripts/<name> in a subprocess from the repository root; returns the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def smoke_config():
    from agent.config import load_config

    return lambda *overrides: load_config(ROOT / "configs" / "smoke.yaml", list(overrides))
