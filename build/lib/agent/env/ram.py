"""KungFuMaster's RAM map: where the emulator keeps the knife, the player and the enemies, in the native
210x160 screen's pixel coordinates. For measuring only: training never reads RAM.

The addresses are those OC_Atari publishes for KungFuMaster (Delfosse et al., "OCAtari: Object-Centric
Atari 2600 Reinforcement Learning Environments", 2023, `ocatari/ram/kungfumaster.py`):

- the thrown knife: x = ram[73] - 52, y = 123 + ram[96], 5x2 pixels; none when ram[96] is 188. The same two
  bytes hold the dragon's fire when ram[50] is 154 and the last boss's boomerang when it is 204, which are
  not knives;
- the player: x = ram[74] - 49, y = ram[46] - 53, 8x34 standing; ram[93] is the pose (crouching, jumping,
  kicking: other boxes) and bit 3 of ram[90] the direction he faces;
- the enemy nearest the player: x = ram[72] - 49 when ram[72] > 49, its kind in ram[50] (92 a knife
  thrower, 177 a henchman, ...), standing at y 126 (the small kinds lower, by ram[35]); bits 0 and 1 of
  ram[63] put two more henchmen 16 and 32 pixels to its right.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]
"""(x, y, w, h) in native screen pixels."""

KNIFE_NONE = 188
DRAGON, BOSS = 154, 204
"""ram[50] kinds whose projectile is not a knife."""
KNIFE_THROWER, HENCHMAN = 92, 177
SMALL_KINDS = {85: "ball", 97: "air ball", 134: "snake", 227: "dragon ball", 247: "moth"}
"""ram[50] kinds drawn as small objects (their y from ram[35]), with what they are."""
SMALL_Y = {85: 164, 97: 169, 134: 163, 227: 163, 247: 163}
SMALL_SIZE = {85: (8, 12), 97: (4, 6), 134: (8, 12), 227: (8, 12), 247: (7, 6)}

# Player boxes by pose ram[93]: (x shift facing right, x shift facing left, w, h); other poses stand 8x34.
_POSES = {0: (0, -7, 15, 29), 1: (-3, 0, 11, 29), 2: (-2, -6, 16, 34), 3: (-1, -5, 14, 34), 4: (-3, -5, 16, 29)}


def knife_box(ram: np.ndarray) -> Box | None:
    """The thrown knife's box, or None when no knife flies (or the projectile is fire or a boomerang)."""
    if int(ram[96]) == KNIFE_NONE or int(ram[50]) in (DRAGON, BOSS):
        return None
    return int(ram[73]) - 52, 123 + int(ram[96]), 5, 2


def player_box(ram: np.ndarray) -> Box:
    """The player's box in his present pose."""
    x, y, w, h = int(ram[74]) - 49, int(ram[46]) - 53, 8, 34
    pose = int(ram[93])
    if pose in _POSES:
        right, left, w, h = _POSES[pose]
        x += right if int(ram[90]) & 8 else left
    return x, y, w, h


def enemy_boxes(ram: np.ndarray) -> list[tuple[str, Box]]:
    """The enemies on screen, as (kind, box): the one the RAM tracks and the henchmen that follow it."""
    if int(ram[72]) <= 49:
        return []
    kind = int(ram[50])
    x = int(ram[72]) - 49
    if kind in SMALL_KINDS:
        w, h = SMALL_SIZE[kind]
        return [(SMALL_KINDS[kind], (x, SMALL_Y[kind] - int(ram[35]), w, h))]
    name = {KNIFE_THROWER: "knife thrower", HENCHMAN: "henchman", DRAGON: "dragon", BOSS: "boss"}.get(kind, "fighter")
    out = [(name, (x, 126, 8, 34))]
    for bit, dx in ((1, 16), (2, 32)):
        if int(ram[63]) & bit:
            out.append(("henchman", (x + dx, 126, 8, 34)))
    return out


def touches(a: Box, b: Box, margin: int = 0) -> bool:
    """Whether two boxes overlap once each is grown by `margin` pixels."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax - margin < bx + bw and bx - margin < ax + aw and ay - margin < by + bh and by - margin < ay + ah


def distance(a: Box, b: Box) -> int:
    """Pixels of gap between two boxes along the axis where they are farthest apart (0 when they touch)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    gap_x = max(bx - (ax + aw), ax - (bx + bw), 0)
    gap_y = max(by - (ay + ah), ay - (by + bh), 0)
    return max(gap_x, gap_y)
