"""The one place a device name from a config or a command line becomes a torch device, and the layout
the model's weights take on it."""

from __future__ import annotations

from functools import cache
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
    oneDNN's convolutions run faster on it (the reconstruction report's training step: 22 ms against
    26 ms on 2 cores; PPO training steps/s +6%); the default elsewhere, which no GPU run has measured."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format


def place(module: M, device: torch.device) -> M:
    """`module` moved to `device`, its weights in the layout `memory_format` picks there."""
    return module.to(device, memory_format=memory_format(device))


@cache
def computes_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 convolutions in hardware: a CUDA device that supports the type, or a
    CPU whose oneDNN has bfloat16 kernels (AVX-512 BF16 or AMX). Elsewhere bfloat16 is emulated, slower
    than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
