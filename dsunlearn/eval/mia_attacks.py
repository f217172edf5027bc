"""The membership-inference attacks and memorization scores of a model on a member and a non-member set,
as open-unlearning's log entries (`metric_log`), from the per-item token statistics (`token_stats`).

Given the `TokenStats` of the forget (member) items and of the holdout (non-member) items, with their texts::

    mia_loss, mia_zlib, mia_min_k, mia_min_k_plus_plus   (and mia_reference with a reference model's stats)
        -> {"forget": per-item scores, "holdout": per-item scores, "auc": AUC, "agg_value": AUC}
    mia_reference from two logs (`reference_entry`): this model's mia_loss entry and the reference model's
        -> the same layout, score_i = LOSS_model(i) - LOSS_reference(i)
    exact_memorization, extraction_strength (forget items only)
        -> {"agg_value": mean, "value_by_index": {"i": {"score": v}}}

AUC is open-unlearning's (`mia.auc`: near 1 when the forget items are much more likely than the holdout ones,
about 0.5 when the model cannot tell them apart); MUSE's PrivLeak uses the opposite, ``1 - AUC``
(`muse_auc_of`, `privleak_entry`).
Pure: numbers in, entries out.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log, mia

if TYPE_CHECKING:  # token_stats imports torch; the scores here are plain Python
    from dsunlearn.eval.token_stats import TokenStats

# open-unlearning's metric names (its configs/eval/*_metrics/mia_*.yaml) -> the score of one item
ATTACKS: tuple[str, ...] = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")
REFERENCE_ATTACK = "mia_reference"


def attack_scores(
    attack: str, stats: Sequence[TokenStats], texts: Sequence[str], k: float, ref: Sequence[TokenStats] | None = None
) -> list[float]:
    """The per-item score of `attack` (one of ATTACKS or REFERENCE_ATTACK) over items; higher = less likely a
    member. `texts` feed zlib; `k` is Min-K%'s and Min-K%++'s fraction; `ref` the reference model's stats."""
    if attack == "mia_loss":
        return [mia.loss_score(s.logp) for s in stats]
    if attack == "mia_zlib":
        return [mia.zlib_score(s.logp, t) for s, t in zip(stats, texts, strict=True)]
    if attack == "mia_min_k":
        return [mia.min_k_score(s.logp, k) for s in stats]
    if attack == "mia_min_k_plus_plus":
        return [mia.min_k_plus_plus_score(s.logp, s.mu, s.var, k) for s in stats]
    if attack == REFERENCE_ATTACK:
        if ref is None:
            raise ValueError("mia_reference needs the reference model's token statistics")
        return [mia.reference_score(s.logp, r.logp) for s, r in zip(stats, ref, strict=True)]
    raise ValueError(f"unknown attack {attack!r}; one of {', '.join((*ATTACKS, REFERENCE_ATTACK))}")


def mia_entries(
    forget: Sequence[TokenStats],
    holdout: Sequence[TokenStats],
    forget_texts: Sequence[str],
    holdout_texts: Sequence[str],
    k: float,
    ref_forget: Sequence[TokenStats] | None = None,
    ref_holdout: Sequence[TokenStats] | None = None,
) -> dict[str, dict]:
    """Every attack's entry (the reference attack only with both reference stat lists), keyed by its name."""
    attacks = ATTACKS + ((REFERENCE_ATTACK,) if ref_forget is not None and ref_holdout is not None else ())
    out = {}
    for attack in attacks:
        f = attack_scores(attack, forget, forget_texts, k, ref_forget)
        h = attack_scores(attack, holdout, holdout_texts, k, ref_holdout)
        out[attack] = metric_log.mia(f, h, mia.auc(f, h))
    return out


MIA_PARTS = ("forget", "holdout")
ITEMS_FIX = "re-evaluate the reference model on the same splits with the same eval.max_items"


def loss_items(entry: Any, where: str) -> dict[str, dict[str, float]] | None:
    """``{"forget": {index: score}, "holdout": {index: score}}`` of a ``mia_loss`` entry (`where` names its
    log), indices in numeric order; None where it has no per-item scores of both sets (open-unlearning's
    aggregate-only log, a log from before the attack existed) or a score that is None or not finite (an item
    without a defined loss). DataError (one line) for a score that is not a number at all."""
    out: dict[str, dict[str, float]] = {}
    for part in MIA_PARTS:
        sub = entry.get(part) if isinstance(entry, Mapping) else None
        by_index = sub.get(metric_log.BY_INDEX) if isinstance(sub, Mapping) else None
        if not isinstance(by_index, Mapping) or not by_index:
            return None
        out[part] = {}
        for i in sorted(by_index, key=lambda k: (len(str(k)), str(k))):  # "0".."n-1" in numeric order
            item = by_index[i]
            v = item.get("score") if isinstance(item, Mapping) else None
            if v is None:
                return None
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                raise DataError(f"{where}: mia_loss {part} item '{i}' has a non-numeric score ({str(v)[:40]!r}); "
                                "re-run `dsunlearn eval` of that model")  # fmt: skip
            if not math.isfinite(v):
                return None
            out[part][str(i)] = float(v)
    return out


def check_items(
    model: Mapping[str, Collection[str]], reference: Mapping[str, Collection[str]], where: str, model_name: str
) -> None:
    """DataError (one line) unless `model` (named `model_name`) and `reference` (the log `where` names) hold the
    same item indices of each set (set -> indices): the counts are compared first, both named in the message,
    then the first index of `model` that `reference` lacks is named. Items are matched by index only."""
    for part in MIA_PARTS:
        m, r = model[part], reference[part]
        if len(m) != len(r):
            raise DataError(f"{where}: its mia_loss has {len(r)} {part} items but {model_name} has {len(m)}; "
                            f"{ITEMS_FIX}")  # fmt: skip
        missing = next((i for i in m if i not in r), None)
        if missing is not None:
            raise DataError(f"{where}: its mia_loss has no {part} item '{missing}' of {model_name}; {ITEMS_FIX}")


def check_reference_items(reference_loss: Any, n_forget: int, n_holdout: int, where: str) -> None:
    """Before any evaluation: the reference log's per-item ``mia_loss`` (where it has one, `loss_items`) has
    the ``n_forget`` forget and ``n_holdout`` holdout items "0".."n-1" this evaluation will score."""
    ref = loss_items(reference_loss, where)
    if ref is not None:
        expected = {"forget": [str(i) for i in range(n_forget)], "holdout": [str(i) for i in range(n_holdout)]}
        check_items(expected, ref, where, "this evaluation")


def reference_entry(model_loss: Any, reference_loss: Any, where: str = "the reference log") -> dict | None:
    """open-unlearning's reference-model attack (``mia_reference``) from two ``mia_loss`` entries, no model run.

    ``mia_loss`` scores item i by LOSS(i) = mean NLL of its scored tokens, which is open-unlearning's
    ``avg_loss`` (`eval.mia.loss_score`), so per item of each set::

        score_i = LOSS_model(i) - LOSS_reference(i)         (`eval.mia.reference_score` on the same tokens)
        AUC     = mia.auc(forget scores, holdout scores)    (as the other attacks)

    `model_loss` is this model's entry, `reference_loss` the reference model's (the retain / retrained model;
    `where` names its log). None, so no entry, when either is missing or has no usable per-item scores
    (`loss_items`), and when both are the same object: a log passed as its own reference (the demos do, to
    get forget quality 1 and PrivLeak 0) would give an all-zero attack that says nothing. DataError (one
    line) when the items differ (`check_items`). Example: model forget [2, 3], holdout [4, 1]; reference
    forget [2.5, 2.5], holdout [2, 2] -> forget [-0.5, 0.5], holdout [2, -1] -> AUC 2/4 = 0.5.
    """
    if model_loss is None or reference_loss is None or model_loss is reference_loss:
        return None
    model, ref = loss_items(model_loss, "this model's log"), loss_items(reference_loss, where)
    if model is None or ref is None:
        return None
    check_items(model, ref, where, "this model's log")
    f, h = ([s - ref[part][i] for i, s in model[part].items()] for part in MIA_PARTS)
    return metric_log.mia(f, h, mia.auc(f, h))


def memorization_entries(stats: Sequence[TokenStats], official: bool = True) -> dict[str, dict]:
    """exact_memorization and extraction_strength of the items (`official`: open-unlearning's no-match rule)."""
    return {
        "exact_memorization": metric_log.per_item([mia.exact_memorization(s.pred, s.label) for s in stats]),
        "extraction_strength": metric_log.per_item([mia.extraction_strength(s.pred, s.label, official) for s in stats]),
    }


def muse_auc_of(entry: dict) -> float:
    """MUSE's AUC (`mia.muse_auc`, exact) of an MIA entry: from its per-item scores where it has them, else
    ``1 - agg_value`` (a log that kept only the aggregate)."""
    if isinstance(entry.get("forget"), dict) and isinstance(entry.get("holdout"), dict):
        f, h = (metric_log.item_values(entry[s]) for s in ("forget", "holdout"))
        if f and h and None not in f and None not in h:
            return mia.muse_auc(f, h)
    return 1.0 - float(entry[metric_log.AGG])


def privleak_entry(muse_auc_model: float, muse_auc_reference: float, source: str) -> dict:
    """MUSE's PrivLeak ``(AUC - AUC_ref) / AUC_ref x 100`` with both AUCs in MUSE's convention (`muse_auc_of`;
    open-unlearning's ``1 - AUC``), and `source` saying where the reference came from."""
    return metric_log.scalar(
        mia.privleak(muse_auc_model, muse_auc_reference),
        auc=muse_auc_model,
        auc_reference=muse_auc_reference,
        reference=source,
    )
