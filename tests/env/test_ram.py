import numpy as np
import pytest

from agent.config import EnvConfig
from agent.env import ram
from agent.env.single import SingleGame


def blank_ram() -> np.ndarray:
    state = np.zeros(128, dtype=np.uint8)
    state[96] = ram.KNIFE_NONE
    return state


def test_known_addresses_give_the_knife_player_and_enemies():
    state = blank_ram()
    assert ram.knife_box(state) is None
    state[73], state[96] = 100, 6
    assert ram.knife_box(state) == (48, 129, 5, 2)
    state[50] = ram.DRAGON  # the same bytes then hold the dragon's fire, not a knife
    assert ram.knife_box(state) is None
    state[74], state[46], state[93], state[90] = 130, 155, 7, 8
    assert ram.player_box(state) == (81, 102, 8, 34)
    state[93] = 0  # crouching, facing left: the box widens to the left
    state[90] = 0
    assert ram.player_box(state) == (74, 102, 15, 29)
    assert ram.enemy_boxes(state) == []
    state[72], state[50], state[63] = 80, ram.HENCHMAN, 0b11
    assert ram.enemy_boxes(state) == [("henchman", (31, 126, 8, 34)), ("henchman", (47, 126, 8, 34)),
                                      ("henchman", (63, 126, 8, 34))]


def test_touches_and_distance_between_boxes():
    assert ram.touches((0, 0, 5, 2), (5, 0, 5, 2), margin=1) and not ram.touches((0, 0, 5, 2), (5, 0, 5, 2))
    assert ram.distance((0, 0, 5, 2), (8, 0, 4, 4)) == 3 and ram.distance((0, 0, 5, 5), (2, 2, 1, 1)) == 0


@pytest.mark.emulator
def test_the_ram_knife_is_where_the_screen_draws_one():
    # Random play until knives have flown: each RAM box must hold the knife's gray (74) within 2 px.
    game = SingleGame(EnvConfig(), seed=3)
    game.reset()
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(400):
        obs, _, done = game.step(int(rng.integers(0, game.num_actions)))
        if done:
            break
        box = ram.knife_box(game.ram)
        if box is None or not (10 <= box[0] <= 140):
            continue
        x, y, w, h = box
        window = obs[-1][y - 96 - 2:y - 96 + h + 2, x - 8 - 2:x - 8 + w + 2]
        assert (window == 74).sum() >= 4, (box, window)
        seen += 1
    game.close()
    assert seen >= 10
