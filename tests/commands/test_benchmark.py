import json

import pytest
from conftest import ROOT

from agent.commands import benchmark


@pytest.mark.slow
def test_nproc_trains_with_one_and_with_n_ranks_and_reports_the_speedup(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "env_rates", lambda config, seconds: (1000.0, 900.0))  # the env phases
    out = tmp_path / "bench.json"
    code = benchmark.main(["--config", str(ROOT / "configs" / "smoke.yaml"), "--seconds", "2", "--nproc", "2",
                           "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert {"train_sps", "env_sps", "ratio", "device", "num_envs"} <= set(result)
    scaled = result["scaling"]
    assert scaled["ranks"] == [1, 2]
    # 2 envs x 16 steps x 4 frames an update, per rank: the second run did train 2 ranks.
    assert scaled["frames_per_update"] == [128, 256]
    one, two = scaled["train_frames_per_s"]
    assert one > 0 and two > 0 and scaled["speedup"] == pytest.approx(two / one)
    assert scaled["efficiency"] == pytest.approx(scaled["speedup"] / 2)
