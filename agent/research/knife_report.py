"""Does the agent's own code hold the knives? Measured on a checkpoint's own protocol play, with the
emulator's RAM as the truth of where each knife is (`agent.env.ram`).

1. Play. The checkpoint plays `games` protocol games on the single env (sticky actions 0.25, sampled
   actions, the full game up to `max_frames`). At every agent step the report keeps the newest frame, the
   decoder's reconstruction of it, the 64-unit code, the code of a random-init encoder of the same shape,
   and from the RAM the knife's, the player's and the enemies' boxes and the player's health (ram[75]: a
   knife hit takes 7 of its 39 points at once, a henchman's grip one a step).
2. Detection. The detector (`agent.perception.detection`, on the newest frame) finds the knife in
   the input when one of its boxes overlaps the RAM box grown by `MATCH_TOLERANCE` pixels; the same on the
   reconstruction. A box in a knife-free frame's reconstruction that matches none of the input's boxes is a
   false one. A reconstruction full of false boxes also "finds" knives that are not there: the chance
   level (`recon_recall_chance`) is the share of the knives' boxes, laid on the knife-free frames'
   reconstructions, that a box of those overlaps as it would a knife's. Both recalls are also given for
   the knives within `NEAR_FIGHTER_PX` of a fighter's RAM box (the player it is about to hit, the thrower
   it has just left: `..._near_fighter`) and, for the decoder, the knives farther off (`recon_recall_apart`);
   the false boxes are split the same way (`recon_false_near_fighter_per_empty`, `..._apart_per_empty`),
   and those that cover a sprite pixel of the input (a piece of a fighter drawn loose, not a knife drawn
   on the wall) are counted apart (`recon_false_on_sprite_per_empty`).
3. Probes. Linear probes (logistic regression on the standardized code, classes weighted equally) are
   fitted on the first games and scored on the held-out rest, by balanced accuracy: is a knife on screen
   (`present`), is it the high or the low throw (`row`: the player ducks the first, jumps the second),
   and in which 16-pixel column of the play band is it (`column`). The same probes on the random-init
   encoder give the floor that comes from the input alone.
4. What the knives do. A knife hit is a step where the player's health drops by 5 or more while a knife
   was on screen the step before; a life lost right after a knife hit (no other loss of health between)
   is a death by knife (`knife_hits_per_game`). Deaths are also told apart by what took the last health
   (knife, enemy) or, with health left, the timer.
5. What trains the code: each loss term's gradient norm at the encoder, on a minibatch of the agent's
   own rollout (`agent.research.gradients`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from agent.config import GAME, Config
from agent.env import ram as ram_map
from agent.env.protocol import protocol_env_config
from agent.env.single import SingleGame
from agent.models import Agent
from agent.perception.detection import detect_boxes
from agent.perception.matching import MATCH_TOLERANCE, match_objects
from agent.perception.weights import sprite_pixels
from agent.research.gradients import encoder_gradient_norms

HIGH_LOW_ROW = 140
"""Native screen row between the high throw (y about 129) and the low one (about 152)."""
COLUMN_PX = 16
"""Width of a column bin of the `column` probe, px."""
NEAR_FIGHTER_PX = 3
"""A knife this many pixels or fewer from a fighter's box counts as beside him."""
KNIFE_DAMAGE = 5
"""A health drop of at least this much in one step is a knife's (a knife takes 7, a grip 1)."""


class ReportError(ValueError):
    """A checkpoint or a setting the report cannot use; the message is one line."""


@dataclass
class Play:
    """Everything the report keeps of the games played, one row per agent step."""

    frames: list[np.ndarray] = field(default_factory=list)
    """The observation stacks, uint8 (stack, h, w)."""
    recon: list[np.ndarray] = field(default_factory=list)
    """The decoder's pictures of the newest frames, uint8 (h, w)."""
    code: list[np.ndarray] = field(default_factory=list)
    random_code: list[np.ndarray] = field(default_factory=list)
    game: list[int] = field(default_factory=list)
    knife: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    """The RAM knife box in the observation's pixels (None when no knife, or not inside the view)."""
    player: list[tuple[int, int, int, int]] = field(default_factory=list)
    """The player's box in the observation's pixels."""
    enemies: list[list[tuple[int, int, int, int]]] = field(default_factory=list)
    """The fighters' boxes (player excluded) in the observation's pixels."""
    health: list[int] = field(default_factory=list)
    lives: list[int] = field(default_factory=list)
    pose: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    """Final score of each game."""

    def __len__(self) -> int:
        return len(self.game)


def check_config(config: Config) -> None:
    """The RAM map and the crop are KungFuMaster's: refuse anything else in one line."""
    if config.env.game != GAME:
        raise ReportError(f"the knife report reads KungFuMaster's RAM; this checkpoint plays {config.env.game}")
    if config.env.crop is None:
        raise ReportError("the knife report needs the observation in native pixels (env.crop), not a resize")


def _view_box(box: tuple[int, int, int, int], crop: list[int]) -> tuple[int, int, int, int] | None:
    """A native-screen box in the crop's pixels; None unless it lies wholly inside the crop."""
    top, bottom, left, right = crop
    x, y, w, h = box
    if x < left or y < top or x + w > right or y + h > bottom:
        return None
    return x - left, y - top, w, h


@torch.no_grad()
def play(agent: Agent, config: Config, games: int, seed: int, max_frames: int, progress: bool = False) -> Play:
    """Plays `games` protocol games with `agent` (sampled actions) and records them (see `Play`)."""
    cfg = protocol_env_config(config.env, num_envs=1, max_frames=max_frames)
    torch.manual_seed(seed)
    random_agent = Agent(cfg.obs_shape, agent.num_actions, config.model).eval()
    generator = torch.Generator().manual_seed(seed)
    out = Play()
    game = SingleGame(cfg, seed, max_frames)
    bar = tqdm(total=games * max_frames, unit="frame", desc="playing", disable=not progress, leave=False)
    try:
        for g in range(games):
            obs = game.reset(g)
            while True:
                x = torch.from_numpy(obs[None])
                code = agent.encode(x)
                probs = torch.softmax(agent.actor(code), dim=-1)
                action = int(torch.multinomial(probs, 1, generator=generator))
                ram = game.ram
                knife = ram_map.knife_box(ram)
                player = ram_map.player_box(ram)
                out.frames.append(obs.copy())
                out.recon.append((agent.decoder(code)[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy())
                out.code.append(code[0].numpy())
                out.random_code.append(random_agent.encode(x)[0].numpy())
                out.game.append(g)
                out.knife.append(_view_box(knife, cfg.crop) if knife is not None else None)
                out.player.append((player[0] - cfg.crop[2], player[1] - cfg.crop[0], player[2], player[3]))
                out.enemies.append([(b[0] - cfg.crop[2], b[1] - cfg.crop[0], b[2], b[3])
                                    for _, b in ram_map.enemy_boxes(ram)])
                out.health.append(int(ram[75]))
                out.lives.append(game.lives)
                out.pose.append(int(ram[93]))
                if game.done:
                    break
                before = game.frames
                obs, _, _ = game.step(action)
                bar.update(game.frames - before)
            out.scores.append(game.score)
    finally:
        bar.close()
        game.close()
    return out


# ---------------------------------------------------------------------------------------------------
# Detection in the input and in the reconstruction


def detection_scores(data: Play, config: Config) -> dict[str, Any]:
    """Recall of the RAM knives in the input and in the reconstruction, and the reconstruction's false
    boxes per knife-free frame; the reconstruction's figures are None when the decoder's loss is off
    (`recon.coef` 0: the decoder never trained)."""
    stacks = np.stack(data.frames)
    recon = np.stack(data.recon)
    knife_rows = [i for i, k in enumerate(data.knife) if k is not None]
    truth = np.array([(j, *data.knife[i]) for j, i in enumerate(knife_rows)], dtype=np.int64).reshape(-1, 5)
    input_boxes = detect_boxes(stacks[:, -1], config.recon)
    recon_boxes = detect_boxes(recon, config.recon)
    renumber = {i: j for j, i in enumerate(knife_rows)}

    def on_knife_rows(boxes: np.ndarray) -> np.ndarray:
        keep = np.isin(boxes[:, 0], knife_rows)
        picked = boxes[keep].copy()
        picked[:, 0] = [renumber[i] for i in picked[:, 0]]
        return picked

    found_in = match_objects(truth, on_knife_rows(input_boxes)) if len(truth) else np.zeros(0, bool)
    found_re = match_objects(truth, on_knife_rows(recon_boxes)) if len(truth) else np.zeros(0, bool)
    empty = [i for i, k in enumerate(data.knife) if k is None]
    decodes = config.recon.decodes
    false = false_near = false_on_sprite = 0
    for i in empty:
        mine = recon_boxes[recon_boxes[:, 0] == i]
        if len(mine):
            theirs = input_boxes[input_boxes[:, 0] == i]
            unmatched = (mine[~match_objects(mine, theirs)] if len(theirs) else mine).tolist()
            if unmatched:
                false += len(unmatched)
                false_near += sum(_near_fighter((x, y, w, h), data, i) for _, x, y, w, h in unmatched)
                sprite = sprite_pixels(torch.from_numpy(stacks[i:i + 1, -1:]).float() / 255, config.recon)[0]
                false_on_sprite += sum(bool(sprite[y:y + h, x:x + w].any()) for _, x, y, w, h in unmatched)
    chance = None
    if decodes and empty and knife_rows:
        # The knives' boxes laid in turn on the knife-free frames: what the decoder's recall would be by chance.
        laid = np.array([(i, *data.knife[knife_rows[j % len(knife_rows)]]) for j, i in enumerate(empty)])
        chance = _share(match_objects(laid, recon_boxes))
    near = np.array([_near_fighter(data.knife[i], data, i) for i in knife_rows], dtype=bool)
    return {
        "knife_frames": len(knife_rows),
        "input_recall": _share(found_in),
        "input_recall_near_fighter": _share(found_in[near]) if near.any() else None,
        "knives_near_fighter": int(near.sum()),
        "recon_recall": _share(found_re[found_in]) if found_in.any() and decodes else None,
        "recon_recall_all": _share(found_re) if decodes else None,
        "recon_recall_near_fighter": _share(found_re[found_in & near]) if decodes else None,
        "recon_recall_apart": _share(found_re[found_in & ~near]) if decodes else None,
        "recon_false_per_empty": false / len(empty) if empty and decodes else None,
        "recon_false_near_fighter_per_empty": false_near / len(empty) if empty and decodes else None,
        "recon_false_apart_per_empty": (false - false_near) / len(empty) if empty and decodes else None,
        "recon_false_on_sprite_per_empty": false_on_sprite / len(empty) if empty and decodes else None,
        "recon_recall_chance": chance,
        "knife_free_frames": len(empty),
        "input_false_per_empty": (sum(int((input_boxes[:, 0] == i).sum()) for i in empty) / len(empty)
                                  if empty else None),
        "found_in_input": found_in.tolist(),
        "found_in_recon": found_re.tolist(),
    }


def _near_fighter(box: tuple[int, int, int, int], data: Play, i: int) -> bool:
    """Whether a box of frame i lies within `NEAR_FIGHTER_PX` of the player's or a fighter's RAM box."""
    return min(ram_map.distance(box, b) for b in [data.player[i], *data.enemies[i]]) <= NEAR_FIGHTER_PX


def _share(flags: np.ndarray) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


# ---------------------------------------------------------------------------------------------------
# Linear probes


def balanced_accuracy(truth: np.ndarray, guess: np.ndarray) -> float:
    """Mean over the classes present in `truth` of the share of each class guessed right."""
    classes = np.unique(truth)
    return float(np.mean([np.mean(guess[truth == c] == c) for c in classes]))


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 200, l2: float = 1e-3) -> torch.nn.Linear:
    """A multinomial logistic regression on standardized `x` (N, d), every class weighted equally,
    fitted by L-BFGS; returns the layer (it reads standardized inputs, see `probe_accuracy`)."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    counts = torch.bincount(yt, minlength=classes).float()
    weights = torch.where(counts > 0, len(yt) / (classes * counts.clamp(min=1)), torch.zeros(()))
    layer = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(xt), yt, weight=weights) + l2 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   classes: int) -> float | None:
    """Balanced accuracy on the test rows of a probe fitted on the training rows; None when either side
    has fewer than two classes."""
    if len(np.unique(y_train)) < 2 or len(np.unique(y_test)) < 2:
        return None
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    layer = fit_probe((x_train - mean) / std, y_train, classes)
    with torch.no_grad():
        guess = layer(torch.from_numpy((x_test - mean) / std).float()).argmax(1).numpy()
    return balanced_accuracy(y_test, guess)


def probes(data: Play, config: Config, held_out: int) -> dict[str, dict[str, float | None]]:
    """The three probes on the agent's code and on the random-init encoder's, fitted on the games before
    the last `held_out` and scored on those."""
    games = np.array(data.game)
    test = games >= games.max() - held_out + 1
    top = config.env.crop[0]
    present = np.array([k is not None for k in data.knife], dtype=np.int64)
    row = np.array([int(k[1] + top >= HIGH_LOW_ROW) if k is not None else -1 for k in data.knife])
    column = np.array([(k[0] + k[2] // 2) // COLUMN_PX if k is not None else -1 for k in data.knife])
    columns = math.ceil((config.env.crop[3] - config.env.crop[2]) / COLUMN_PX)
    out: dict[str, dict[str, float | None]] = {"present": {}, "row": {}, "column": {}}
    for name, codes in (("agent", np.stack(data.code)), ("random_init", np.stack(data.random_code))):
        out["present"][name] = probe_accuracy(codes[~test], present[~test], codes[test], present[test], 2)
        has = present == 1
        for key, labels, classes in (("row", row, 2), ("column", column, columns)):
            tr, te = has & ~test, has & test
            out[key][name] = probe_accuracy(codes[tr], labels[tr], codes[te], labels[te], classes)
    return out


# ---------------------------------------------------------------------------------------------------
# What the knives do to the player


def knife_events(data: Play) -> dict[str, Any]:
    """Knife hits, deaths by cause and health lost by cause, per game (see the module docstring)."""
    games = sorted(set(data.game))
    hits, deaths = [], []
    lost = {"knife": 0, "enemy": 0}
    last_cause: str | None = None
    for i in range(1, len(data)):
        if data.game[i] != data.game[i - 1]:
            last_cause = None
            continue
        drop = data.health[i - 1] - data.health[i]
        if drop > 0:
            cause = "knife" if drop >= KNIFE_DAMAGE and data.knife[i - 1] is not None else "enemy"
            lost[cause] += drop
            last_cause = cause
            if cause == "knife":
                hits.append(i)
        if data.lives[i] < data.lives[i - 1]:
            cause = last_cause if data.health[i - 1] == 0 or min(data.health[max(0, i - 15):i]) == 0 else "time"
            deaths.append((i, cause or "time"))
            last_cause = None
    n = len(games)
    by_cause = {c: sum(1 for _, k in deaths if k == c) / n for c in ("knife", "enemy", "time")}
    return {
        "games": n,
        "scores": data.scores,
        "knife_hits_per_game": by_cause["knife"],
        "knife_damage_per_game": len(hits) / n,
        "deaths_per_game": {"all": len(deaths) / n, **by_cause},
        "health_lost_per_game": {k: v / n for k, v in lost.items()},
        "hit_steps": hits,
        "death_steps": [i for i, _ in deaths],
    }


def dodges(data: Play, hits: list[int]) -> list[int]:
    """One step of each knife flight that crossed the player's columns and ended without a hit: the player
    ducked or jumped it."""
    hit = set(hits)
    out, crossing, flight_hit = [], None, False
    for i in range(len(data)):
        k = data.knife[i]
        new_game = i > 0 and data.game[i] != data.game[i - 1]
        if k is None or new_game:
            if crossing is not None and not flight_hit and i not in hit:
                out.append(crossing)
            crossing, flight_hit = None, False
            if k is None:
                continue
        p = data.player[i]
        if crossing is None and p[0] < k[0] + k[2] and k[0] < p[0] + p[2]:
            crossing = i
        flight_hit |= i in hit
    return out


# ---------------------------------------------------------------------------------------------------
# The picture


def knife_picture(path: Path, data: Play, dodged: list[int], hit: list[int], per_kind: int = 3) -> None:
    """Rows of (input, reconstruction) with the RAM knife boxed: frames where the agent dodged a knife,
    then frames just before a knife hit it."""
    zoom = 3
    rows = []
    for title, steps in (("dodged", dodged), ("hit", [max(i - 1, 0) for i in hit])):
        if not steps:
            continue
        pick = [steps[int(j)] for j in np.linspace(0, len(steps) - 1, min(per_kind, len(steps)))]
        for i in pick:
            panels = []
            for image in (data.frames[i][-1], data.recon[i]):
                big = cv2.cvtColor(np.repeat(np.repeat(image, zoom, 0), zoom, 1), cv2.COLOR_GRAY2BGR)
                k = data.knife[i]
                if k is not None:
                    x, y, w, h = (v * zoom for v in k)
                    cv2.rectangle(big, (x - 3, y - 3), (x + w + 2, y + h + 2), (200, 40, 255), 1)
                panels.append(big)
            label = np.full((18, panels[0].shape[1] * 2 + 6, 3), 24, np.uint8)
            cv2.putText(label, f"{title}: game {data.game[i]}, step {i} (input | reconstruction)", (4, 13),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
            gap = np.full((panels[0].shape[0], 6, 3), 24, np.uint8)
            rows += [label, np.hstack([panels[0], gap, panels[1]])]
    if not rows:
        rows = [np.full((40, 400, 3), 24, np.uint8)]
        cv2.putText(rows[0], "no knife was dodged or hit in these games", (6, 24), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (235, 235, 235), 1, cv2.LINE_AA)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=24) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))


# ---------------------------------------------------------------------------------------------------
# The report


def knife_report(agent: Agent, config: Config, out: Path, games: int = 6, held_out: int = 2, seed: int = 0,
                 max_frames: int = 108_000, progress: bool = False, checkpoint: str | None = None) -> dict[str, Any]:
    """Plays, measures and writes out/report.json and out/knives.png; returns the report."""
    check_config(config)
    if games < 2 or not 1 <= held_out < games:
        raise ReportError(f"--games must be at least 2 and --held-out between 1 and games - 1 (got {games}, "
                          f"{held_out})")
    started = time.time()
    data = play(agent, config, games, seed, max_frames, progress)
    detection = detection_scores(data, config)
    events = knife_events(data)
    report = {
        "checkpoint": checkpoint,
        "input_recall": detection["input_recall"],
        "input_recall_near_fighter": detection["input_recall_near_fighter"],
        "knives_near_fighter": detection["knives_near_fighter"],
        "recon_recall": detection["recon_recall"],
        "recon_recall_all": detection["recon_recall_all"],
        "recon_recall_near_fighter": detection["recon_recall_near_fighter"],
        "recon_recall_apart": detection["recon_recall_apart"],
        "recon_false_per_empty": detection["recon_false_per_empty"],
        "recon_false_near_fighter_per_empty": detection["recon_false_near_fighter_per_empty"],
        "recon_false_apart_per_empty": detection["recon_false_apart_per_empty"],
        "recon_false_on_sprite_per_empty": detection["recon_false_on_sprite_per_empty"],
        "recon_recall_chance": detection["recon_recall_chance"],
        "input_false_per_empty": detection["input_false_per_empty"],
        "knife_frames": detection["knife_frames"],
        "knife_free_frames": detection["knife_free_frames"],
        "frames": len(data),
        "knife_hits_per_game": events["knife_hits_per_game"],
        "knife_damage_per_game": events["knife_damage_per_game"],
        "deaths_per_game": events["deaths_per_game"],
        "health_lost_per_game": events["health_lost_per_game"],
        "scores": events["scores"],
        "probes": probes(data, config, held_out),
        "code_saturation": float((np.abs(np.stack(data.code)) > 0.99).mean()),
        "encoder_gradients": encoder_gradient_norms(agent, config, seed),
        "settings": {"games": games, "held_out": held_out, "seed": seed, "max_frames": max_frames,
                     "match_tolerance_px": MATCH_TOLERANCE, "recon": dataclasses.asdict(config.recon)},
        "seconds": round(time.time() - started, 1),
    }
    knife_picture(out / "knives.png", data, dodges(data, events["hit_steps"]), events["hit_steps"])
    return report
