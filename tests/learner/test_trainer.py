import csv
import math

import pytest
import torch

from agent.learner import recon as recon_loss
from agent.learner.trainer import train
from agent.learner.update import NonFiniteLossError
from agent.models import LOCATOR_PRIOR_FLOOR
from agent.runs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

FLOOR_LOGIT = math.log(LOCATOR_PRIOR_FLOOR / (1 - LOCATOR_PRIOR_FLOOR))


def latest(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt")


@pytest.mark.parametrize(("aux_steps", "aux_detach"), [(0, True), (2, True), (2, False)])
def test_resumed_training_equals_uninterrupted_training(tmp_path, smoke_config, aux_steps, aux_detach):
    # A 120-frame cap makes games end (and reseed) inside the run, so the replay is exercised too. Auxiliary
    # steps that train the encoder (aux_detach false, as in checkpoints from before it) draw augmentations.
    config = smoke_config("train.total_frames=512", "env.max_episode_frames=120", f"recon.aux_steps={aux_steps}",
                          "recon.aux_batch=8", f"recon.aux_detach={str(aux_detach).lower()}", "recon.aug_shift=2")
    train(config, tmp_path / "whole", progress=False)
    train(config, tmp_path / "split", max_updates=2, progress=False)
    assert latest(tmp_path / "split")["counters"]["update"] == 2
    train(config, tmp_path / "split", resume=True, progress=False)
    whole, split = latest(tmp_path / "whole"), latest(tmp_path / "split")
    assert whole["counters"]["update"] == split["counters"]["update"] == 4
    assert whole["counters"]["games"] == split["counters"]["games"] > 0
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key
    for name in ("optimizer", "aux_optimizer")[: 2 if aux_steps else 1]:
        for a, b in zip(whole[name]["state"].values(), split[name]["state"].values(), strict=True):
            assert torch.equal(a["exp_avg"], b["exp_avg"])
    with open(tmp_path / "split" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["update"] for row in rows] == ["1", "2", "3", "4"]
    assert all(float(row["losses/locate"]) > 0 for row in rows)


def test_a2c_and_detached_encoder_train(tmp_path, smoke_config):
    config = smoke_config("ppo.algo=a2c", "ppo.detach_encoder=true", "recon.coef=0", "recon.locate_coef=0")
    before = None
    summary = train(config, tmp_path / "a2c", progress=False)
    assert summary["update"] == 2
    state = latest(tmp_path / "a2c")
    # With the encoder detached and neither the decoder's nor the locator's loss, nothing trains the encoder.
    from agent.models import Agent

    torch.manual_seed(config.train.seed)
    before = Agent(config.env.obs_shape, 14, config.model).state_dict()
    assert torch.equal(before["encoder.code.1.weight"], state["model"]["encoder.code.1.weight"])
    assert (state["model"]["locator.linear.bias"] == FLOOR_LOGIT).all()  # not even fitted to the first rollout
    with open(tmp_path / "a2c" / "metrics.csv") as f:
        assert all(float(row["losses/locate"]) == 0 for row in csv.DictReader(f))
    # The actor does train. (Its bias, at least: the first frames of a game show an empty play band,
    # which row_contrast turns into an all-zero input, so the hidden layer's activations are zero there.)
    assert not torch.equal(before["actor.2.bias"], state["model"]["actor.2.bias"])


def test_without_the_decoders_and_the_locators_losses_nothing_is_detected_or_decoded(tmp_path, smoke_config,
                                                                                    monkeypatch):
    config = smoke_config("recon.coef=0", "recon.locate_coef=0")
    assert config.recon.loss == "weighted" and not config.recon.needs_masks
    assert smoke_config("recon.coef=0").recon.needs_masks  # the locator alone still reads the masks

    def refuse(*args, **kwargs):
        raise AssertionError("run with its coefficient at 0")

    monkeypatch.setattr(recon_loss, "decoder_loss", refuse)
    monkeypatch.setattr("agent.perception.weights.detect_boxes", refuse)
    train(config, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(row["recon/mse"] == "" and float(row["losses/recon"]) == 0 for row in rows)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, smoke_config, monkeypatch):
    config = smoke_config("train.total_frames=384")
    run = tmp_path / "nan"
    train(config, run, max_updates=1, progress=False)
    good = (run / "checkpoints" / "latest.pt").read_bytes()
    monkeypatch.setattr(recon_loss, "recon_loss", lambda *a: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="loss became non-finite"):
        train(config, run, resume=True, progress=False)
    assert (run / "checkpoints" / "latest.pt").read_bytes() == good


def test_a_run_from_before_the_locator_is_refused_in_one_line(tmp_path, smoke_config):
    config = smoke_config("train.total_frames=384")
    run = tmp_path / "old"
    train(config, run, max_updates=1, progress=False)
    state = latest(run)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("locator.")}
    save_checkpoint(state, run / "checkpoints" / "latest.pt")
    with pytest.raises(CheckpointError, match="cannot be resumed") as info:
        train(config, run, resume=True, progress=False)
    assert "\n" not in str(info.value)


def test_periodic_evaluation_and_video_run_in_the_background(tmp_path, smoke_config):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = smoke_config("train.eval_every_updates=2", "train.eval_episodes=2", "train.eval_max_frames=200",
                          "train.video_every_updates=2", "train.video_max_frames=80")
    run = tmp_path / "run"
    train(config, run, progress=False)
    result = json.loads((run / "eval" / "update_0000002.json").read_text())
    assert len(result["scores"]) == 2 and result["protocol"]["max_episode_frames"] == 200
    assert (run / "videos" / "update_0000002.mp4").stat().st_size > 0
    assert not list((run / "eval").glob("*.pt"))  # snapshots go once their jobs are done
    # The record names where its agent came from, not the snapshot file that is gone.
    assert result["source"] == {"run_dir": str(run), "update": 2, "frames": 256}
    assert result["checkpoint"].startswith(f"{run} at update 2 (256 frames")
    assert ".pt" not in json.dumps(result)
    assert latest(run)["counters"]["update"] == result["source"]["update"]
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/mean_score")] == [256]


def test_decoder_loss_reads_the_selected_frames_and_perturbs_only_its_own_input():
    from agent.config import ModelConfig, ReconConfig
    from agent.learner.recon import decoder_loss
    from agent.models import Agent, recon_target

    torch.manual_seed(0)
    agent = Agent((4, 16, 24), 14, ModelConfig(channels=[8, 8], kernels=[4, 3], strides=[2, 1]))
    obs = torch.randint(60, 110, (6, 4, 16, 24), dtype=torch.uint8)
    masks = torch.zeros(6, 16, 24, dtype=torch.bool)
    masks[4, 3:5, 6:11] = True
    code = agent.encode(obs)
    loss, pred, target, sel_masks = decoder_loss(agent, code, obs, masks, ReconConfig(decode_share=0.5))
    assert torch.equal(target, recon_target(obs[[4, 0, 1]]))  # the object frame first
    assert torch.equal(pred, agent.decoder(code[[4, 0, 1]])) and torch.equal(sel_masks, masks[[4, 0, 1]])
    assert loss.item() == pytest.approx(recon_loss.recon_loss(pred, target, sel_masks, ReconConfig()).item())
    # Noise reaches the encoder's input for this loss only; the target stays the clean frame.
    noisy = ReconConfig(aug_noise_std=40.0, decode_share=1.0)
    _, pred_noisy, target_noisy, _ = decoder_loss(agent, code, obs, masks, noisy)
    assert torch.equal(target_noisy, recon_target(obs))
    assert not torch.allclose(pred_noisy, agent.decoder(code))


def test_the_rollout_detects_each_stored_observation_while_the_emulator_steps(tmp_path, smoke_config, monkeypatch):
    # The detector reads the frames the policy acted on while the emulator computes the next step; each
    # row of the rollout must get the masks of its own observation, not of its neighbour's.
    import agent.learner.rollout as rollout
    import agent.learner.trainer as trainer

    detected, rollouts = [], []
    real_masks, real_update = rollout.object_masks, trainer.update_agent

    def object_masks(frames, cfg):
        detected.append(frames.copy())
        return real_masks(frames, cfg)

    def update(agent, optimizer, buffer, advantages, returns, config, average_gradients=None):
        rollouts.append((buffer.obs.clone(), list(buffer.masks)))
        return real_update(agent, optimizer, buffer, advantages, returns, config, average_gradients)

    monkeypatch.setattr(rollout, "object_masks", object_masks)
    monkeypatch.setattr(trainer, "update_agent", update)
    # Two rollouts of 64 steps: the play band stays empty for the first 70-odd steps of a game.
    config = smoke_config("ppo.num_steps=64", "train.total_frames=1024")
    train(config, tmp_path / "run", progress=False)
    newest = [frame for obs, _ in rollouts for frame in obs[:, :, -1].numpy()]
    assert len(detected) == len(newest) == 2 * config.ppo.num_steps
    assert sum(not (a == b).all() for a, b in zip(newest[:-1], newest[1:], strict=True)) > 20  # the frames do change
    for frames, want in zip(detected, newest, strict=True):
        assert (frames == want).all()
    for obs, masks in rollouts:
        for step_obs, step_masks in zip(obs, masks, strict=True):
            assert (step_masks == real_masks(step_obs[:, -1].numpy(), config.recon)).all()


def planted_buffer(config, n_steps=4, n_envs=8):
    """A rollout of wall frames, every other one with a knife, and its masks."""
    from agent.learner.rollout import RolloutBuffer

    obs = torch.full((n_steps, n_envs, *config.env.obs_shape), 85, dtype=torch.uint8)
    obs[..., 50:64, 60:68] = 200  # a fighter's legs
    obs[::2, :, :, 33:35, 30:35] = 74
    masks = [(obs[t, :, -1] == 74).numpy() for t in range(n_steps)]
    buffer = RolloutBuffer.allocate(config, obs[0].numpy(), torch.device("cpu"))
    buffer.obs, buffer.masks = obs, masks
    return buffer


def test_auxiliary_steps_train_the_decoder_on_object_frames_and_the_clone_term_holds_the_policy(smoke_config):
    from agent.learner.update import aux_update
    from agent.models import Agent

    kl = {}
    for clone in (0.0, 10.0):
        config = smoke_config("recon.aux_steps=12", "recon.aux_batch=8", f"recon.aux_clone_coef={clone}",
                              "recon.aux_detach=false", "ppo.num_steps=4", "env.num_envs=8")
        torch.manual_seed(0)
        agent = Agent(config.env.obs_shape, 14, config.model)
        with torch.no_grad():
            agent.actor[-1].weight.mul_(300)  # a decided policy, which the encoder's changes can move
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
        buffer = planted_buffer(config)
        frames = buffer.obs.flatten(0, 1)
        before = torch.log_softmax(agent.actor(agent.encode(frames)), -1).detach()
        first = aux_update(agent, optimizer, buffer, config)
        last = aux_update(agent, optimizer, buffer, config)
        assert last["losses/aux_recon"] < first["losses/aux_recon"]  # the decoder learns
        after = torch.log_softmax(agent.actor(agent.encode(frames)), -1).detach()
        kl[clone] = torch.nn.functional.kl_div(after, before, log_target=True, reduction="batchmean").item()
    assert kl[10.0] < 0.5 * kl[0.0]
    for off in (["recon.aux_steps=0"], ["recon.coef=0", "recon.locate_coef=0"]):  # nothing for them to train
        none = smoke_config(*off)
        assert aux_update(Agent(none.env.obs_shape, 14, none.model), optimizer, planted_buffer(none), none) == {}


def test_detached_auxiliary_steps_train_the_decoder_and_the_locator_and_leave_the_encoder_and_policy_as_they_were(
        smoke_config):
    from agent.learner.update import aux_update
    from agent.models import Agent

    config = smoke_config("recon.aux_steps=12", "recon.aux_batch=8", "recon.aux_detach=true", "recon.aug_shift=2",
                          "ppo.num_steps=4", "env.num_envs=8")
    torch.manual_seed(0)
    agent = Agent(config.env.obs_shape, 14, config.model)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    before = {name: p.detach().clone() for name, p in agent.named_parameters()}
    buffer = planted_buffer(config)
    first = aux_update(agent, optimizer, buffer, config)
    last = aux_update(agent, optimizer, buffer, config)
    assert last["losses/aux_recon"] < first["losses/aux_recon"]
    assert first["losses/aux_clone"] == last["losses/aux_clone"] == 0.0
    moved = {name.split(".")[0] for name, p in agent.named_parameters() if not torch.equal(p, before[name])}
    assert moved == {"decoder", "locator"}


def test_the_auxiliary_phase_steps_its_own_optimizer_and_leaves_ppos_alone(tmp_path, smoke_config):
    # Smoke: 2 updates of 1 epoch x 2 minibatches; 3 auxiliary steps each. Adam counts its steps per parameter.
    # Both learning rates anneal, each from its own start: at update 2 of 2 they are at half.
    config = smoke_config("recon.aux_steps=3", "recon.aux_batch=8", "recon.aux_lr=1e-3", "ppo.anneal_lr=true")
    assert config.num_updates == 2
    train(config, tmp_path / "aux", progress=False)
    state = latest(tmp_path / "aux")
    ppo_steps = {float(v["step"]) for v in state["optimizer"]["state"].values()}
    aux_steps = {float(v["step"]) for v in state["aux_optimizer"]["state"].values()}
    assert ppo_steps == {4.0} and aux_steps == {6.0}
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.ppo.lr / 2)
    assert state["aux_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 2)
    train(smoke_config("recon.aux_steps=0"), tmp_path / "plain", progress=False)
    assert "aux_optimizer" not in latest(tmp_path / "plain")


def test_the_locators_positive_weight_raises_the_loss_of_a_missed_object():
    from agent.learner.recon import locate_loss
    from agent.models import Locator

    locator = Locator(64, (64, 144), (8, 4))
    masks = torch.zeros(2, 64, 144, dtype=torch.bool)
    masks[0, 33:35, 30:35] = True
    code = torch.zeros(2, 64)
    plain, weighted = locate_loss(locator, code, masks), locate_loss(locator, code, masks, pos_weight=20.0)
    cells = locator.targets(masks)
    logits = locator(code)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, cells, reduction="none")
    expected = torch.where(cells > 0, 20.0 * expected, expected).mean()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6) and weighted > plain
