"""Data-parallel training on torch.distributed: one process per rank, started by torchrun.

Synchronous data-parallel PPO (DD-PPO, Wijmans et al. 2020; CleanRL's ppo_atari_multigpu.py): every rank
steps its own `env.num_envs` emulators, whose games are seeded as envs `rank * num_envs + i` of one big
run, computes the gradient of its own rollout, and the gradients are averaged (all-reduce) before every
optimizer step. The model starts equal on every rank (rank 0's weights are broadcast), so it stays equal
after every update. The input normalizer's statistics and the locator's first prior are fitted on the
observations of all ranks.

Rank 0 alone reads and writes the run folder: it settles the run (`decided_by_main`) and reads the
checkpoint a run resumes from, and sends them to the others, so that ranks on other machines need no
shared file system; the others send it their finished games after each rollout and their emulator
states and RNGs at each checkpoint, which holds them all under `ranks` (the top-level `env` and `rng` are
rank 0's). Every collective is called by every rank at the same point of the loop; a rank that dies
makes the others' next collective fail with a `LostRankError`.

`SingleProcess` is the same interface for the plain `python -m agent.commands.train` run: no process
group, nothing sent anywhere. Backends: gloo for CPU tensors and, on a machine with GPUs, NCCL for CUDA
tensors (one rank per GPU, `cuda:LOCAL_RANK`).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from agent.device import resolve_device
from agent.models import Agent, Locator
from agent.perception.normalization import STATELESS, ObsNormalizer
from agent.runs.checkpoint import CheckpointError
from agent.runs.logger import RunLogger

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a torchrun job (torchrun sets these variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


class LostRankError(RuntimeError):
    """A collective failed: another rank died or was stopped. The message is one line."""


class SingleProcess:
    """The ranks of a run that has just one: every operation is local."""

    rank = 0
    world_size = 1
    is_main = True

    def device(self, name: str) -> torch.device:
        return resolve_device(name)

    def decided_by_main(self, decide: Callable[[], T]) -> T:
        """Rank 0 calls `decide` (which may read the run folder) and every rank gets its result, or raises
        the exception it raised."""
        return decide()

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
        """The checkpoint as this rank resumes it; one from a run of several ranks is refused."""
        ranks = len(state.get("ranks", [None]))
        if ranks != self.world_size:
            how = ("without torchrun (or with one rank)" if ranks == 1
                   else f"under torchrun with {ranks} ranks in all (--nnodes x --nproc-per-node)")
            raise CheckpointError(f"this checkpoint comes from a run of {ranks} rank(s) and cannot be resumed with "
                                  f"{self.world_size}", f"resume it {how}; evaluation and videos take it as it is")
        return state

    def close(self) -> None:
        """Nothing to tear down."""


Ranks = SingleProcess
"""The interface the trainer asks of a run's ranks (TorchDistributed is the other implementation)."""


class TorchDistributed(SingleProcess):
    """One rank of a torchrun job; `TorchDistributed()` joins the process group torchrun describes.

    The group carries CPU tensors over gloo and, where CUDA and NCCL are present, CUDA tensors over NCCL,
    so the run's device (its config's `train.device`) can be settled after the group exists."""

    def __init__(self):
        self.local_rank = int(os.environ["LOCAL_RANK"])
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        nccl = gpus > 0 and dist.is_nccl_available()
        if nccl and self.local_rank < gpus:
            torch.cuda.set_device(self.local_rank)  # before NCCL's first use: else every rank takes cuda:0
        # torchrun keeps one store for all the restarts of a job, where a restarted rank can read the address
        # that a rank of the failed attempt left and wait on a dead port. On one machine torchrun's restart
        # count names the attempt alike for every rank, so each attempt gets keys of its own. (Across
        # machines a restart may be counted on one and not on another: there the store stays as it is.)
        store, rank, world_size = next(dist.rendezvous("env://"))
        if os.environ.get("GROUP_WORLD_SIZE", "1") == "1":
            store = dist.PrefixStore(f"kungfu/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("cpu:gloo,cuda:nccl" if nccl else "gloo", rank=rank, world_size=world_size,
                                store=store)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self._gpus = gpus if nccl else 0
        self._games: list[tuple[float, int, int]] = []

    def _call(self, collective: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs one collective; a failure (a rank that died, a broken connection) becomes a LostRankError."""
        try:
            return collective(*args, **kwargs)
        except (RuntimeError, dist.DistError) as exc:
            # gloo's "[.../pair.cc:553] Connection closed by peer [127.0.0.1]:23771. This is typically ..."
            first = (str(exc).strip().splitlines() or ["the collective failed without a message"])[0]
            first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]
            raise LostRankError(f"rank {self.rank} of {self.world_size} lost contact with the others ({first}): "
                                f"another rank failed or was killed (torchrun's report names it)") from None

    def device(self, name: str) -> torch.device:
        """`cuda:LOCAL_RANK` when `name` asks for CUDA, else the CPU; every rank raises the same ValueError
        when some machine has fewer GPUs than ranks."""
        cuda = resolve_device(name).type == "cuda"
        short = cuda and self.local_world_size > self._gpus
        if self.any(short):
            raise ValueError(f"train.device {name}: a machine of this job has fewer GPUs than ranks (this one "
                             f"{self._gpus} for {self.local_world_size}); one rank per GPU: lower --nproc-per-node "
                             f"or --set train.device=cpu")
        return torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")

    def decided_by_main(self, decide: Callable[[], T]) -> T:
        """Rank 0 calls `decide` and sends the others its result (pickled), or the exception it raised,
        which every rank then raises."""
        message: list[Any] = [None]
        error = None
        if self.is_main:
            try:
                message = [("result", decide())]
            except Exception as exc:  # every rank raises it, so that all stop at the same point
                error = exc
                try:
                    message = [("error", pickle.dumps(exc), str(exc))]
                except Exception:
                    message = [("error", None, str(exc))]
        self._call(dist.broadcast_object_list, message, src=0)
        if message[0][0] == "result":
            return message[0][1]
        if error is not None:
            raise error
        try:
            error = pickle.loads(message[0][1])
        except Exception:
            error = RuntimeError(message[0][2])
        raise error

    def synchronize_start(self, agent: Agent, seed: int) -> None:
        """Call right after the agent is built: rank 0's parameters and buffers are copied to every rank,
        and each rank's action sampling and minibatch shuffles follow a random stream of its own."""
        for tensor in [*agent.parameters(), *agent.buffers()]:
            self._call(dist.broadcast, tensor.data, src=0)
        torch.manual_seed(seed + 7919 * self.rank)
        if torch.cuda.is_available():
            torch.cuda.manual_seed(seed + 7919 * self.rank)

    def game_over(self, logger: RunLogger | None) -> Callable[[float, int, int], None]:
        return lambda score, length, frames: self._games.append((score, length, frames))

    def log_games(self, logger: RunLogger | None) -> None:
        """Rank 0 logs the games every rank finished in the last rollout, rank by rank."""
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        self._call(dist.gather_object, self._games, gathered, dst=0)
        self._games = []
        if self.is_main and logger is not None:
            for games in gathered:
                for score, length, frames in games:
                    logger.game_over(score, length, frames)

    def gradient_averager(self, agent: Agent) -> Callable[[], None]:
        """After a backward pass: every parameter's gradient becomes the mean over the ranks, in one
        all-reduce. A parameter that no rank's loss reached keeps no gradient (as in a single process);
        one that some ranks' losses missed counts as zero there."""
        params = list(agent.parameters())

        def average() -> None:
            present = [p.grad is not None for p in params]
            flat = torch.cat([*(p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(),
                                dtype=p.dtype, device=p.device) for p in params),
                              torch.tensor(present, dtype=params[0].dtype, device=params[0].device)])
            self._call(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
            grads, reached = flat[:-len(params)] / self.world_size, flat[-len(params):]
            offset = 0
            for p, n in zip(params, reached.tolist(), strict=True):
                part = grads[offset:offset + p.numel()].view(p.shape)
                offset += p.numel()
                if n == 0:
                    p.grad = None
                elif p.grad is None:
                    p.grad = part.clone()
                else:
                    p.grad.copy_(part)

        return average

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self._call(dist.all_gather, parts, tensor.contiguous())
        return torch.cat(parts)

    def update_normalizer(self, normalizer: ObsNormalizer, obs: torch.Tensor) -> None:
        """Every rank folds in the observations of all ranks, in rank order, so the statistics stay equal."""
        if not normalizer.training or normalizer.kind in STATELESS or (normalizer.kind != "running"
                                                                       and normalizer.fitted):
            return
        normalizer.update(self._all_gather(obs))

    def fit_locator_prior(self, locator: Locator, masks: torch.Tensor) -> None:
        locator.fit_prior(self._all_gather(masks.to(torch.uint8)).bool())

    def any(self, flag: bool) -> bool:
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        self._call(dist.all_reduce, value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Rank 0's checkpoint, with every rank's emulator state and RNG under `ranks` (in rank order) when
        there are several. Every rank calls it; only rank 0's result is whole."""
        own = {"env": state["env"], "rng": state["rng"]}
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        self._call(dist.gather_object, own, gathered, dst=0)
        return {**state, "ranks": gathered} if self.is_main and self.world_size > 1 else state

    def own_share(self, state: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint as this rank resumes it: its own emulator state and RNG."""
        state = super().own_share(state)
        if self.world_size == 1:
            return state
        share = state["ranks"][self.rank]
        return {**state, "env": share["env"], "rng": share["rng"]}

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
