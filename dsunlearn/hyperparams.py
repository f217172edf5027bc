"""Hyper-parameters of an objective, declared once: in its function's signature (torch-free: the config reads
them before any heavy import, see `objective_catalog.py`).

An objective's hyper-parameters are the keyword-only parameters of its function, each with a type, a
default and (for numbers) a ``Range`` in its ``Annotated`` type::

    def npo(logp, mask, ref_logp, *, beta: Beta = 0.1) -> LossTerms: ...

``hyperparameters(npo)`` reads them with ``inspect.signature``; the registry's defaults, the config's keys
(``objective.beta=0.2``), their types and bounds, the written ``config.yaml`` and the README table all come
from there. A new objective with a new parameter is its function alone: no schema, table or help text to edit.
The shared meanings (``Beta``, ``Alpha``, ``Delta``, ``Eps``, ``LogitShift``, ``Positions``) are declared here so
that equal names keep equal bounds. A string hyper-parameter takes one of the values of its ``Literal`` type
(``positions: Positions = "answer"``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

from dsunlearn.errors import ConfigError

# The data arguments an objective takes first, by what the engine passes it: per-token log-probs of the labels
# (``fn(logp, mask, ref_logp, *, **hparams)``, most objectives), the raw logits of the policy and of the frozen
# reference with the labels (``fn(logits, ref_logits, labels, *, **hparams)``, for a loss over the whole vocabulary),
# or one decoder layer's output hidden states (``fn(hidden, direction, labels, *, **hparams)``, RMU).
DATA_ARGS = {
    "logprobs": ("logp", "mask", "ref_logp"),
    "logits": ("logits", "ref_logits", "labels"),
    # the output hidden states of one decoder layer, a fixed seeded unit direction and the labels (RMU)
    "hidden": ("hidden", "direction", "labels"),
}
# ... and those of a log-probs objective that compares two answers to each question (DPO: the forget answer and
# an alternate one): the same three for the alternate answer follow.
PAIR_DATA_ARGS = (*DATA_ARGS["logprobs"], "alt_logp", "alt_mask", "alt_ref_logp")


@dataclass(frozen=True)
class Range:
    """Inclusive bounds ``lo <= x <= hi`` of a numeric hyper-parameter and why they are where they are.

    ``lo`` also sets the sign the config states first: ``lo > 0`` is "> 0", ``lo == 0`` ">= 0", else "finite".
    """

    lo: float
    hi: float
    why: str


Beta = Annotated[float, Range(1e-6, 1e4, "inverse temperature; 2/beta and beta x log-ratio overflow outside it")]
Alpha = Annotated[float, Range(0.0, 100.0, "a power on probabilities in [0, 1]: p^100 is already 0 in fp32")]
Delta = Annotated[float, Range(-1e4, 1e4, "a margin on per-token log-probabilities")]
Eps = Annotated[float, Range(0.0, 1.0, "a constant added to a denominator of at most 2; past 1 it sets the weight")]
LogitShift = Annotated[float, Range(1e-6, 1e4, "how far a logit is lowered; e^-1e4 is already 0 in any float")]
# RMU: which decoder layer's output the loss reads, how many layers up to it train, how far the forget hidden
# states are pushed along the random direction.
LayerIndex = Annotated[int, Range(0, 1023, "a decoder layer index (0-based); no causal LM has 1024 layers")]
LayerCount = Annotated[int, Range(1, 1024, "how many decoder layers, counted down from objective.layer")]
SteeringCoeff = Annotated[float, Range(1e-6, 1e4, "the norm of the target hidden state c u (|u| = 1)")]
# Which positions a loss over the vocabulary averages over: those that predict an answer token, or every one.
Positions = Literal["answer", "all"]


@dataclass(frozen=True)
class HyperParam:
    """One keyword-only parameter of an objective: ``type`` is the base type (float, int, bool, str); ``choices``
    the values a ``Literal`` annotation allows (None: any value of the type)."""

    name: str
    default: Any
    type: type
    range: Range | None
    choices: tuple | None = None


def hyperparameters(fn: Callable) -> Mapping[str, HyperParam]:
    """{name: HyperParam} of ``fn``'s keyword-only parameters, in signature order (read-only).

    Raises TypeError (a programming error of the objective, found when it is registered) if ``fn`` does not
    start with one of the ``DATA_ARGS`` (or ``PAIR_DATA_ARGS``), takes another positional parameter, or has a
    hyper-parameter without a default or annotation, a numeric one without a ``Range``, or a default outside its
    ``Literal``.
    """
    name = getattr(fn, "__name__", repr(fn))
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn, include_extras=True)
    data_inputs(fn)
    out = {}
    for p in params.values():
        if p.kind is not p.KEYWORD_ONLY:
            continue
        out[p.name] = declared(name, p.name, hints.get(p.name), p.default is p.empty, p.default)
    return MappingProxyType(out)


def data_inputs(fn: Callable) -> str:
    """What the engine passes `fn` first, read from its positional parameters: "logprobs" or "logits" (the keys of
    ``DATA_ARGS``; ``PAIR_DATA_ARGS``, log-probs of two answers, is "logprobs"). TypeError when they are none of
    these, e.g. a hyper-parameter that is not keyword-only."""
    name = getattr(fn, "__name__", repr(fn))
    params = inspect.signature(fn).parameters.values()
    positional = tuple(p.name for p in params if p.kind is not p.KEYWORD_ONLY)
    if positional == PAIR_DATA_ARGS:
        return "logprobs"
    for inputs, args in DATA_ARGS.items():
        if positional == args:
            return inputs
    allowed = " or ".join(map(str, (*DATA_ARGS.values(), PAIR_DATA_ARGS)))
    raise TypeError(f"objective {name}: positional parameters must be {allowed}, got {positional}; "
                    "make hyper-parameters keyword-only (after *)")  # fmt: skip


def declared(fn_name: str, name: str, hint: Any, no_default: bool, default: Any) -> HyperParam:
    """One keyword-only parameter `name` of objective `fn_name` with annotation `hint` as a HyperParam; the
    TypeErrors of `hyperparameters` for a missing default or annotation, a number without a Range, or a
    ``Literal`` whose values are not of one type or do not hold the default."""
    if no_default or hint is None:
        raise TypeError(f"objective {fn_name}: hyper-parameter {name} needs an annotation and a default")
    base, *extras = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
    choices = None
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        kinds = {type(c) for c in choices}
        if len(kinds) != 1 or default not in choices:
            raise TypeError(f"objective {fn_name}: hyper-parameter {name}: Literal{list(choices)} must hold values "
                            f"of one type and its default {default!r}")  # fmt: skip
        base = kinds.pop()
    rng = next((e for e in extras if isinstance(e, Range)), None)
    if base in (int, float) and rng is None:
        raise TypeError(f"objective {fn_name}: numeric hyper-parameter {name} needs Annotated[..., Range(...)]")
    return HyperParam(name, default, base, rng, choices)


def resolve(name: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str) -> dict:
    """`defaults` updated with `overrides` (None keeps the default: the config's "null = default").

    Raises ConfigError ``"<where>.<key>: not a hyper-parameter of '<name>' (allowed: ...)"`` for a non-None key
    that `name` does not take.
    """
    params = dict(defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in params:
            allowed = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"{where}.{key}: not a hyper-parameter of '{name}' (allowed: {allowed})")
        params[key] = value
    return params


def types_of(table: Mapping[str, Mapping[str, HyperParam]]) -> dict[str, type]:
    """{key: type} over every objective's hyper-parameters in `table` ({objective: {key: HyperParam}}), sorted:
    the config keys ``objective.<key>``. TypeError if two objectives give one key different types."""
    types: dict[str, type] = {}
    for objective, params in table.items():
        for key, hp in params.items():
            if types.setdefault(key, hp.type) is not hp.type:
                raise TypeError(
                    f"hyper-parameter {key!r} is {types[key].__name__} elsewhere, {hp.type.__name__} in {objective!r}"
                )
    return dict(sorted(types.items()))
