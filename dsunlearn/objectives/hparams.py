"""Hyper-parameters of an objective, declared once: in its function's signature.

An objective's hyper-parameters are the keyword-only parameters of its function, each with a type, a
default and (for numbers) a ``Range`` in its ``Annotated`` type::

    def npo(logp, mask, ref_logp, *, beta: Beta = 0.1) -> LossTerms: ...

``hyperparameters(npo)`` reads them with ``inspect.signature``; the registry's defaults, the config's keys
(``objective.beta=0.2``), their types and bounds, the written ``config.yaml`` and the README table all come
from there. A new objective with a new parameter is its function alone: no schema, table or help text to edit.
The shared meanings (``Beta``, ``Alpha``, ``Delta``) are declared here so that equal names keep equal bounds.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

# The data arguments every objective takes first (``fn(logp, mask, ref_logp, *, **hparams)``).
DATA_ARGS = ("logp", "mask", "ref_logp")


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


@dataclass(frozen=True)
class HyperParam:
    """One keyword-only parameter of an objective: ``type`` is the base type (float, int, bool, str)."""

    name: str
    default: Any
    type: type
    range: Range | None


def hyperparameters(fn: Callable) -> Mapping[str, HyperParam]:
    """{name: HyperParam} of ``fn``'s keyword-only parameters, in signature order (read-only).

    Raises TypeError (a programming error of the objective, found when it is registered) if ``fn`` does not
    start with ``DATA_ARGS``, takes another positional parameter, or has a hyper-parameter without a default
    or annotation, or a numeric one without a ``Range``.
    """
    name = getattr(fn, "__name__", repr(fn))
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn, include_extras=True)
    positional = [p.name for p in params.values() if p.kind is not p.KEYWORD_ONLY]
    if tuple(positional) != DATA_ARGS:
        raise TypeError(f"objective {name}: positional parameters must be {DATA_ARGS}, got {tuple(positional)}; "
                        "make hyper-parameters keyword-only (after *)")  # fmt: skip
    out = {}
    for p in params.values():
        if p.kind is not p.KEYWORD_ONLY:
            continue
        hint = hints.get(p.name)
        if p.default is p.empty or hint is None:
            raise TypeError(f"objective {name}: hyper-parameter {p.name} needs an annotation and a default")
        base, *extras = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
        rng = next((e for e in extras if isinstance(e, Range)), None)
        if base in (int, float) and rng is None:
            raise TypeError(f"objective {name}: numeric hyper-parameter {p.name} needs Annotated[..., Range(...)]")
        out[p.name] = HyperParam(p.name, p.default, base, rng)
    return MappingProxyType(out)
