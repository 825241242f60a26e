import numpy as np
import pytest

from agent.config import PLAY_BAND, EnvConfig, ReconConfig
from agent.perception.detection import boxes_to_masks, detect_boxes, detect_small_objects, detect_small_objects_batch

BACKGROUND = 85
KNIFE = 74  # a contrast of 11 gray levels


def band(height: int = 64, width: int = 144) -> np.ndarray:
    """A play-band crop: flat wall and the floor line in its last two rows."""
    frame = np.full((height, width), BACKGROUND, dtype=np.uint8)
    frame[-2:] = 131
    return frame


def plant_fighter(frame: np.ndarray, x: int, y: int) -> None:
    """An 8x34 sprite drawn the way the game draws fighters: dark hair, bright body, gap rows between."""
    frame[y:y + 5, x + 2:x + 6] = 0
    frame[y + 5:y + 8, x:x + 8] = 167
    frame[y + 10:y + 22, x:x + 8] = 214
    frame[y + 24:y + 34, x + 1:x + 7] = 214


def test_planted_knife_is_found_at_its_place():
    frame = band()
    frame[30:32, 50:55] = KNIFE
    assert detect_small_objects(frame) == [(50, 30, 5, 2)]


def test_bright_object_is_found_too():
    frame = band()
    frame[20:26, 90:97] = 140  # a 7x6 moth, brighter than the wall
    assert detect_small_objects(frame) == [(90, 20, 7, 6)]


def test_planted_knife_in_a_native_frame_comes_back_in_native_coordinates():
    frame = np.zeros((210, 160), dtype=np.uint8)
    top, bottom, left, right = PLAY_BAND
    frame[top:bottom, left:right] = band()
    frame[129:131, 70:75] = KNIFE
    assert detect_small_objects(frame) == [(70, 129, 5, 2)]


def test_empty_frame_gives_no_boxes():
    assert detect_small_objects(band()) == []
    assert detect_small_objects(np.full((64, 144), 85, np.uint8)) == []


def test_fighter_sprite_is_not_reported_but_a_knife_beside_it_is():
    frame = band()
    plant_fighter(frame, 40, 26)
    assert detect_small_objects(frame) == []
    frame[33:35, 70:75] = KNIFE  # 22 px in front of the fighter, at head height
    assert detect_small_objects(frame) == [(70, 33, 5, 2)]


def test_objects_cut_by_the_border_are_dropped():
    frame = band()
    frame[30:32, 140:144] = KNIFE  # entering from the right edge: its size is unknown
    assert detect_small_objects(frame) == []


def test_hud_and_decoration_of_a_native_frame_are_not_reported():
    frame = np.zeros((210, 160), dtype=np.uint8)
    frame[:96] = 111
    for k in range(6):  # score digits and the health bars: small, high-contrast shapes
        frame[10:17, 20 + 8 * k:25 + 8 * k] = 214
    frame[40:44, 50:90] = 214
    frame[170:180, 20:26] = 214  # the lamps below the floor
    top, bottom, left, right = PLAY_BAND
    frame[top:bottom, left:right] = band()
    assert detect_small_objects(frame) == []


def test_real_screen_at_reset_has_no_detections():
    from agent.env.game import GameEnv

    env = GameEnv(EnvConfig(num_envs=2, crop=None), seed=0)
    try:
        native = env.reset()[:, -1]
    finally:
        env.close()
    assert native.shape == (2, 210, 160)
    assert detect_small_objects_batch(native) == [[], []]


def test_real_play_knives_found_and_knife_free_frames_quiet():
    """Random play on floor 1: knives (the only gray-74 pixels of the band) are found where they are,
    and frames without one stay (almost) free of detections."""
    from agent.env.game import GameEnv

    env = GameEnv(EnvConfig(num_envs=4), seed=0)
    rng = np.random.default_rng(0)
    frames = [env.reset()[:, -1].copy()]
    try:
        for _ in range(400):
            frames.append(env.step(rng.integers(0, env.num_actions, 4)).obs[:, -1].copy())
    finally:
        env.close()
    frames = np.concatenate(frames)
    boxes = detect_boxes(frames)
    has_knife = (frames == KNIFE).any(axis=(1, 2))
    detected = np.zeros(len(frames), dtype=bool)
    detected[boxes[:, 0]] = True
    assert has_knife.sum() > 50
    # Every box in a knife frame sits on knife pixels.
    for i, x, y, w, h in boxes[has_knife[boxes[:, 0]]].tolist():
        assert (frames[i, y:y + h, x:x + w] == KNIFE).any()
    # Most knife frames are found; the misses are knives touching a fighter or the border.
    assert (detected & has_knife).sum() >= 0.75 * has_knife.sum()
    assert (detected & ~has_knife).sum() <= 0.005 * (~has_knife).sum()


def test_batch_matches_single_frames_and_chunks():
    rng = np.random.default_rng(1)
    frames = np.stack([band() for _ in range(37)])  # more than one chunk
    for i in range(0, 37, 3):
        x, y = rng.integers(5, 130), rng.integers(5, 50)
        frames[i, y:y + 2, x:x + 5] = KNIFE
    batched = detect_small_objects_batch(frames)
    assert batched == [detect_small_objects(f) for f in frames]
    assert sum(len(b) for b in batched) == 13


def test_knobs_come_from_the_config():
    frame = band()
    frame[30:32, 50:55] = 80  # contrast 5
    assert detect_small_objects(frame) == []
    assert detect_small_objects(frame, ReconConfig(detect_min_contrast=5)) == [(50, 30, 5, 2)]
    frame[30:42, 50:55] = KNIFE  # now 5x12
    assert detect_small_objects(frame, ReconConfig(detect_max_height=10)) == []


def test_boxes_to_masks_grows_and_clips():
    boxes = np.array([[0, 1, 1, 3, 2], [1, 0, 0, 2, 2]])
    masks = boxes_to_masks(boxes, (2, 6, 8), grow=1)
    assert masks.dtype == bool and masks.shape == (2, 6, 8)
    assert masks[0].sum() == 5 * 4 and masks[0, 0:4, 0:5].all()
    assert masks[1].sum() == 3 * 3 and masks[1, 0:3, 0:3].all()


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((2, 4, 4), np.uint8)])
def test_bad_frames_are_rejected(bad):
    with pytest.raises(ValueError):
        detect_small_objects(bad)


@pytest.mark.parametrize(("x", "y"), [(48, 37), (41, 23)])  # touching the body; one row over the hair
def test_the_faint_pass_keeps_a_knife_touching_a_fighter_apart_from_it(x, y):
    frame = band()
    plant_fighter(frame, 40, 26)
    frame[y:y + 2, x:x + 5] = KNIFE
    assert detect_small_objects(frame) == [(x, y, 5, 2)]
    assert detect_small_objects(frame, ReconConfig(detect_faint_contrast=0)) == []  # joined to the fighter


def test_the_faint_pass_finds_nothing_in_fighters_and_no_second_box_for_an_object():
    frame = band()
    plant_fighter(frame, 40, 26)
    plant_fighter(frame, 90, 26)
    assert detect_small_objects(frame) == []
    frame[40:44, 60:63] = 60  # a dark object of 25 levels: found by the main pass only
    assert detect_small_objects(frame) == [(60, 40, 3, 4)]
    assert detect_small_objects(frame, ReconConfig(detect_faint_contrast=30)) == [(60, 40, 3, 4)]


def test_the_faint_pass_keeps_out_the_soft_outline_of_a_drawn_fighter():
    # A fighter as a decoder draws it, with a soft edge: a column of pixels 12 levels off the wall down its
    # left side, 1 px wide and 10 rows tall, touching the body. The faint pass finds that sliver as a group
    # of its own; upright, it is no knife. A knife (5 x 2) beside the same fighter is still found.
    frame = band()
    plant_fighter(frame, 40, 26)
    frame[36:46, 39] = BACKGROUND + 12
    assert detect_small_objects(frame) == []
    assert detect_small_objects(frame, ReconConfig(detect_faint_max_height=14)) == []  # still upright
    frame[37:39, 48:53] = KNIFE
    assert detect_small_objects(frame) == [(48, 37, 5, 2)]
    frame[37:41, 48:53] = KNIFE  # a 5 x 4 faint group: taller than detect_faint_max_height's 3 rows
    assert detect_small_objects(frame) == []
    assert detect_small_objects(frame, ReconConfig(detect_faint_max_height=4)) == [(48, 37, 5, 4)]


def test_a_fighter_drawn_with_wide_gaps_is_one_sprite_and_a_knife_beside_it_is_still_found():
    # A fighter as a decoder draws it where it is unsure of the dark hair and belt: head, body and legs
    # split by 4 and 5 empty rows, each piece under detect_max_height. Joined, they are one sprite 34 rows
    # tall; a detector that joins pieces only one row apart cuts it into three small objects.
    frame = band()
    frame[20:28, 60:67] = 214  # head and shoulders, rows 20-27
    frame[32:44, 59:68] = 214  # body, rows 32-43
    frame[49:54, 60:67] = 214  # legs, rows 49-53
    assert detect_small_objects(frame) == []
    assert len(detect_small_objects(frame, ReconConfig(detect_group_rows=1))) == 3
    frame[40:42, 72:77] = KNIFE  # a knife 4 columns in front of the body
    assert detect_small_objects(frame) == [(72, 40, 5, 2)]
