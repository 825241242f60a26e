import torch

from agent.config import ReconConfig
from agent.perception.augment import add_noise, augment, random_shift


def planted(n: int = 16, h: int = 20, w: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations (n, 4, h, w) on gray 85 with a bright 2x3 mark in every frame, and its mask."""
    obs = torch.full((n, 4, h, w), 85, dtype=torch.uint8)
    obs[:, :, 9:11, 12:15] = 200
    masks = torch.zeros((n, h, w), dtype=torch.bool)
    masks[:, 9:11, 12:15] = True
    return obs, masks


def test_shift_moves_every_frame_and_its_mask_together():
    obs, masks = planted()
    shifted, moved = random_shift(obs, masks, pad=3, generator=torch.Generator().manual_seed(0))
    assert shifted.shape == obs.shape and shifted.dtype == torch.uint8 and moved.dtype == torch.bool
    offsets = set()
    for i in range(len(obs)):
        mark = shifted[i] == 200
        assert (mark == mark[-1]).all()  # the whole stack moved by one offset
        assert torch.equal(mark[-1], moved[i])  # and the mask with it
        rows, cols = moved[i].nonzero(as_tuple=True)
        dy, dx = int(rows.min()) - 9, int(cols.min()) - 12
        assert -3 <= dy <= 3 and -3 <= dx <= 3 and moved[i].sum() == 6
        offsets.add((dy, dx))
    assert len(offsets) > 4  # offsets differ between samples
    # Edge pixels repeat into the border: no black frame edges for the encoder to see.
    assert (shifted != 0).all()


def test_shift_of_zero_is_the_identity():
    obs, masks = planted(2)
    shifted, moved = random_shift(obs, masks, pad=0)
    assert shifted is obs and moved is masks


def test_noise_has_the_asked_spread_and_stays_in_range():
    obs = torch.full((8, 4, 32, 32), 128, dtype=torch.uint8)
    noisy = add_noise(obs, 6.0, torch.Generator().manual_seed(0))
    assert noisy.dtype == torch.float32
    assert abs(float((noisy - 128).std()) - 6.0) < 0.2
    bright = add_noise(torch.full((2, 4, 8, 8), 255, dtype=torch.uint8), 10.0)
    assert float(bright.max()) <= 255.0
    assert torch.equal(add_noise(obs, 0.0), obs.float())


def test_augment_keeps_the_target_clean_and_is_reproducible():
    obs, masks = planted(4)
    cfg = ReconConfig(aug_noise_std=5.0, aug_shift=2)
    inputs, clean, moved = augment(obs, masks, cfg, torch.Generator().manual_seed(1))
    again = augment(obs, masks, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(inputs, again[0]) and torch.equal(clean, again[1])
    assert set(clean.unique().tolist()) == {85, 200}  # noise only on the encoder's input
    assert (inputs - clean.float()).abs().max() > 5
    assert torch.equal(clean[:, -1] == 200, moved)
