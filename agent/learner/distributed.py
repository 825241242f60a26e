"""Data-parallel training on torch.distributed: one process per rank, started by torchrun.

Synchronous data-parallel PPO (DD-PPO, Wijmans et al. 2020; CleanRL's ppo_atari_multigpu.py): every rank
steps its own `env.num_envs` emulators, whose games are seeded as envs `rank * num_envs + i` of one big
run, computes the gradient of its own rollout, and the gradients are averaged (all-reduce) before every
optimizer step. The model starts equal on every rank (rank 0's weights are broadcast), so it stays equal
after every update. The input normalizer's statistics and the locator's first prior are fitted on the
observations of all ranks. Rank 0 alone writes the run folder; the others send it their finished games
after each rollout and their emulator states and RNGs at each checkpoint, which holds them all.

`SingleProcess` is the same interface for the plain `python -m agent.commands.train` run: no process
group, nothing sent anywhere. Backends: NCCL when the run trains on CUDA (one rank per GPU,
`cuda:LOCAL_RANK`), gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from agent.device import resolve_device
from agent.models import Agent, Locator
from agent.perception.normalization import STATELESS, ObsNormalizer
from agent.runs.checkpoint import CheckpointError
from agent.runs.logger import RunLogger


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a torchrun job (torchrun sets these variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


class SingleProcess:
    """The ranks of a run that has just one: every operation is local."""

    rank = 0
    world_size = 1
    is_main = True

    def device(self, name: str) -> torch.device:
        return resolve_device(name)

    def synchronize_start(self, agent: Agent, seed: int) -> None:
        """Nothing to do: the one rank keeps its weights and the random stream `train.seed` started."""

    def game_over(self, logger: RunLogger | None) -> Callable[[float, int, int], None]:
        """The rollout's callback for a finished game: logged at once."""
        return logger.game_over

    def log_games(self, logger: RunLogger | None) -> None:
        """Nothing to collect: games were logged as they ended."""

    def gradient_averager(self, agent: Agent) -> Callable[[], None] | None:
        return None

    def update_normalizer(self, normalizer: ObsNormalizer, obs: torch.Tensor) -> None:
        normalizer.update(obs)

    def fit_locator_prior(self, locator: Locator, masks: torch.Tensor) -> None:
        locator.fit_prior(masks)

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def gather_state(self, state: dict[str, Any]) -> dict[str, Any]:
        return state

    def own_share(self, state: dict[str, Any]) -> dict[str, Any]:
        if "ranks" in state:
            raise CheckpointError(f"this checkpoint comes from a {len(state['ranks'])}-rank run: resume it under "
                                  f"torchrun --nproc-per-node {len(state['ranks'])} (evaluation and videos "
                                  f"take it as it is)")
        return state

    def close(self) -> None:
        """Nothing to tear down."""


Ranks = SingleProcess
"""The interface the trainer asks of a run's ranks (TorchDistributed is the other implementation)."""


class TorchDistributed(SingleProcess):
    """One rank of a torchrun job; `TorchDistributed()` joins the process group torchrun describes."""

    def __init__(self, device_name: str = "auto"):
        cuda = resolve_device(device_name).type == "cuda"
        self.local_rank = int(os.environ["LOCAL_RANK"])
        if cuda:
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self._cuda = cuda
        self._games: list[tuple[float, int, int]] = []

    def device(self, name: str) -> torch.device:
        return torch.device("cuda", self.local_rank) if self._cuda else torch.device("cpu")

    def synchronize_start(self, agent: Agent, seed: int) -> None:
        """Call right after the agent is built: rank 0's parameters and buffers are copied to every rank,
        and each rank's action sampling and minibatch shuffles follow a random stream of its own."""
        for tensor in [*agent.parameters(), *agent.buffers()]:
            dist.broadcast(tensor.data, src=0)
        torch.manual_seed(seed + 7919 * self.rank)
        if self._cuda:
            torch.cuda.manual_seed(seed + 7919 * self.rank)

    def game_over(self, logger: RunLogger | None) -> Callable[[float, int, int], None]:
        return lambda score, length, frames: self._games.append((score, length, frames))

    def log_games(self, logger: RunLogger | None) -> None:
        """Rank 0 logs the games every rank finished in the last rollout, rank by rank."""
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(self._games, gathered, dst=0)
        self._games = []
        if self.is_main and logger is not None:
            for games in gathered:
                for score, length, frames in games:
                    logger.game_over(score, length, frames)

    def gradient_averager(self, agent: Agent) -> Callable[[], None]:
        params = list(agent.parameters())

        def average() -> None:
            grads = [p.grad for p in params if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

        return average

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def update_normalizer(self, normalizer: ObsNormalizer, obs: torch.Tensor) -> None:
        """Every rank folds in the observations of all ranks, in rank order, so the statistics stay equal."""
        if normalizer.kind in STATELESS or (normalizer.kind != "running" and normalizer.fitted):
            return
        normalizer.update(self._all_gather(obs))

    def fit_locator_prior(self, locator: Locator, masks: torch.Tensor) -> None:
        locator.fit_prior(self._all_gather(masks.to(torch.uint8)).bool())

    def any(self, flag: bool) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], device=self.device("auto"))
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Rank 0's checkpoint, with every rank's emulator state and RNG under `ranks` (in rank order)."""
        own = {"env": state["env"], "rng": state["rng"]}
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(own, gathered, dst=0)
        return {**state, "ranks": gathered} if self.is_main else state

    def own_share(self, state: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint as this rank resumes it: its own emulator state and RNG."""
        shares = state.get("ranks")
        if shares is None or len(shares) != self.world_size:
            found = 1 if shares is None else len(shares)
            raise CheckpointError(f"this checkpoint comes from a {found}-rank run and cannot be resumed with "
                                  f"{self.world_size} ranks: resume it with --nproc-per-node {found}")
        return {**state, "env": shares[self.rank]["env"], "rng": shares[self.rank]["rng"]}

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
