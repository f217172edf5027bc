"""Unlearning objectives: pure functions of per-token log-probabilities, of logits or of hidden states (no model,
no DeepSpeed).

Most forget objectives have the signature ``fn(logp, mask, ref_logp=None, *, **hparams) -> LossTerms`` with
``logp, mask, ref_logp: [B, T']`` from ``token_logprobs`` (already shifted, 0 off the mask); one that needs the
whole next-token distribution (UNDIAL) takes ``fn(logits, ref_logits, labels, *, **hparams)`` with [B, T, V]
logits instead, and one that works on representations (RMU) ``fn(hidden, direction, labels, *, **hparams)``
with one decoder layer's [B, T, d] output (``ObjectiveSpec.inputs``, read from the signature). All are losses to
MINIMISE, exactly as in docs/methods.md. Its keyword-only parameters ARE its hyper-parameters: their defaults,
types and ranges are read from the signature (``dsunlearn/hyperparams.py``), and the config takes them as
``objective.<name>``. The engine looks objectives up by config name:

    o = cfg.objective
    spec = get_objective(o.name)                         # ConfigError for an unknown name
    params = spec.resolve(o.params)                      # the signature's defaults, updated; None = default
    if spec.inputs == "logprobs":
        logp, mask = token_logprobs(logits, labels)
        ref = token_logprobs(ref_logits, labels)[0] if spec.needs_reference else None  # precomputed, in fact
        terms = spec.fn(logp, mask, ref, **params)       # LossTerms: loss_sum, count, per_item, weights
    else:                                                # "logits": the reference model runs on the batch
        terms = spec.fn(logits, ref_logits if spec.needs_reference else None, labels, **params)
    # spec.answers (log-probs objectives): which answers logp scores: the forget answers ("forget"), each forget
    # question's refusal ("alternate", data/refusals.py), or both ("pair": fn(logp, mask, ref, alt_logp, alt_mask,
    # alt_ref)).
    # retain term: o.retain_loss, or spec.retain_loss when "auto" ("nll" for graddiff, else None),
    # looked up with get_regularizer(); kl takes logits: kl(logits, ref_logits, labels, positions=...)

See ``types.LossTerms`` for why objectives return a sum and a count rather than a mean.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dsunlearn.errors import ConfigError
from dsunlearn.hyperparams import PAIR_DATA_ARGS, HyperParam, Range, data_inputs, hyperparameters, resolve, types_of

from .dpo import dpo
from .ga import ga
from .graddiff import RETAIN_LOSS as _GRADDIFF_RETAIN_LOSS
from .graddiff import graddiff
from .idk_nll import idk_nll
from .logprobs import IGNORE_INDEX, mean_nll, sequence_logprob, token_logprobs
from .npo import npo
from .regularizers import kl, nll
from .rmu import control_direction, embed_diff, rmu
from .satimp import satimp
from .simnpo import simnpo
from .tnpo import tnpo
from .types import LossTerms
from .undial import undial
from .wga import wga
from .wtnpo import wtnpo

_WANG2025 = "https://arxiv.org/abs/2502.19301"
_TOFU = "https://arxiv.org/abs/2401.06121"

# What an objective's log-probs score (ObjectiveSpec.answers): the forget answers, each forget question's
# alternate (refusal) answer, or both as pairs.
FORGET, ALTERNATE, PAIR = "forget", "alternate", "pair"
ANSWERS = (FORGET, ALTERNATE, PAIR)


def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ObjectiveSpec:
    """How the engine calls one forget objective.

    Attributes:
        name: config name (``objective.name``).
        fn: ``fn(logp, mask, ref_logp=None, *, **hparams)`` or ``fn(logits, ref_logits, labels, *, **hparams)``,
            returning ``LossTerms``.
        needs_reference: the engine must give the frozen reference model's ``ref_logp`` (theta_o's forget
            log-probs, precomputed before step 0) or, for a logits objective, its ``ref_logits`` on each batch.
        unit: "token" or "sequence", the unit the engine normalises by.
        retain_loss: default retain regulariser name (a key of ``REGULARIZERS``) or None.
        paper: link to the paper that defines the objective.
        risk_is_negative_loss: the forget loss is minus the answer NLL (GA, and GradDiff's forget term), so
            grad R(D_f) = -grad L_u(D_f) and the G-effect reuses the objective's gradient (no extra backward).
        answers: what ``logp`` scores: ``"forget"`` the forget answers; ``"alternate"`` a refusal answer to
            each forget question instead (IdkNLL); ``"pair"`` both, row for row: ``fn`` then takes
            ``PAIR_DATA_ARGS`` (forget answer first, then its alternate) and the unit is the pair (DPO).
            The G-effect's forget risk R(D_f) is the NLL of the forget answers whatever this says.
        hyperparams: (derived) ``fn``'s keyword-only parameters: name, default, type, range (``hyperparams.py``).
        inputs: (derived) "logprobs", "logits" or "hidden": what ``fn`` takes first, from its positional
            parameters. A "hidden" objective (RMU) gets the output hidden states [B, T, d] of decoder layer
            ``params["layer"]``, a seeded unit direction [d] (``control_direction(d, run.seed)``) and the labels,
            and trains only the parameters ``trainable_names`` selects.
    """

    name: str
    fn: Callable[..., LossTerms]
    needs_reference: bool
    unit: str = "token"
    retain_loss: str | None = None
    paper: str = ""
    risk_is_negative_loss: bool = False
    answers: str = FORGET
    hyperparams: Mapping[str, HyperParam] = field(init=False, repr=False, compare=False)
    inputs: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyperparams", hyperparameters(self.fn))  # TypeError for a malformed signature
        object.__setattr__(self, "inputs", data_inputs(self.fn))
        if self.answers not in ANSWERS:
            raise TypeError(f"objective {self.name}: answers must be one of {ANSWERS}, got {self.answers!r}")
        takes_pairs = tuple(inspect.signature(self.fn).parameters)[: len(PAIR_DATA_ARGS)] == PAIR_DATA_ARGS
        if takes_pairs != (self.answers == PAIR):
            raise TypeError(f"objective {self.name}: answers={self.answers!r} but its function "
                            f"{'takes' if takes_pairs else 'does not take'} {PAIR_DATA_ARGS}")  # fmt: skip
        if self.answers == PAIR and self.unit != "sequence":
            raise TypeError(f"objective {self.name}: a pair objective's unit is the pair: unit='sequence'")
        # A logits objective's reference model runs on the forget batch itself (recipes/unlearn.py); no refusal
        # batch reaches it.
        if self.inputs != "logprobs" and self.answers != FORGET:
            raise TypeError(
                f"objective {self.name}: a {self.inputs} objective reads the forget batch: answers='forget'"
            )
        if self.inputs == "hidden" and self.needs_reference:
            raise TypeError(f"objective {self.name}: a hidden-state objective's reference is its direction")

    def trainable_layers(self, params: Mapping[str, Any]) -> tuple[tuple[int, ...], str] | None:
        """(decoder layers, parameter-name pattern inside them) of the only parameters that train, or None (all
        train): for a hidden-state objective, layers ``layer - train_layers + 1 .. layer`` (from 0) and
        ``train_params``."""
        if self.inputs != "hidden":
            return None
        k = int(params["layer"])
        return tuple(range(max(0, k - int(params["train_layers"]) + 1), k + 1)), str(params["train_params"])

    @property
    def needs_reference_logits(self) -> bool:
        """The engine must run a frozen reference model on the forget batches (a logits objective)."""
        return self.needs_reference and self.inputs == "logits"

    @property
    def needs_reference_logprobs(self) -> bool:
        """The engine must precompute theta_o's log-probs of the forget set (``precompute_forget_ref``), on the
        answers ``answers`` names (both of each pair for a pair objective)."""
        return self.needs_reference and self.inputs == "logprobs"

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Default hyper-parameters: the defaults of ``fn``'s signature (read-only)."""
        return _frozen({k: hp.default for k, hp in self.hyperparams.items()})

    def resolve(self, overrides: Mapping[str, Any] | None = None, where: str = "objective") -> dict:
        """Defaults updated with ``overrides`` (None values keep the default).

        Raises ConfigError ``"<where>.<key>: not a hyper-parameter of '<name>' (allowed: ...)"`` for a
        non-None key the objective does not take, e.g. ``alpha`` for ``npo``.
        """
        return resolve(self.name, self.defaults, overrides, where)


@dataclass(frozen=True)
class RegularizerSpec:
    """How the engine calls one retain regulariser.

    Attributes:
        name: config name.
        fn: ``nll(logp, mask)``, ``kl(policy_logits, ref_logits, labels, positions=...)`` or
            ``embed_diff(hidden, ref_hidden, labels)``.
        needs_reference: the engine must run the frozen reference model on the retain batch.
        inputs: "logprobs" (takes ``token_logprobs`` output), "logits" (takes raw logits and labels) or "hidden"
            (the policy's and the reference's output hidden states of the hidden-state objective's layer).
        defaults: default keyword arguments.
        unit: "token" (a mean over the global batch's answer tokens) or "sequence" (over its sequences).
    """

    name: str
    fn: Callable[..., LossTerms]
    needs_reference: bool
    inputs: str
    defaults: Mapping[str, Any] = field(default_factory=_frozen)
    unit: str = "token"

    def resolve(self, overrides: Mapping[str, Any] | None = None, where: str = "objective") -> dict:
        """Defaults updated with ``overrides``; ConfigError naming ``where`` for an unknown key."""
        return resolve(self.name, self.defaults, overrides, where)


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "ga": ObjectiveSpec("ga", ga, False, paper="https://arxiv.org/abs/2210.01504", risk_is_negative_loss=True),
    "graddiff": ObjectiveSpec(
        "graddiff",
        graddiff,
        False,
        retain_loss=_GRADDIFF_RETAIN_LOSS,
        paper="https://arxiv.org/abs/2203.12817",
        risk_is_negative_loss=True,
    ),
    "npo": ObjectiveSpec("npo", npo, True, unit="sequence", paper="https://arxiv.org/abs/2404.05868"),
    "simnpo": ObjectiveSpec("simnpo", simnpo, False, unit="sequence", paper="https://arxiv.org/abs/2410.07163"),
    "wga": ObjectiveSpec("wga", wga, False, paper=_WANG2025),
    "tnpo": ObjectiveSpec("tnpo", tnpo, True, paper=_WANG2025),
    "wtnpo": ObjectiveSpec("wtnpo", wtnpo, True, paper=_WANG2025),
    "satimp": ObjectiveSpec("satimp", satimp, False, paper="https://arxiv.org/abs/2505.11953"),
    "undial": ObjectiveSpec("undial", undial, True, paper="https://arxiv.org/abs/2402.10052"),
    "idk_nll": ObjectiveSpec("idk_nll", idk_nll, False, paper=_TOFU, answers=ALTERNATE),
    "dpo": ObjectiveSpec("dpo", dpo, True, unit="sequence", paper="https://arxiv.org/abs/2305.18290", answers=PAIR),
    # RMU: hidden states of one layer; its retain term (embed_diff) needs theta_o's, on every retain batch
    "rmu": ObjectiveSpec(
        "rmu", rmu, False, unit="sequence", retain_loss="embed_diff", paper="https://arxiv.org/abs/2403.03218"
    ),  # fmt: skip
}

REGULARIZERS: dict[str, RegularizerSpec] = {
    "nll": RegularizerSpec("nll", nll, needs_reference=False, inputs="logprobs"),
    "kl": RegularizerSpec("kl", kl, needs_reference=True, inputs="logits", defaults=_frozen({"positions": "answer"})),
    "embed_diff": RegularizerSpec("embed_diff", embed_diff, needs_reference=True, inputs="hidden", unit="sequence"),
}


def get_objective(name: str) -> ObjectiveSpec:
    """The spec of forget objective ``name``; ConfigError listing the allowed names otherwise."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"objective.name: unknown objective {name!r} (allowed: {', '.join(OBJECTIVES)})") from None


def hyperparameter_types() -> dict[str, type]:
    """{name: type} of the hyper-parameters of every registered objective, sorted: the config keys
    ``objective.<name>`` (which of them the chosen objective takes is checked by its ``resolve``).

    Raises TypeError if two objectives give one name different types (one key, one type in the config).
    """
    return types_of({name: spec.hyperparams for name, spec in OBJECTIVES.items()})


def get_regularizer(name: str) -> RegularizerSpec:
    """The spec of retain regulariser ``name``; ConfigError listing the allowed names otherwise."""
    try:
        return REGULARIZERS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"objective.retain_loss: unknown retain loss {name!r} (allowed: {', '.join(REGULARIZERS)})"
        ) from None


__all__ = [
    "ALTERNATE",
    "ANSWERS",
    "FORGET",
    "IGNORE_INDEX",
    "OBJECTIVES",
    "PAIR",
    "REGULARIZERS",
    "HyperParam",
    "LossTerms",
    "ObjectiveSpec",
    "Range",
    "RegularizerSpec",
    "control_direction",
    "embed_diff",
    "dpo",
    "ga",
    "get_objective",
    "get_regularizer",
    "graddiff",
    "hyperparameter_types",
    "hyperparameters",
    "idk_nll",
    "kl",
    "mean_nll",
    "nll",
    "npo",
    "rmu",
    "satimp",
    "sequence_logprob",
    "simnpo",
    "tnpo",
    "token_logprobs",
    "undial",
    "wga",
    "wtnpo",
]
