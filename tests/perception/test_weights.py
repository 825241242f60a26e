import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from agent.config import ReconConfig
from agent.learner.recon import decode_selection, located_share, recon_loss
from agent.models import Locator
from agent.perception.matching import recon_stats
from agent.perception.weights import bridge_mask, false_objects, object_masks, weight_map

H, W = 64, 144


def frames_with_knife(n: int = 4, knife_frames: tuple[int, ...] = (0, 2)) -> np.ndarray:
    frames = np.full((n, H, W), 85, dtype=np.uint8)
    for i in knife_frames:
        frames[i, 30:32, 20 + 10 * i:25 + 10 * i] = 74
    return frames


def as_target(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float().div(255).unsqueeze(1)


def test_object_masks_cover_the_grown_knife_box():
    frames = frames_with_knife()
    masks = object_masks(frames, ReconConfig(loss="weighted", mask_grow=1))
    assert masks.dtype == bool and masks.shape == frames.shape
    assert masks[0, 29:33, 19:26].all() and masks[0].sum() == 4 * 7
    assert not masks[1].any() and not masks[3].any()
    assert object_masks(frames, ReconConfig(loss="plain", locate_coef=0.0)) is None
    assert object_masks(frames, ReconConfig(loss="plain")) is not None  # the locator reads them


def test_weight_map_invariants():
    masks = torch.from_numpy(object_masks(frames_with_knife(), ReconConfig()))
    cfg = ReconConfig(loss="weighted", object_weight=20.0)
    wmap = weight_map(masks, (4, 1, H, W), cfg)
    assert wmap.shape == (4, 1, H, W) and (wmap >= 0).all()
    obj = masks.unsqueeze(1)
    assert (wmap[obj] == 20.0).all()
    assert (wmap[0][~obj[0]] == 1.0).all()  # background of a frame with a knife
    assert (wmap[1] == 1.0).all()  # a frame without any
    plain = weight_map(masks, (4, 1, H, W), ReconConfig(loss="plain"))
    assert (plain == 1).all()


def test_false_objects_are_the_pictures_boxes_that_match_no_object_of_the_target():
    target = frames_with_knife(n=2, knife_frames=(0,))  # frame 0: a knife at rows 30-31, columns 20-24
    masks = torch.from_numpy(object_masks(target, ReconConfig()))
    picture = target.copy()
    picture[0, 30:32, 22:27] = 74  # the knife drawn 2 px right of its place: it matches, not false
    picture[0, 30:32, 20:22] = 85
    picture[0, 10:12, 100:105] = 74  # a knife where there is none
    picture[1, 50:52, 60:66] = 74  # in the knife-free frame too
    false = false_objects(as_target(picture), masks, ReconConfig())
    assert false.dtype == torch.bool and false.shape == (2, H, W)
    assert false[0, 10:12, 100:105].all() and false[1, 50:52, 60:66].all()
    assert int(false.sum()) == 10 + 12  # the two false boxes, nothing else: the drawn knife matched
    # Drawn 6 px right of its place, one wall column from the knife's box: matched (the knife report's
    # 2-px tolerance); 7 px right, two columns away: false.
    for shift, is_false in ((6, False), (7, True)):
        moved = target.copy()
        moved[0, 30:32, 20:25] = 85
        moved[0, 30:32, 20 + shift:25 + shift] = 74
        assert bool(false_objects(as_target(moved), masks, ReconConfig())[0, 30:32, 20 + shift:25 + shift].all()) \
            == is_false
    assert not false_objects(as_target(target), masks, ReconConfig()).any()  # a perfect picture
    # Without masks every box is false, a knife one column from another one included.
    pair = np.full((1, H, W), 85, dtype=np.uint8)
    pair[0, 30:32, 20:25] = pair[0, 30:32, 26:31] = 74
    assert int(false_objects(as_target(pair), None, ReconConfig()).sum()) == 20


def test_false_apart_leaves_out_the_false_objects_beside_a_fighter():
    target = np.full((1, H, W), 85, dtype=np.uint8)
    target[0, 20:54, 60:68] = 150  # a fighter, columns 60-67
    picture = target.copy()
    picture[0, 40:42, 70:75] = 74  # a knife drawn two wall columns right of him
    picture[0, 10:12, 100:105] = 74  # and one far from him
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    beside, apart = (slice(40, 42), slice(70, 75)), (slice(10, 12), slice(100, 105))
    every = false_objects(as_target(picture), masks, ReconConfig())
    assert every[0][beside].all() and every[0][apart].all()
    for reach, beside_is_false in ((2, True), (3, False)):
        cfg = ReconConfig(false_weight=20.0, false_apart=reach)
        false = false_objects(as_target(picture), masks, cfg, as_target(target))
        assert bool(false[0][beside].all()) == beside_is_false and false[0][apart].all()
        assert int(false.sum()) == 10 * (2 if beside_is_false else 1)
    # The target's knife is no fighter: a false box beside it stays false.
    knife = np.full((1, H, W), 85, dtype=np.uint8)
    knife[0, 30:32, 20:25] = 74
    drawn = knife.copy()
    drawn[0, 30:32, 30:35] = 74  # five wall columns right of the knife: false, and no fighter spares it
    knife_masks = torch.from_numpy(object_masks(knife, ReconConfig()))
    cfg = ReconConfig(false_weight=20.0, false_apart=8)
    assert false_objects(as_target(drawn), knife_masks, cfg, as_target(knife))[0, 30:32, 30:35].all()


def test_false_objects_weigh_false_weight_where_it_is_above_their_weight():
    frames = frames_with_knife()
    masks = torch.from_numpy(object_masks(frames, ReconConfig()))
    false = torch.zeros(4, H, W, dtype=torch.bool)
    false[1, 10:12, 100:105] = True
    false[0, 30:32, 20:25] = True  # on the knife's own mask: the object weight stays
    cfg = ReconConfig(object_weight=100.0, false_weight=30.0)
    wmap = weight_map(masks, (4, 1, H, W), cfg, false=false)[:, 0]
    assert (wmap[1, 10:12, 100:105] == 30).all() and (wmap[0, 30:32, 20:25] == 100).all()
    assert (wmap[~false & ~masks] == 1).all()
    # In the loss: the error of a false blob counts 30 times as much (the picture is the target elsewhere).
    target = as_target(frames)
    pred = target.clone()
    pred[1, 0, 10:12, 100:105] = 74 / 255
    loss = {w: recon_loss(pred, target, masks, replace(cfg, false_weight=w)).item() for w in (0.0, 30.0)}
    assert loss[30.0] == pytest.approx(30 * loss[0.0], rel=1e-5) and loss[0.0] > 0


def test_false_weight_stops_a_hedged_knife_from_being_drawn_in_the_frames_without_one():
    # One picture of a knife's place fitted to ten frames, three of which hold the knife (74 on the wall's
    # 85): what a decoder draws where its code cannot tell whether the knife is there.
    h, w = 20, 40
    frames = np.full((10, h, w), 85, dtype=np.uint8)
    frames[:3, 9:11, 15:20] = 74
    target = as_target(frames)

    def fitted(false_weight: float) -> tuple[float, int]:
        cfg = ReconConfig(bridge_cols=0, bridge_rows=0, false_weight=false_weight)
        masks = torch.from_numpy(object_masks(frames, cfg))
        patch = torch.full((2, 5), 85 / 255, requires_grad=True)
        optimizer = torch.optim.Adam([patch], lr=1e-3)
        for _ in range(400):
            pred = target[3:4].expand(10, 1, h, w).clone()
            pred[:, 0, 9:11, 15:20] = patch
            optimizer.zero_grad()
            recon_loss(pred, target, masks, cfg).backward()
            optimizer.step()
        false = false_objects(pred.detach(), masks, cfg)
        return patch.mean().item() * 255, int(false.any(dim=(1, 2)).sum())

    # The object weight alone draws the knife in all ten: a false box in each of the seven without it.
    drawn, false_frames = fitted(0.0)
    assert drawn == pytest.approx(74, abs=0.5) and false_frames == 7
    # Weighed as much as the knife, the false boxes win 7 to 3: the patch stays just under the
    # detector's 6 gray levels off the wall, and no frame holds a false box.
    held, false_frames = fitted(100.0)
    assert 85 - 6 < held < 85 - 4 and false_frames == 0


def scene_with_fighters() -> np.ndarray:
    """A wall (85), two fighters (8 columns wide, 150) and three knives (5x2, 74): knife 1 two wall
    columns right of fighter 1, knife 2 beyond knife 1, knife 3 nine wall columns right of fighter 2."""
    frame = np.full((H, W), 85, dtype=np.uint8)
    frame[10:44, 20:28] = 150  # fighter 1, columns 20-27
    frame[30:32, 30:35] = 74  # knife 1: wall columns 28-29 between it and fighter 1
    # knife 2: 9 wall columns to knife 1 (an object: no bridge ends on one) and 16 to fighter 1.
    frame[30:32, 44:49] = 74
    frame[20:44, 100:108] = 150  # fighter 2, columns 100-107
    frame[40:42, 117:122] = 74  # knife 3: wall columns 108-116 between it and fighter 2
    return frame


def test_bridge_is_the_wall_between_a_knife_and_a_near_fighter():
    # The margins below are those of a detector that joins pieces one row apart (detect_group_rows 1).
    frame = scene_with_fighters()
    masks = object_masks(frame[None], ReconConfig(mask_grow=0))
    expected = np.zeros((H, W), dtype=bool)
    expected[29:33, 28:30] = True  # the knife's rows, one up and down, over the two wall columns
    no_margin = bridge_mask(as_target(frame[None]), torch.from_numpy(masks).unsqueeze(1),
                            ReconConfig(detect_group_rows=1, bridge_cols=6, bridge_margin=False))[0, 0].numpy()
    assert (no_margin == expected).all()
    bridge = bridge_mask(as_target(frame[None]), torch.from_numpy(masks).unsqueeze(1),
                         ReconConfig(detect_group_rows=1, bridge_cols=6))[0, 0].numpy()
    # Knife 1's margin, 3 rows up and down and one column either side, where fighter 1 is within 3 rows
    # and 6 columns (up to column 33); knife 2 and 3 have no sprite that near, and none over or under them.
    expected[27:35, 29:34] = True
    expected[30:32, 30:34] = False  # the knife itself
    assert (bridge == expected).all()
    wide = bridge_mask(as_target(frame[None]), torch.from_numpy(masks).unsqueeze(1),
                       ReconConfig(detect_group_rows=1, bridge_cols=10))[0, 0].numpy()
    expected[39:43, 108:117] = True  # knife 3 now bridges to fighter 2, 9 columns away
    expected[37:45, 116:118] = True  # and has a margin on its left, up to 10 columns from fighter 2
    expected[27:35, 34:36] = True  # knife 1's whole margin is within 10 columns of fighter 1
    expected[30:32, 30:35] = expected[40:42, 117:122] = False  # the knives
    assert (wide == expected).all()


def test_bridge_over_a_fighter_is_the_wall_between_them():
    """A knife flying over a ducking fighter's head: the bridge is the wall rows between them, over the
    knife's columns and one either side (the detector joins diagonal neighbours)."""
    frame = np.full((H, W), 85, dtype=np.uint8)
    frame[41:60, 60:70] = 150  # the fighter, rows 41-59
    frame[33:35, 62:67] = 74  # the knife, rows 33-34: wall rows 35-40 between them
    frame[20:22, 100:105] = 74  # a knife with nothing under or over it
    masks = torch.from_numpy(object_masks(frame[None], ReconConfig(mask_grow=0))).unsqueeze(1)
    expected = np.zeros((H, W), dtype=bool)
    expected[35:41, 61:68] = True
    target = as_target(frame[None])
    bridge = bridge_mask(target, masks, ReconConfig(detect_group_rows=1, bridge_cols=6, bridge_rows=6))[0, 0]
    assert (bridge.numpy() == expected).all()
    # The fighter is 6 wall rows away, beyond the knife's margin (3 rows): bridge_rows 5 leaves no bridge.
    assert not bridge_mask(target, masks, ReconConfig(detect_group_rows=1, bridge_cols=6, bridge_rows=5)).any()
    assert not bridge_mask(target, masks, ReconConfig(detect_group_rows=1, bridge_cols=6, bridge_rows=0)).any()
    # A detector that joins pieces up to 6 empty rows apart (detect_group_rows 3) would join the two: the
    # knife's margin reaches 7 rows down, one column either side, to the fighter's top row.
    margin = bridge_mask(target, masks, ReconConfig(detect_group_rows=3, bridge_cols=6, bridge_rows=0))[0, 0].numpy()
    expected[34:42, 61:68] = True
    expected[33:35, 62:67] = False  # the knife
    assert (margin == expected).all()


def test_weight_map_weighs_bridges_when_given_the_targets():
    frame = scene_with_fighters()
    masks = torch.from_numpy(object_masks(frame[None], ReconConfig(mask_grow=1)))  # knife 1's ring
    cfg = ReconConfig(detect_group_rows=1, object_weight=100.0, mask_grow=1, bridge_cols=6, bridge_weight=30.0)
    wmap = weight_map(masks, (1, 1, H, W), cfg, target=as_target(frame[None]))[0, 0]
    expected = torch.ones(H, W)
    # The margin of knife 1 grown by its ring, 3 rows up and down and one column either side, up to
    # column 33 (6 from fighter 1); it takes in the bridge, the one wall column the ring leaves.
    expected[26:36, 28:34] = 30
    expected[29:33, 29:36] = 100  # knife 1 grown by its ring, which covers column 29
    expected[29:33, 43:50] = expected[39:43, 116:123] = 100  # knives 2 and 3 grown
    assert (wmap == expected).all()
    # Without the targets there are no bridges.
    no_bridges = ReconConfig(object_weight=100.0, bridge_cols=0, bridge_rows=0)
    assert (weight_map(masks, (1, 1, H, W), cfg) == weight_map(masks, (1, 1, H, W), no_bridges)).all()


def test_weight_map_weighs_the_fighters_at_sprite_weight():
    frame = scene_with_fighters()
    masks = torch.from_numpy(object_masks(frame[None], ReconConfig(mask_grow=1)))
    cfg = ReconConfig(detect_group_rows=1, mask_grow=1, bridge_cols=6, bridge_weight=30.0, sprite_weight=7.0)
    wmap = weight_map(masks, (1, 1, H, W), cfg, target=as_target(frame[None]))[0, 0]
    plain_fighters = weight_map(masks, (1, 1, H, W), replace(cfg, sprite_weight=1.0),
                                target=as_target(frame[None]))[0, 0]
    fighters = torch.zeros(H, W, dtype=torch.bool)
    fighters[10:44, 20:28] = fighters[20:44, 100:108] = True
    assert (wmap[fighters] == 7).all() and (plain_fighters[fighters] == 1).all()
    # Everything else (the wall, the knives, the bridges) weighs as with sprite_weight 1.
    assert (wmap[~fighters] == plain_fighters[~fighters]).all()
    assert (wmap[29:33, 29:36] == 100).all()


@pytest.mark.parametrize("loss", ["weighted"])
def test_weighted_loss_equals_mse_without_objects_and_unit_factors(loss):
    cfg = ReconConfig(loss=loss, error="squared", object_weight=1.0)
    torch.manual_seed(1)
    pred, target = torch.rand(3, 1, H, W), torch.rand(3, 1, H, W)
    mse = (pred - target).square().mean()
    no_objects = torch.zeros(3, H, W, dtype=torch.bool)
    assert recon_loss(pred, target, no_objects, cfg).item() == pytest.approx(mse.item(), rel=1e-6)
    assert recon_loss(pred, target, None, cfg).item() == pytest.approx(mse.item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["weighted"])
def test_gradient_at_object_pixels_is_larger_than_under_plain_mse(loss):
    frames = frames_with_knife()
    masks = torch.from_numpy(object_masks(frames, ReconConfig()))
    target = as_target(frames)
    grads = {}
    for name in ("plain", loss):
        pred = torch.full_like(target, 0.5, requires_grad=True)
        recon_loss(pred, target, masks, ReconConfig(loss=name, error="squared")).backward()
        grads[name] = pred.grad.abs()[:, 0]
    ratio = grads[loss][masks] / grads["plain"][masks]
    assert (ratio > 5).all()
    # Background pixels of frames with a knife keep (about) their plain gradient under `weighted`.
    if loss == "weighted":
        assert torch.allclose(grads[loss][0][~masks[0]], grads["plain"][0][~masks[0]])


def test_smooth_l1_leaves_an_unlikely_sprite_under_the_detectors_threshold_and_draws_a_weighted_knife():
    # One pixel over ten frames: a sprite (214) or a knife (74, masked) in 3 of them, the wall (85) in the
    # rest. A constant fitted to all ten is the loss's picture of a pixel the code cannot tell apart.
    def fitted(value: int, masked: bool, **settings) -> float:
        target = torch.full((10, 1, 1, 1), 85 / 255)
        target[:3] = value / 255
        masks = torch.zeros(10, 1, 1, dtype=torch.bool)
        masks[:3] = masked
        pixel = torch.full((1, 1, 1, 1), 0.5, requires_grad=True)
        optimizer = torch.optim.Adam([pixel], lr=1e-3)
        cfg = ReconConfig(bridge_cols=0, bridge_rows=0, **settings)
        for _ in range(1000):
            optimizer.zero_grad()
            recon_loss(pixel.expand(10, 1, 1, 1), target, masks, cfg).backward()
            optimizer.step()
        return pixel.item() * 255

    # The sprite: the squared error draws the mean, a ghost 39 levels off the wall; smooth_l1 stays within
    # beta of the wall (85 + 3 x 4 / 7), under the detector's 6.
    assert fitted(214, False, error="squared") == pytest.approx(0.3 * 214 + 0.7 * 85, abs=0.5)
    assert fitted(214, False, error="smooth_l1", error_beta=4.0) == pytest.approx(85 + 12 / 7, abs=0.5)
    # The knife at weight 10: smooth_l1 draws it (74 + 7 x 4 / 30), the squared error a paler mean; at
    # weight 1 smooth_l1 leaves the wall (85 - 3 x 4 / 7).
    assert fitted(74, True, error="smooth_l1", error_beta=4.0, object_weight=10.0) == pytest.approx(
        74 + 28 / 30, abs=0.5)
    assert fitted(74, True, error="squared", object_weight=10.0) == pytest.approx((30 * 74 + 7 * 85) / 37, abs=0.5)
    assert fitted(74, True, error="smooth_l1", error_beta=4.0, object_weight=1.0) == pytest.approx(85 - 12 / 7,
                                                                                                    abs=0.5)


def test_recon_stats_perfect_and_knife_less_reconstructions():
    frames = frames_with_knife()
    target = as_target(frames)
    masks = torch.from_numpy(object_masks(frames, ReconConfig()))
    perfect = recon_stats(target.clone(), target, masks)
    assert perfect == {"mse": 0.0, "small_object_mse": 0.0, "small_object_recall": 1.0}
    blank = torch.full_like(target, 85 / 255)  # the wall without knives
    stats = recon_stats(blank, target, None)  # masks computed from the targets
    assert stats["small_object_recall"] == 0.0
    assert stats["small_object_mse"] == pytest.approx((11 / 255) ** 2, rel=1e-4)  # the knife's box alone
    grown = recon_stats(blank, target, None, ReconConfig(mask_grow=1))
    knife_share = (5 * 2) / (7 * 4)  # a 5x2 knife in its 7x4 grown box
    assert grown["small_object_mse"] == pytest.approx(knife_share * (11 / 255) ** 2, rel=1e-4)


def test_recon_stats_counts_an_object_found_one_pixel_off():
    frames = frames_with_knife(1, (0,))
    moved = np.roll(frames, 1, axis=2)
    stats = recon_stats(as_target(moved), as_target(frames), None)
    assert stats["small_object_recall"] == 1.0


def test_recon_stats_without_objects_reports_nan():
    target = as_target(frames_with_knife(2, ()))
    stats = recon_stats(target, target, None)
    assert stats["mse"] == 0.0
    assert math.isnan(stats["small_object_mse"]) and math.isnan(stats["small_object_recall"])


def test_decode_selection_takes_object_frames_first():
    masks = torch.zeros(8, 4, 6, dtype=torch.bool)
    masks[[2, 5], 1, 1] = True
    half = ReconConfig(decode_share=0.5)
    sel = decode_selection(masks, 8, half)
    assert len(sel) == 4 and sel[:2].tolist() == [2, 5]
    assert sel[2:].tolist() == [0, 1]  # then the object-free frames, in the minibatch's order
    assert decode_selection(masks, 8, ReconConfig(decode_share=1.0)) == slice(None)
    assert decode_selection(None, 8, half) == slice(0, 4)
    assert len(decode_selection(masks, 8, ReconConfig(decode_share=0.01))) == 1  # never none
    assert decode_selection(masks, 8, ReconConfig(decode_share=0.2)).tolist() == [2, 5]  # ceil(1.6)


def test_located_share_counts_the_object_cells_the_locator_marks():
    locator = Locator(8, (H, W), (8, 4))
    code = torch.zeros(2, 8)
    masks = torch.from_numpy(object_masks(frames_with_knife(2, (0,)), ReconConfig(mask_grow=1)))
    touched = locator.targets(masks)[0].nonzero().flatten()  # the grown knife box: 6 cells
    assert len(touched) == 6
    assert located_share(locator, code, masks) == 0.0  # a fresh locator marks nothing
    with torch.no_grad():
        locator.linear.bias[touched[:3]] = 2.0  # half of the knife's cells, plus one cell elsewhere
        locator.linear.bias[0] = 2.0
    assert located_share(locator, code, masks) == 0.5
    assert math.isnan(located_share(locator, code, torch.zeros_like(masks)))
