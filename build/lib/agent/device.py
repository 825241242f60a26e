"""The one place a device name from a config or a command line becomes a torch device, and the layout
the model's weights take on it."""

from __future__ import annotations

from typing import TypeVar

import torch

M = TypeVar("M", bound=torch.nn.Module)


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda when present, else cpu; otherwise the named device (a bad name is a ValueError)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return device


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout the model's conv weights are kept in on `device`: channels_last on the CPU, where
    oneDNN's convolutions run faster on it (docs/experiments/notebook.md, "Throughput"); the default
    elsewhere."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format


def place(module: M, device: torch.device) -> M:
    """`module` moved to `device`, its weights in the layout `memory_format` picks there."""
    return module.to(device, memory_format=memory_format(device))
