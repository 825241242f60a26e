"""The training loop: rollout, advantages, update, logging, checkpoint, in that order, in one function."""

from __future__ import annotations

import csv
import math
import random
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agent import recon_loss as recon
from agent.augment import augment
from agent.background import BackgroundJobs
from agent.capacity import agent_outputs, capacity_report, format_capacity
from agent.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_checkpoint,
    numbered_path,
    prune_checkpoints,
    save_checkpoint,
)
from agent.config import Config, ReconConfig, save_config
from agent.device import place, resolve_device
from agent.env import GameEnv
from agent.logger import RunLogger
from agent.models import Agent, recon_target
from agent.ppo import compute_gae, policy_loss, value_loss


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and its last checkpoint is left as it was."""


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


@contextmanager
def graceful_interrupt():
    """First Ctrl-C asks the loop to stop after the current update (and save); a second one aborts."""
    state = {"stop": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        state["stop"] = True
        print("\nstopping after this update and saving a checkpoint (Ctrl-C again to abort)", flush=True)
        signal.signal(signal.SIGINT, previous)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        pass
    try:
        yield state
    finally:
        try:
            signal.signal(signal.SIGINT, previous)
        except ValueError:
            pass


def _truncate_metrics(run_dir: Path, last_update: int) -> None:
    """Drops metrics rows written after the checkpoint a run resumes from."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_update]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def train(config: Config, run_dir: str | Path, resume: bool = False, max_updates: int | None = None,
          progress: bool = True) -> dict:
    """Trains (or, with `resume`, continues) the run in `run_dir`; returns a summary dict.

    `max_updates` stops after that many updates of this call (the run can be resumed later).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resumed = load_checkpoint(run_dir / "checkpoints" / "latest.pt") if resume else None
    save_config(config, run_dir / "config.yaml")
    cfg_env, cfg_ppo, cfg_train = config.env, config.ppo, config.train
    device = resolve_device(cfg_train.device)
    if cfg_train.torch_threads > 0:
        torch.set_num_threads(cfg_train.torch_threads)
    seed_everything(cfg_train.seed, cfg_train.deterministic)

    env = GameEnv(cfg_env, cfg_train.seed, pin_memory=device.type == "cuda")
    agent = place(Agent(cfg_env.obs_shape, env.num_actions, config.model), device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg_ppo.lr, eps=1e-5)
    start_update, frames, recent, games = 0, 0, [], 0
    if resumed is None:
        obs_np = env.reset()
    else:
        try:
            agent.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{run_dir} was trained with another architecture of the agent (older runs lack "
                                  f"the locator) and cannot be resumed: {first}") from None
        start_update = int(resumed["counters"]["update"])
        frames = int(resumed["counters"]["frames"])
        games = int(resumed["counters"]["games"])
        recent = resumed["counters"]["recent_scores"].tolist()
        torch.set_rng_state(resumed["rng"]["torch"])
        if device.type == "cuda" and "cuda" in resumed["rng"]:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], device)
        _truncate_metrics(run_dir, start_update)
        obs_np = env.restore(resumed["env"])
    logger = RunLogger(run_dir, recent, games)

    num_steps, num_envs = cfg_ppo.num_steps, cfg_env.num_envs
    obs_shape = cfg_env.obs_shape
    if start_update == 0:
        capacity = capacity_report(agent, config.num_updates * config.batch_size, int(np.prod(obs_shape)),
                                   agent_outputs(agent))
        print(format_capacity(capacity), flush=True)

    # Rollout storage lives on the device; observations stay uint8 until the model normalizes them.
    obs = torch.zeros((num_steps, num_envs, *obs_shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((num_steps, num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((num_steps, num_envs), device=device)
    rewards = torch.zeros((num_steps, num_envs), device=device)
    dones = torch.zeros((num_steps, num_envs), device=device)
    values = torch.zeros((num_steps, num_envs), device=device)
    masks_np: list[np.ndarray | None] = [None] * num_steps
    next_obs = torch.from_numpy(obs_np).to(device)
    next_frames = obs_np  # next_obs as the env returned it, read by the detector
    next_done = torch.zeros(num_envs, device=device)

    end_update = config.num_updates if max_updates is None else min(config.num_updates, start_update + max_updates)
    bar = tqdm(total=config.num_updates * config.frames_per_update, initial=frames, unit="frame",
               unit_scale=True, disable=not progress, dynamic_ncols=True)
    started = time.time()
    update = start_update
    out_of_time = False
    jobs = BackgroundJobs(run_dir, config)
    finished = False
    with graceful_interrupt() as interrupt:
        try:
            for update in range(start_update + 1, end_update + 1):
                update_start = time.time()
                if cfg_ppo.anneal_lr:
                    lr = cfg_ppo.lr * (1.0 - (update - 1.0) / config.num_updates)
                    optimizer.param_groups[0]["lr"] = lr

                # Rollout: the policy acts in every env at once; the emulator steps in C++ threads, and
                # meanwhile the detector finds the small objects of the frames the policy acted on.
                agent.eval()
                timer = {"policy": 0.0, "env": 0.0, "detect": 0.0}
                for step in range(num_steps):
                    tick = time.perf_counter()
                    obs[step] = next_obs
                    dones[step] = next_done
                    with torch.inference_mode():
                        action, logprob, _, value = agent.get_action_and_value(next_obs)
                    actions[step], logprobs[step], values[step] = action, logprob, value
                    action_np = action.cpu().numpy()
                    acted = time.perf_counter()
                    env.send(action_np)
                    sent = time.perf_counter()
                    masks_np[step] = recon.object_masks(next_frames[:, -1], config.recon)
                    detected = time.perf_counter()
                    result = env.recv()
                    timer["policy"] += acted - tick
                    timer["detect"] += detected - sent
                    timer["env"] += (sent - acted) + (time.perf_counter() - detected)
                    reward = np.sign(result.reward) if cfg_ppo.reward_clip else result.reward
                    rewards[step] = torch.from_numpy(reward).to(device)
                    done = result.done | result.life_lost if cfg_ppo.life_loss_done else result.done
                    next_done = torch.from_numpy(done.astype(np.float32)).to(device)
                    next_obs = torch.from_numpy(result.obs).to(device, non_blocking=True, copy=True)
                    next_frames = result.obs
                    frames += num_envs * cfg_env.frameskip
                    for score, length in zip(result.finished_scores, result.finished_frames, strict=True):
                        logger.game_over(score, length, frames)

                # Advantages.
                with torch.inference_mode():
                    next_value = agent.get_value(next_obs)
                advantages, returns = compute_gae(rewards, values, dones, next_value, next_done,
                                                  cfg_ppo.gamma, cfg_ppo.gae_lambda)

                # Update.
                tick = time.perf_counter()
                agent.train()
                if update == 1 and config.recon.locates:  # the locator's first guess: this rollout's shares
                    agent.locator.fit_prior(torch.from_numpy(np.stack(masks_np)).reshape(-1, *obs_shape[1:]))
                stats = _update(agent, optimizer, config, obs, actions, logprobs, values, advantages,
                                returns, masks_np, device)
                agent.normalizer.update(obs.reshape(-1, *obs_shape))
                timer["update"] = time.perf_counter() - tick

                # Logging.
                sps = config.frames_per_update / cfg_env.frameskip / max(time.time() - update_start, 1e-9)
                logger.update({
                    "update": update, "frames": frames, "charts/sps": sps,
                    "charts/lr": optimizer.param_groups[0]["lr"], **stats,
                    **{f"diagnostics/time_{key}_s": value for key, value in timer.items()},
                    "wall_seconds": time.time() - started,
                })
                bar.update(config.frames_per_update)
                bar.set_postfix(score=f"{logger.score_mean:.0f}", sps=f"{sps:.0f}", refresh=False)

                # Checkpoint.
                out_of_time = 0 < cfg_train.time_limit_s <= time.time() - started
                last = update == end_update or interrupt["stop"] or out_of_time
                if update % cfg_train.checkpoint_every_updates == 0 or last:
                    _save(run_dir, agent, optimizer, config, env, update, frames, logger, device)
                jobs.poll(logger)
                jobs.launch(agent, update, frames)
                if interrupt["stop"] or out_of_time:
                    break
            finished = not interrupt["stop"]
        finally:
            bar.close()
            jobs.close(logger, wait=finished)
            logger.close()
            env.close()
    return {"update": update, "frames": frames, "games": logger.games, "score_mean100": logger.score_mean,
            "interrupted": interrupt["stop"] or out_of_time, "wall_seconds": time.time() - started}


def _update(agent: Agent, optimizer: torch.optim.Optimizer, config: Config, obs, actions, logprobs, values,
            advantages, returns, masks_np, device) -> dict[str, float]:
    """PPO epochs over shuffled minibatches (A2C: one full-batch step); returns the logged scalars."""
    cfg = config.ppo
    obs_shape = config.env.obs_shape
    b_obs = obs.reshape(-1, *obs_shape)
    b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
    b_values, b_adv, b_returns = values.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
    b_masks = None
    if masks_np[0] is not None:
        b_masks = torch.from_numpy(np.stack(masks_np)).to(device).reshape(-1, *obs_shape[1:])
    clip = cfg.clip_coef if cfg.is_ppo else None
    epochs = cfg.update_epochs if cfg.is_ppo else 1
    totals: dict[str, float] = {}
    count = 0
    for _ in range(epochs):
        order = torch.randperm(config.batch_size, device=device)
        for start in range(0, config.batch_size, config.minibatch_size):
            idx = order[start:start + config.minibatch_size]
            mb_obs = b_obs[idx]
            code = agent.encode(mb_obs)
            rl_code = code.detach() if cfg.detach_encoder else code
            dist = torch.distributions.Categorical(logits=agent.actor(rl_code))
            new_logprob, entropy = dist.log_prob(b_actions[idx]), dist.entropy().mean()
            new_value = agent.critic(rl_code).squeeze(-1)
            mb_adv = b_adv[idx]
            if cfg.norm_adv and len(idx) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss, approx_kl, clip_fraction = policy_loss(new_logprob, b_logprobs[idx], mb_adv, clip)
            v_loss = value_loss(new_value, b_values[idx], b_returns[idx], clip if cfg.clip_vloss else None)
            mb_masks = b_masks[idx] if b_masks is not None else None
            l_loss = (recon.locate_loss(agent.locator, code, mb_masks) if config.recon.locates
                      else torch.zeros((), device=device))
            r_loss, pred, target, dec_masks = decoder_loss(agent, code, mb_obs, mb_masks, config.recon)
            loss = (pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss + config.recon.coef * r_loss
                    + config.recon.locate_coef * l_loss)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss (policy {pg_loss.item():.4g}, value {v_loss.item():.4g}, "
                    f"recon {r_loss.item():.4g}, locate {l_loss.item():.4g}); the last checkpoint is kept as it was"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for key, value in (("losses/policy", pg_loss), ("losses/value", v_loss),
                               ("losses/entropy", entropy), ("losses/recon", r_loss), ("losses/locate", l_loss),
                               ("losses/approx_kl", approx_kl), ("losses/clip_fraction", clip_fraction)):
                totals[key] = totals.get(key, 0.0) + value.item()
            count += 1
    stats = {key: value / count for key, value in totals.items()}
    for key, value in recon.recon_stats(pred.detach(), target, dec_masks, config.recon).items():
        stats[f"recon/{key}"] = value
    if config.recon.locates:
        stats["recon/located"] = recon.located_share(agent.locator, code.detach(), mb_masks)
    var_returns = b_returns.var()
    stats["diagnostics/explained_variance"] = (
        float(1 - (b_returns - b_values).var() / var_returns) if var_returns > 0 else math.nan
    )
    return stats


def decoder_loss(agent: Agent, code: torch.Tensor, obs: torch.Tensor, masks: torch.Tensor | None,
                 cfg: ReconConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The decoder's loss on the frames of a minibatch that `recon.decode_share` selects, given the
    minibatch's observations and their code; returns (loss, reconstructions, targets, masks) of those
    frames. With noise or shifts configured, the selected frames are perturbed and encoded once more for
    this loss (the policy and value read the clean code), and the target is the clean, shifted frame."""
    sel = recon.decode_selection(masks, len(obs), cfg)
    obs = obs[sel]
    masks = masks[sel] if masks is not None else None
    if cfg.augments:
        inputs, obs, masks = augment(obs, masks, cfg)
        code = agent.encode(inputs)
    else:
        code = code[sel]
    pred, target = agent.decoder(code), recon_target(obs)
    return recon.recon_loss(pred, target, masks, cfg), pred, target, masks


def _save(run_dir: Path, agent: Agent, optimizer, config: Config, env: GameEnv, update: int, frames: int,
          logger: RunLogger, device: torch.device) -> Path:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    state = checkpoint_state(
        agent, config,
        optimizer=optimizer.state_dict(),
        rng=rng,
        counters={"update": update, "frames": frames, "games": logger.games,
                  "recent_scores": torch.tensor(list(logger.recent_scores), dtype=torch.float64)},
        env=env.state_dict(),
    )
    latest = run_dir / "checkpoints" / "latest.pt"
    save_checkpoint(state, latest)
    if config.train.keep_checkpoints > 0:
        save_checkpoint(state, numbered_path(run_dir, update))
        prune_checkpoints(run_dir, config.train.keep_checkpoints)
    return latest
