"""Loss closures for one unlearning step: objective / regulariser terms scaled to the global-batch mean.

Each closure back-propagates `loss_sum * coef * world / global_count` on its micro-batch. DeepSpeed averages
gradients over ranks, so the accumulated gradient is exactly coef * grad(mean over the global batch), for any
world size and accumulation split. The global unit count is known on every rank without communication: all
ranks hold the encoded dataset and the sampler's global indices.

`objective.loss_mean: micro_batch` gives open-unlearning's rule instead (`MICRO_BATCH`): each micro-batch's loss
is the mean over its own units, and the step's gradient the mean of those over the micro-batches of all ranks
(`loss_sum * coef * world / (micro-batch count * micro-batches in the global batch)`), which depends on how the
global batch is split (docs/methods.md#normalisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dsunlearn import dist
from dsunlearn.data.collate import Encoded
from dsunlearn.engine.unlearn_engine import LossFn, MicroBatch
from dsunlearn.objectives import PAIR, LossTerms, ObjectiveSpec, RegularizerSpec, control_direction, nll, token_logprobs


@dataclass
class HiddenSource:
    """Where a hidden-state loss (RMU and its embed_diff retain term) reads its inputs.

    policy: the hooked layer's output of the forward the engine just ran (`LayerOutput.take`), [B, T, d].
    reference: theta_o's output of the same layer on a micro-batch (`ReferenceModel.hidden`), or None.
    seed: the direction's seed (run.seed): `direction(d)` is `control_direction(d, seed)`, the same on every rank.
    """

    policy: Callable[[], torch.Tensor]
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    seed: int
    _directions: dict = field(default_factory=dict, repr=False)

    def direction(self, dim: int) -> torch.Tensor:
        if dim not in self._directions:
            self._directions[dim] = control_direction(dim, self.seed)
        return self._directions[dim]


def answer_tokens(e: Encoded) -> int:
    """Answer labels in shifted layout (position 0 is always prompt, so this is all non-ignored labels)."""
    return sum(1 for t in e.labels[1:] if t != -100)


def global_count(encoded: list[Encoded], indices: list[int], unit: str) -> float:
    """Units of the global batch: answer tokens, or sequences with at least one answer token."""
    if unit == "token":
        return float(sum(answer_tokens(encoded[i]) for i in indices))
    return float(sum(1 for i in indices if answer_tokens(encoded[i]) > 0))


def _stats(loss_sum: torch.Tensor, metrics: dict | None, denominator: float) -> dict:
    """A micro-batch's record: its unscaled loss sum, its metrics, and `mean_part` = loss_sum / denominator (this
    micro-batch's share of the step's loss as the step averages it: the shares of all micro-batches of all ranks
    sum to the logged loss, under either `loss_mean`)."""
    value = float(loss_sum.detach())
    return {"loss_sum": value, "metrics": metrics or {}, "mean_part": value / denominator}


# objective.loss_mean: the global batch's mean (world-size invariant) or open-unlearning's mean of micro-batch means
GLOBAL, MICRO_BATCH = "global", "micro_batch"
LOSS_MEANS = (GLOBAL, MICRO_BATCH)


def _denominator(params: dict, terms: LossTerms, count: float, n_micro_global: int, loss_mean: str = GLOBAL) -> float:
    """What a micro-batch's `terms.loss_sum` is divided by: the global count (a global-batch mean), or, for a loss
    over every position (`positions="all"`: KL as the anchors' code, UNDIAL as open-unlearning's) and for every
    loss under `loss_mean=MICRO_BATCH` (open-unlearning's Trainer), this micro-batch's count x micro-batches in
    the global batch: the mean of the micro-batch means. A micro-batch without a unit adds 0 (open-unlearning's
    mean over no token would be NaN). The closures back-propagate loss_sum x coef x world / this (DeepSpeed
    divides the summed gradients by world)."""
    if loss_mean not in LOSS_MEANS:
        raise ValueError(f"loss_mean={loss_mean!r}: one of {LOSS_MEANS}")
    if loss_mean == MICRO_BATCH or params.get("positions") == "all":
        return max(terms.count, 1.0) * n_micro_global
    return max(count, 1.0)


def _scaled(terms: LossTerms, params: dict, coef: float, count: float, n_micro_global: int, loss_mean: str):
    """(what a closure back-propagates: loss_sum x coef x world / `_denominator`, its record `_stats`)."""
    d = _denominator(params, terms, count, n_micro_global, loss_mean)
    return terms.loss_sum * (coef * dist.world_size() / d), _stats(terms.loss_sum, terms.metrics, d)


def _pair_terms(spec: ObjectiveSpec, params: dict, mb: MicroBatch, logp, mask, ref) -> LossTerms:
    """A pair objective on a paired micro-batch: rows [0, B/2) of `logp, mask, ref` ([B, T']) are the forget
    answers, rows [B/2, B) their alternates, passed as ``fn(logp, mask, ref, alt_logp, alt_mask, alt_ref)``."""
    if not mb.paired:
        raise ValueError(f"objective {spec.name} compares two answers per item: it needs a paired micro-batch")
    b = logp.shape[0] // 2
    halves = [(x[:b], x[b:]) if x is not None else (None, None) for x in (logp, mask, ref)]
    return spec.fn(*(h[0] for h in halves), *(h[1] for h in halves), **params)


def objective_loss(
    spec: ObjectiveSpec,
    params: dict,
    coef: float,
    count: float,
    ref_logits: Callable | None = None,
    n_micro_global: int = 1,
    hidden: HiddenSource | None = None,
    loss_mean: str = GLOBAL,
) -> LossFn:
    """coef x the forget objective (token or sequence mean over the global forget batch). A logits objective gets
    the policy's logits and, if it needs them, `ref_logits(input_ids, attention_mask)` of the frozen reference
    (called on every rank for every micro-batch: at ZeRO-3 it is a collective); the others get log-probs, and
    theta_o's precomputed ones (`mb.ref_logp`) if they need a reference. A pair objective (`spec.answers ==
    "pair"`) reads a paired micro-batch: its first half of rows are the forget answers, the second half their
    alternates (`MicroBatch.build_pairs`). `n_micro_global`: micro-batches of the global batch, for
    `positions="all"` (`_scale`). A hidden-state objective (RMU) reads `hidden`: the policy's layer output of this
    forward and the seeded direction. `loss_mean`: GLOBAL or MICRO_BATCH (`_scale`)."""
    if spec.needs_reference_logits and ref_logits is None:
        raise ValueError(f"objective_loss: '{spec.name}' needs the reference model's logits (ref_logits)")
    if spec.inputs == "hidden" and hidden is None:
        raise ValueError(f"objective_loss: '{spec.name}' reads hidden states: pass hidden (a HiddenSource)")

    def fn(mb: MicroBatch, logits: torch.Tensor):
        if spec.inputs == "hidden":
            h = hidden.policy()
            terms = spec.fn(h, hidden.direction(h.shape[-1]), mb.labels, **params)
        elif spec.inputs == "logits":
            ref = ref_logits(mb.input_ids, mb.attention_mask) if spec.needs_reference else None
            terms = spec.fn(logits, ref, mb.labels, **params)
        else:
            logp, mask = token_logprobs(logits, mb.labels)
            ref = mb.ref_logp[:, : logp.shape[1]] if spec.needs_reference else None
            if spec.answers == PAIR:
                terms = _pair_terms(spec, params, mb, logp, mask, ref)
            else:
                terms = spec.fn(logp, mask, ref, **params)
        return _scaled(terms, params, coef, count, n_micro_global, loss_mean)

    return fn


def nll_loss(coef: float, count: float, n_micro_global: int = 1, loss_mean: str = GLOBAL) -> LossFn:
    """coef x the mean answer-token NLL over the global batch (the risk R of the G-effect, the retain NLL), or
    with `loss_mean=MICRO_BATCH` the mean over the `n_micro_global` micro-batches of each one's mean."""

    def fn(mb: MicroBatch, logits: torch.Tensor):
        logp, mask = token_logprobs(logits, mb.labels)
        terms = nll(logp, mask)
        return _scaled(terms, {}, coef, count, n_micro_global, loss_mean)

    return fn


def regularizer_loss(
    spec: RegularizerSpec,
    params: dict,
    coef: float,
    count: float,
    ref_logits: Callable | None,
    n_micro_global: int,
    hidden: HiddenSource | None = None,
    loss_mean: str = GLOBAL,
) -> LossFn:
    """coef x the retain regulariser (`loss_mean` as for `objective_loss`). `nll` and `kl` over answer tokens are
    global-batch token means; `kl` with positions="all" reproduces the anchors' code: the mean over micro-batches
    of each micro-batch's all-position mean (padding-dependent, hence not world-size invariant: documented in the
    README). `embed_diff` (unit "sequence", `count` the global batch's sequences) compares the policy's hooked
    layer output with theta_o's (`hidden.reference`, a collective at ZeRO-3)."""
    if spec.inputs == "logprobs":
        return nll_loss(coef, count, n_micro_global, loss_mean)
    if spec.inputs == "hidden" and (hidden is None or hidden.reference is None):
        raise ValueError(f"regularizer_loss: '{spec.name}' needs the policy's and theta_o's hidden states")

    def fn(mb: MicroBatch, logits: torch.Tensor):
        if spec.inputs == "hidden":
            h = hidden.policy()  # this forward's, before the reference's forward
            terms = spec.fn(h, hidden.reference(mb.input_ids, mb.attention_mask), mb.labels, **params)
        else:
            terms = spec.fn(logits, ref_logits(mb.input_ids, mb.attention_mask), mb.labels, **params)
        return _scaled(terms, params, coef, count, n_micro_global, loss_mean)

    return fn


def mean_parts(stats: list[dict]) -> float:
    """This rank's share of the step's loss: the sum of its micro-batches' `mean_part`s (summed over ranks, the
    loss the step minimised, without its coefficient)."""
    return sum(s["mean_part"] for s in stats)


def reduce_stats(stats: list[dict]) -> tuple[float, dict]:
    """(sum of loss_sums over this rank's micro-batches, mean of each metric over them)."""
    total = sum(s["loss_sum"] for s in stats)
    keys = {k for s in stats for k in s["metrics"]}
    means = {k: sum(s["metrics"][k] for s in stats if k in s["metrics"]) / len(stats) for k in keys}
    return total, means
