"""The one place a device name from a config or a command line becomes a torch device."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda when present, else cpu; otherwise the named device (a bad name is a ValueError)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return device
