import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_a_non_editable_install_trains_with_a_background_evaluation_from_another_folder(tmp_path):
    # `pip install .` copies the package: nothing may reach back into the checkout (scripts/, configs/).
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT / "agent", source / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tiny.yaml").write_text((ROOT / "configs" / "smoke.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import agent; print(agent.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site))
    proc = subprocess.run(
        [sys.executable, str(site / "bin" / "kungfu-train"), "--config", "tiny.yaml", "--run-dir", "run",
         "--set", "train.eval_every_updates=2", "--set", "train.eval_episodes=1", "--set", "train.eval_max_frames=200",
         "--no-progress"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((elsewhere / "run" / "eval" / "update_0000002.json").read_text())
    assert len(result["scores"]) == 1 and result["source"]["update"] == 2
