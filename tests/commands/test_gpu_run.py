import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_gpu_run_script_leaves_every_result_with_a_tiny_budget(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CONFIG": "configs/smoke.yaml", "TRAIN_SECONDS": "1",
           "BENCH_SECONDS": "1", "EVAL_EPISODES": "1", "RECON_STEPS": "2",
           "RECON_ARGS": "--frames 48 --collect-steps 80 --num-envs 4 --batch-size 4 --examples 1"}
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench["ratio"] == pytest.approx(bench["train_sps"] / bench["env_sps"])
    assert len(json.loads((out / "eval.json").read_text())["scores"]) == 1
    assert (out / "curve.png").stat().st_size > 0 and (out / "run" / "checkpoints" / "latest.pt").exists()
    assert "== done" in (out / "log.txt").read_text()
    recon = json.loads((out / "recon" / "report.json").read_text())
    assert recon["settings"]["steps"] == 2 and set(recon["variants"]) == {"plain", "weighted"}
