"""Data-parallel training on 2 ranks on the CPU (gloo): in-process ranks (torch.multiprocessing.spawn, joined
as torchrun would join them) and the train command under torchrun itself.

The first ~70 agent steps of a KungFuMaster game show the same static screen in every env, so the runs
here take rollouts long enough for the ranks' frames to differ.
"""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT

from agent.config import ModelConfig, load_config
from agent.learner.distributed import SingleProcess, TorchDistributed
from agent.learner.trainer import train
from agent.models import Agent
from agent.runs.checkpoint import CheckpointError, load_checkpoint

WORLD = 2
SMOKE = ROOT / "configs" / "smoke.yaml"
# 4 updates of 2 ranks x 2 envs x 48 steps: the split after update 2 (step 96) falls where the frames move,
# and every game ends at step 100 (400 frames), so the resumed run reseeds games too.
RESUMABLE = ["ppo.num_steps=48", "env.max_episode_frames=400", "ppo.anneal_lr=false"]
FRAMES_PER_UPDATE = WORLD * 2 * 48 * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_two_ranks(fn, *args, ranks_class=TorchDistributed):
    """Runs fn(ranks, *args) in 2 processes that join one gloo process group from torchrun's variables."""
    mp.spawn(_join, args=(free_port(), ranks_class, fn, args), nprocs=WORLD)


def _join(rank, port, ranks_class, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    ranks = ranks_class()
    try:
        fn(ranks, *args)
    finally:
        ranks.close()


def torchrun_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 scripts/train.py ARGS --no-progress`; past `timeout`, torchrun
    is stopped (it stops its ranks, which run in sessions of their own) and the test fails."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
            str(ROOT / "scripts" / "train.py"), *args, "--no-progress"]
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"torchrun took over {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------
# In-process ranks


def _gradients_alone_and_averaged(ranks, out):
    torch.manual_seed(ranks.rank)  # different initial weights: synchronize_start must make them rank 0's
    agent = Agent((4, 16, 24), 14, ModelConfig(channels=[8, 8], kernels=[4, 3], strides=[2, 1]))
    ranks.synchronize_start(agent, seed=0)
    weights = {k: v.clone() for k, v in agent.state_dict().items()}
    obs = torch.randint(0, 256, (6, 4, 16, 24), dtype=torch.uint8)  # each rank's own random stream
    new = agent.evaluate_actions(obs, torch.randint(0, 14, (6,)))
    loss = -new.logprob.mean() + new.value.square().mean()
    if ranks.rank == 0:  # the decoder takes part on rank 0 only; the locator on neither
        loss = loss + agent.decoder(new.code).mean()
    loss.backward()
    alone = {name: None if p.grad is None else p.grad.clone() for name, p in agent.named_parameters()}
    ranks.gradient_averager(agent)()
    averaged = {name: None if p.grad is None else p.grad.clone() for name, p in agent.named_parameters()}
    torch.save({"weights": weights, "alone": alone, "averaged": averaged}, out / f"rank{ranks.rank}.pt")


def test_the_averaged_gradient_is_the_mean_of_each_ranks_own(tmp_path):
    on_two_ranks(_gradients_alone_and_averaged, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    for key, value in r0["weights"].items():
        assert torch.equal(value, r1["weights"][key]), key
    assert not torch.equal(r0["alone"]["encoder.trunk.0.weight"], r1["alone"]["encoder.trunk.0.weight"])
    assert r0["alone"]["decoder.linear.0.weight"] is not None and r1["alone"]["decoder.linear.0.weight"] is None
    for name, g0 in r0["alone"].items():
        g1 = r1["alone"][name]
        if g0 is None and g1 is None:  # no rank's loss reached it (the locator): it keeps no gradient
            assert name.startswith("locator.") and r0["averaged"][name] is None and r1["averaged"][name] is None
            continue
        zero = torch.zeros_like(g0 if g0 is not None else g1)
        want = ((g0 if g0 is not None else zero) + (g1 if g1 is not None else zero)) / 2
        assert torch.equal(r0["averaged"][name], want), name
        assert torch.equal(r1["averaged"][name], want), name


class RecordingRanks(TorchDistributed):
    """TorchDistributed that keeps, on each rank, the model after every update (`any` is the loop's
    first call after the update and the normalizer's), each minibatch's own gradient before it is
    averaged, and a checksum of each rollout's observations."""

    def __init__(self):
        super().__init__()
        self.agent, self.models, self.own_gradients, self.observations = None, [], [], []

    def gradient_averager(self, agent):
        self.agent, average = agent, super().gradient_averager(agent)

        def record_and_average():
            self.own_gradients.append(torch.cat([p.grad.reshape(-1) for p in agent.parameters()
                                                 if p.grad is not None]))
            average()

        return record_and_average

    def update_normalizer(self, normalizer, obs):
        self.observations.append(int(obs.sum(dtype=torch.int64)))
        super().update_normalizer(normalizer, obs)

    def any(self, flag):
        if self.agent is not None:
            self.models.append({k: v.clone() for k, v in self.agent.state_dict().items()})
        return super().any(flag)


def _train_and_record(ranks, config, run_dir, out):
    summary = train(config, run_dir, progress=False, ranks=ranks)
    torch.save({"models": ranks.models, "own_gradients": ranks.own_gradients, "observations": ranks.observations,
                "update": summary["update"]}, out / f"rank{ranks.rank}.pt")


@pytest.mark.slow
def test_every_rank_holds_the_same_model_after_every_update(tmp_path, smoke_config):
    # The running normalizer folds in the frames of every update, so both ranks' frames must reach it.
    config = smoke_config("ppo.num_steps=64", "model.normalization=running",
                          f"train.total_frames={3 * WORLD * 2 * 64 * 4}")
    on_two_ranks(_train_and_record, config, tmp_path / "run", tmp_path, ranks_class=RecordingRanks)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["update"] == r1["update"] == 3 and len(r0["models"]) == len(r1["models"]) == 3
    assert r0["observations"] != r1["observations"]  # the ranks played different games
    assert any(not torch.equal(a, b) for a, b in zip(r0["own_gradients"], r1["own_gradients"], strict=True))
    for update, (m0, m1) in enumerate(zip(r0["models"], r1["models"], strict=True), start=1):
        for key, value in m0.items():
            assert torch.equal(value, m1[key]), (update, key)
        assert m0["normalizer.count"] == update * WORLD * config.batch_size
    assert not torch.equal(r0["models"][0]["actor.2.weight"], r0["models"][-1]["actor.2.weight"])


def test_a_checkpoint_of_two_ranks_is_refused_by_one_in_one_line():
    with pytest.raises(CheckpointError, match="run of 2 rank") as info:
        SingleProcess().own_share({"ranks": [{}, {}], "env": {}, "rng": {}})
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------
# The train command under torchrun


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """A 2-rank torchrun run of 2 updates, then `--resume` for 2 more; the folder and both outputs."""
    run = tmp_path_factory.mktemp("torchrun") / "run"
    overrides = [arg for key in RESUMABLE for arg in ("--set", key)]
    first = torchrun_train("--config", str(SMOKE), "--run-dir", str(run), *overrides,
                           "--set", f"train.total_frames={2 * FRAMES_PER_UPDATE}")
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun_train("--resume", str(run), "--set", f"train.total_frames={4 * FRAMES_PER_UPDATE}")
    assert second.returncode == 0, second.stderr[-3000:]
    return run, first.stdout, second.stdout


@pytest.mark.slow
def test_torchrun_trains_resumes_and_leaves_a_run_evaluate_scores(split_run, tmp_path):
    run, first, second = split_run
    assert f"finished: update 2, {2 * FRAMES_PER_UPDATE:,} frames" in first
    assert f"finished: update 4, {4 * FRAMES_PER_UPDATE:,} frames" in second
    assert first.count("run folder:") == 1 and "(2 ranks)" in first  # rank 0 alone speaks
    assert load_config(run / "config.yaml").env.num_envs == 2  # per rank
    rows = metrics(run)
    assert [r["update"] for r in rows] == ["1", "2", "3", "4"]
    assert [int(r["frames"]) for r in rows] == [u * FRAMES_PER_UPDATE for u in (1, 2, 3, 4)]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert len(state["ranks"]) == WORLD
    assert state["counters"]["frames"] == 4 * FRAMES_PER_UPDATE
    # Every game that ended, on either rank, reached rank 0's log: one per env (at step 100).
    ended = [int(share["env"]["games_started"].sum()) for share in state["ranks"]]
    assert ended == [2, 2] and state["counters"]["games"] == int(rows[-1]["charts/games"]) == 4
    # Each rank samples its actions from a random stream of its own.
    assert state["ranks"][0]["env"]["actions"][0].tolist() != state["ranks"][1]["env"]["actions"][0].tolist()

    out = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, "-m", "agent.commands.evaluate", "--checkpoint",
                             str(run / "checkpoints" / "latest.pt"), "--episodes", "1", "--max-frames", "200",
                             "--json", str(out), "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    scored = json.loads(out.read_text())
    assert len(scored["scores"]) == 1 and scored["lengths"][0] <= 200


def _train_whole(ranks, config, run_dir):
    train(config, run_dir, progress=False, ranks=ranks)


@pytest.mark.slow
def test_a_resumed_two_rank_run_equals_an_uninterrupted_one(split_run, tmp_path, smoke_config):
    split, _, _ = split_run
    config = smoke_config(*RESUMABLE, f"train.total_frames={4 * FRAMES_PER_UPDATE}")
    on_two_ranks(_train_whole, config, tmp_path / "whole")
    whole, resumed = (load_checkpoint(run / "checkpoints" / "latest.pt") for run in (tmp_path / "whole", split))
    assert whole["counters"]["update"] == resumed["counters"]["update"] == 4
    assert whole["counters"]["games"] == resumed["counters"]["games"] == 4
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    steps = [(whole["optimizer"]["state"][i], resumed["optimizer"]["state"][i]) for i in whole["optimizer"]["state"]]
    for a, b in steps:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(a[key], b[key]), key
    for a, b in zip(whole["ranks"], resumed["ranks"], strict=True):  # the games in progress and the RNGs
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        assert [x.tolist() for x in a["env"]["actions"]] == [x.tolist() for x in b["env"]["actions"]]
    losses = ["losses/policy", "losses/value", "losses/entropy", "losses/recon", "losses/locate"]
    assert [[r[k] for k in losses] for r in metrics(tmp_path / "whole")] == \
        [[r[k] for k in losses] for r in metrics(split)]
