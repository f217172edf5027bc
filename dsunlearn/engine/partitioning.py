"""How ZeRO-3 marks a partitioned parameter, and how to see it whole: the one place outside DeepSpeed's own
calls that knows.

Under ZeRO-3 DeepSpeed replaces each parameter's data with this rank's flat slice and tags the parameter with
`ds_id` (its partition id), `ds_shape` / `ds_numel` (the full tensor's shape and size) and the gather/release
hooks; `deepspeed.zero.GatheredParameters` all-gathers a list of them for the span of a `with` block. Code
outside `engine/` (evaluation, model checks, saving) asks here instead of reading those attributes itself, so
a DeepSpeed upgrade that renames them is fixed in one file. Nothing here imports DeepSpeed unless a parameter
is partitioned (a plain HF model never needs it).
"""

from __future__ import annotations

import contextlib

import torch


def is_partitioned(param: torch.Tensor) -> bool:
    """True if `param` is a ZeRO-3 partitioned parameter (this rank holds a flat slice of it)."""
    return hasattr(param, "ds_id")


def module_is_partitioned(module: torch.nn.Module) -> bool:
    """True if any parameter of `module` is ZeRO-3 partitioned: every forward then gathers parameters
    collectively, so all ranks must run the same number of forwards (lockstep)."""
    return any(is_partitioned(p) for p in module.parameters())


def full_shape(param: torch.Tensor) -> torch.Size:
    """The shape of the whole parameter: `ds_shape` when partitioned (its local data is a flat slice)."""
    return torch.Size(param.ds_shape) if is_partitioned(param) else param.shape


def full_numel(param: torch.Tensor) -> int:
    """The element count of the whole parameter (`ds_numel` when partitioned)."""
    return int(param.ds_numel) if is_partitioned(param) else param.numel()


def gathered(params: list[torch.nn.Parameter]):
    """A context in which every parameter of `params` is whole on every rank (read only: no rank's changes are
    scattered back). A no-op when none is partitioned; otherwise collective: every rank must enter it."""
    if not any(is_partitioned(p) for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
