"""A trainable subset of a model's parameters: every other parameter frozen before `deepspeed.initialize`.

Frozen parameters (``requires_grad = False``) are in no optimizer group, so DeepSpeed keeps no fp32 master copy,
optimizer state or gradient partition for them (at ZeRO-3 their weights are still partitioned and gathered per
layer in forward). Everything that reads gradients or master weights goes through the engine's trainable
parameters (`UnlearnEngine.named`): gradient shards (`engine/shard.py`), hence GRU and the G-effect, act on the
subset only, and the UIPE deltas (`engine/delta.py`) hold the subset only, so extrapolation copies a frozen tensor
from theta_o unchanged (delta exactly 0).

`freeze_except(model, keep)` is the one entry point; `layer_selector` builds `keep` for "these parameters of these
decoder layers" (RMU's layers k-2..k ``mlp.down_proj.weight``) for any Hugging Face causal LM, using the layer
rule of `engine/groups.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from dsunlearn.engine.groups import layer_of
from dsunlearn.errors import ConfigError


def layer_selector(layers: Iterable[int], pattern: str, where: str = "objective.train_params") -> Callable[[str], bool]:
    """keep(name): the parameter is inside one of the decoder `layers` and the rest of its name after
    ``layers.N.`` matches the regular expression `pattern` whole. ConfigError naming `where` for a bad pattern."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}={pattern!r} is not a regular expression ({e}); write one such as "
                          r"'mlp\.down_proj\.weight'") from None  # fmt: skip
    wanted = set(layers)

    def keep(name: str) -> bool:
        found = layer_of(name)
        return found is not None and found[0] in wanted and rx.fullmatch(found[1]) is not None

    return keep


def freeze_except(model: torch.nn.Module, keep: Callable[[str], bool], what: str = "the trainable subset") -> list[str]:
    """Set ``requires_grad = keep(name)`` on every parameter of `model`; returns the names kept, in order.

    Call it before `deepspeed.initialize` (the optimizer's groups are built from ``requires_grad``). ConfigError
    when nothing is kept (a pattern that matches no parameter of this architecture), naming `what`."""
    kept = []
    for name, p in model.named_parameters():
        on = bool(keep(name))
        p.requires_grad_(on)
        if on:
            kept.append(name)
    if not kept:
        example = next((n for n, _ in model.named_parameters() if layer_of(n) is not None), "none")
        raise ConfigError(f"{what} matches no parameter of this model (its layer parameters are named like "
                          f"'{example}'); fix the pattern")  # fmt: skip
    return kept
