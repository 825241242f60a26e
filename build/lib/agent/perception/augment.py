"""Random perturbations of observation batches for the decoder's loss: Gaussian noise and random shifts.

- `random_shift` pads each observation by `pad` pixels (edge pixels repeated) and crops it back at a
  random offset, as DrQ does; every frame of a stack moves by the same offset, and so does its object
  mask (padded with False), so the weight map stays on its knife.
- `add_noise` adds Gaussian noise in gray levels to what the encoder sees; the decoder's target stays
  the clean (shifted) frame, so the code is asked to ignore the noise (a denoising autoencoder).

`augment` applies both as configured by `recon.aug_shift` and `recon.aug_noise_std`. All functions take
the observations as uint8 or float tensors on any device, in the 0-255 scale the model's normalizer
reads, and return float32 (noise) or the input dtype (shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agent.config import ReconConfig


def random_shift(obs: torch.Tensor, masks: torch.Tensor | None, pad: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shifts each observation (N, C, h, w) and its mask (N, h, w) by one random offset in [-pad, pad]^2."""
    if pad == 0:
        return obs, masks
    n, _, h, w = obs.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=_device(generator, obs))
    offsets = offsets.to(obs.device)
    rows = torch.arange(h, device=obs.device).view(1, h) + offsets[0].view(n, 1)  # (N, h)
    cols = torch.arange(w, device=obs.device).view(1, w) + offsets[1].view(n, 1)  # (N, w)
    batch = torch.arange(n, device=obs.device).view(n, 1, 1)
    padded = F.pad(obs.float(), (pad, pad, pad, pad), mode="replicate").to(obs.dtype)
    # (N, C, h+2p, w+2p) -> (N, h, w, C) by gathering each sample's window, then back to (N, C, h, w).
    shifted = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if masks is None:
        return shifted.contiguous(), None
    padded_masks = F.pad(masks, (pad, pad, pad, pad), value=False)
    return shifted.contiguous(), padded_masks[batch, rows.view(n, h, 1), cols.view(n, 1, w)]


def add_noise(obs: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """obs + N(0, std^2) in gray levels, clipped to [0, 255], as float32."""
    obs = obs.float()
    if std == 0:
        return obs
    noise = torch.randn(obs.shape, generator=generator, device=_device(generator, obs)).to(obs.device)
    return (obs + std * noise).clamp_(0.0, 255.0)


def _device(generator: torch.Generator | None, obs: torch.Tensor) -> torch.device:
    """Random numbers are drawn where the generator lives (so a CPU generator gives the same draws
    everywhere), else where the observations are."""
    return generator.device if generator is not None else obs.device


def augment(
    obs: torch.Tensor, masks: torch.Tensor | None, cfg: ReconConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(encoder input, clean shifted observations for the target, shifted masks) as `cfg` asks.

    The target is `agent.models.recon_target` of the second tensor: the shift moves it, noise does not.
    """
    clean, masks = random_shift(obs, masks, cfg.aug_shift, generator)
    return add_noise(clean, cfg.aug_noise_std, generator), clean, masks
