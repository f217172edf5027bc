"""The membership-inference attacks and memorization scores of a model on a member and a non-member set,
as open-unlearning's log entries (`metric_log`), from the per-item token statistics (`token_stats`).

Given the `TokenStats` of the forget (member) items and of the holdout (non-member) items, with their texts::

    mia_loss, mia_zlib, mia_min_k, mia_min_k_plus_plus   (and mia_reference with a reference model's stats)
        -> {"forget": per-item scores, "holdout": per-item scores, "auc": AUC, "agg_value": AUC}
    exact_memorization, extraction_strength (forget items only)
        -> {"agg_value": mean, "value_by_index": {"i": {"score": v}}}

AUC is open-unlearning's (`mia.auc`: near 1 when the forget items are much more likely than the holdout ones,
about 0.5 when the model cannot tell them apart); MUSE's PrivLeak uses the opposite, ``1 - AUC``
(`muse_auc_of`, `privleak_entry`).
Pure: numbers in, entries out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
