"""The one vector-env factory and the vector env the learner and the evaluator step.

`make_vector_env` passes every AtariVectorEnv option explicitly: its defaults (no sticky actions, an
84x84 resize, clipped rewards, NEXT_STEP autoreset, fire and no-op resets) differ from `ALE/...-v5` and
from the evaluation protocol, and a silently inherited default is how protocol bugs start.

The emulator returns native 210x160 grayscale stacks; `GameEnv` crops them to the play band (rows 96-159,
columns 8-151). Cropping keeps the 5x2 knife at full contrast; an 84x84 area resize of the whole screen
blends it into the background (about 4/255 left of its 11/255 contrast).

Autoreset runs in SameStep mode: the step that ends a game returns the first observation of the next
one, so every row of a rollout is a real transition and no reset rows need masking. `GameEnv` then
reseeds each new game itself from (seed, env, game index), which makes every game a pure function of
its seed and its actions: a checkpoint stores the actions of the games in progress and `restore`
replays them, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ale_py.vector_env import AtariVectorEnv

from agent.config import ConfigError, EnvConfig


def make_vector_env(cfg: EnvConfig) -> AtariVectorEnv:
    """The vector env of `cfg`, native resolution unless `cfg.resize` is set, every option explicit."""
    height, width = cfg.resize if cfg.resize is not None else (210, 160)
    try:
        return AtariVectorEnv(
            cfg.game,
            cfg.num_envs,
            batch_size=0,
            num_threads=cfg.num_threads,
            thread_affinity_offset=-1,
            max_num_frames_per_episode=cfg.max_episode_frames,
            repeat_action_probability=cfg.repeat_action_probability,
            full_action_space=False,
            continuous=False,
            autoreset_mode="SameStep",
            img_height=height,
            img_width=width,
            grayscale=True,
            stack_num=cfg.stack,
            frameskip=cfg.frameskip,
            maxpool=True,
            noop_max=cfg.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=False,
        )
    except (AssertionError, RuntimeError) as exc:
        raise ConfigError(f"env.game: cannot start {cfg.game!r}: {exc}") from None


def episode_seed(seed: int, env_index: int, game_index: int) -> int:
    """The emulator seed of one game: distinct per run seed, env slot and game, within int32."""
    return int(np.random.SeedSequence([seed, env_index, game_index]).generate_state(1)[0] % (2**31 - 1))


@dataclass
class Step:
    """What one vector step returns; arrays have one row per env."""

    obs: np.ndarray
    """uint8 (num_envs, stack, h, w); a buffer reused by the next step: copy what you keep."""
    reward: np.ndarray
    """float32 raw game reward."""
    done: np.ndarray
    """bool: a game ended (game over or the frame cap); obs already shows the next game."""
    life_lost: np.ndarray
    """bool: a life was lost and the game goes on."""
    finished_scores: list[float]
    """Full-game scores of the games that ended at this step."""
    finished_frames: list[int]
    """Their lengths in emulator frames."""


class GameEnv:
    """AtariVectorEnv plus cropping, per-game seeding, game-score bookkeeping and exact restore."""

    def __init__(self, cfg: EnvConfig, seed: int, pin_memory: bool = False, env_offset: int = 0):
        """`env_offset` numbers this env's slots from that index on, for the games' seeds: rank r of a
        data-parallel run passes r * num_envs and plays the games of those slots of one big run."""
        self.cfg = cfg
        self.seed = seed
        self.env_offset = env_offset
        self.num_envs = cfg.num_envs
        self.env = make_vector_env(cfg)
        self.num_actions = int(self.env.single_action_space.n)
        self.obs_shape = cfg.obs_shape
        shape = (self.num_envs, *self.obs_shape)
        if pin_memory:
            import torch

            self._obs = torch.empty(shape, dtype=torch.uint8).pin_memory().numpy()
        else:
            self._obs = np.empty(shape, dtype=np.uint8)
        self.games_started = np.zeros(self.num_envs, dtype=np.int64)
        self.game_score = np.zeros(self.num_envs, dtype=np.float64)
        self.game_frames = np.zeros(self.num_envs, dtype=np.int64)
        self.lives = np.zeros(self.num_envs, dtype=np.int64)
        self._actions: list[list[int]] = [[] for _ in range(self.num_envs)]
        self._sent: np.ndarray | None = None

    def _seeds(self, envs: np.ndarray) -> np.ndarray:
        return np.array([episode_seed(self.seed, self.env_offset + i, self.games_started[i]) for i in envs],
                        dtype=np.int64)

    def _crop(self, obs: np.ndarray) -> np.ndarray:
        if self.cfg.crop is None:
            np.copyto(self._obs, obs)
        else:
            top, bottom, left, right = self.cfg.crop
            np.copyto(self._obs, obs[:, :, top:bottom, left:right])
        return self._obs

    def _reset_envs(self, mask: np.ndarray) -> np.ndarray:
        """Starts a fresh, seeded game in the envs of `mask`; returns the full native batch."""
        envs = np.flatnonzero(mask)
        obs, info = self.env.reset(seed=self._seeds(envs), options={"reset_mask": mask})
        for i in envs:
            self._actions[i] = []
        self.game_score[envs] = 0.0
        self.game_frames[envs] = 0
        self.lives[envs] = info["lives"][envs]
        return obs

    def reset(self) -> np.ndarray:
        """Starts game 0 in every env (a full reset first: ALE needs one before partial resets)."""
        self.games_started[:] = 0
        obs, info = self.env.reset(seed=self._seeds(np.arange(self.num_envs)))
        for i in range(self.num_envs):
            self._actions[i] = []
        self.game_score[:] = 0.0
        self.game_frames[:] = 0
        self.lives[:] = info["lives"]
        return self._crop(obs)

    def step(self, actions: np.ndarray) -> Step:
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        """Starts a step of every env in the emulator's threads; `recv` waits for it. Until then the last
        Step's obs stays as it was, so work on it (the learner's detector) runs beside the emulator."""
        if self._sent is not None:
            raise RuntimeError("GameEnv.send: the previous step has not been received (call recv first)")
        actions = np.asarray(actions, dtype=np.int64)
        self.env.send(actions)
        self._sent = actions

    def recv(self) -> Step:
        """Waits for the step `send` started and returns it."""
        if self._sent is None:
            raise RuntimeError("GameEnv.recv: no step was sent (call send first)")
        actions, self._sent = self._sent, None
        obs, reward, terminated, truncated, info = self.env.recv()
        for i, a in enumerate(actions.tolist()):
            self._actions[i].append(a)
        reward = reward.astype(np.float32)
        done = np.logical_or(terminated, truncated)
        self.game_score += reward
        self.game_frames += self.cfg.frameskip
        lives = info["lives"].astype(np.int64)
        life_lost = (lives < self.lives) & ~done
        self.lives = lives
        finished_scores: list[float] = []
        finished_frames: list[int] = []
        if done.any():
            ended = np.flatnonzero(done)
            finished_scores = self.game_score[ended].tolist()
            finished_frames = self.game_frames[ended].tolist()
            self.games_started[ended] += 1
            # Replace ALE's own autoreset with a game seeded by us, so that it can be replayed.
            obs = self._reset_envs(done)
        return Step(self._crop(obs), reward, done, life_lost, finished_scores, finished_frames)

    def state_dict(self) -> dict:
        """Plain tensors and numbers: enough to rebuild the exact emulator state by replay."""
        import torch

        return {
            "seed": self.seed,
            "games_started": torch.from_numpy(self.games_started.copy()),
            "game_score": torch.from_numpy(self.game_score.copy()),
            "actions": [torch.tensor(a, dtype=torch.uint8) for a in self._actions],
        }

    def restore(self, state: dict) -> np.ndarray:
        """Replays the games in progress of `state`; returns the observation they had reached.

        Each env restarts its game from that game's seed and replays its actions. Envs with shorter
        histories join later (a partial reset just in time) so that all finish on the same step.
        """
        if len(state["actions"]) != self.num_envs:
            raise ValueError(f"checkpoint has {len(state['actions'])} envs, config has {self.num_envs}")
        self.seed = int(state["seed"])
        self.games_started[:] = state["games_started"].numpy()
        histories = [a.numpy().astype(np.int64) for a in state["actions"]]
        lengths = np.array([len(h) for h in histories])
        total = int(lengths.max()) if self.num_envs else 0
        start = total - lengths
        obs, info = self.env.reset(seed=self._seeds(np.arange(self.num_envs)))
        for t in range(total):
            joining = (start == t) & (t > 0)
            if joining.any():
                self.env.reset(seed=self._seeds(np.flatnonzero(joining)), options={"reset_mask": joining})
            actions = np.zeros(self.num_envs, dtype=np.int64)
            active = np.flatnonzero(start <= t)
            for i in active:
                actions[i] = histories[i][t - start[i]]
            obs, _, _, _, info = self.env.step(actions)
        fresh = lengths == 0
        if total > 0 and fresh.any():
            obs, info = self.env.reset(seed=self._seeds(np.flatnonzero(fresh)), options={"reset_mask": fresh})
        self._actions = [h.tolist() for h in histories]
        self.game_score[:] = state["game_score"].numpy()
        self.game_frames[:] = lengths * self.cfg.frameskip
        self.lives[:] = info["lives"]
        return self._crop(obs)

    def close(self) -> None:
        self.env.close()
