"""What autograd keeps for the backward: the memory checks of the losses over the vocabulary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def saved_large(fn: Callable[[], Any], min_numel: int) -> tuple[Any, list[tuple[torch.dtype, int]]]:
    """(fn's result, [(dtype, data_ptr)] of every tensor autograd saved for the backward while running fn with at
    least `min_numel` elements): a [B, T, V] float32 copy kept for the backward shows up here."""
    big: list[tuple[torch.dtype, int]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() >= min_numel:
            big.append((t.dtype, t.data_ptr()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, big
