"""MUSE's PrivLeak and its reference AUC, and the other number that needs the retrained model's log: the
reference-model attack (pure: entries in, entries out; no torch).

PrivLeak = (AUC - AUC_ref) / AUC_ref x 100 with MUSE's AUC (`eval.mia.muse_auc`) of the Min-K% scores of
privleak/forget (label 0) vs privleak/holdout (label 1). The reference, in this order: ``data.muse.auc_retrain``
when set; the retrained model's own log when given (its ``privleak`` entry where that is ours, else
``mia_min_k``, whose AUC is the other convention: `muse_auc_of` converts; open-unlearning's ``MUSE_EVAL.json``
has both, its ``privleak`` holding only the PrivLeak %, so its ``mia_min_k`` is read); MUSE's published
AUC_RETRAIN of the corpus. The entry records which one was used (``reference``) and both AUCs.

``mia_reference`` (open-unlearning's reference attack with the retrained model as reference, as its
``muse-bench/MUSE-<corpus>_retrain``): per privleak/forget and privleak/holdout text, this model's ``mia_loss``
minus the retrained model's, from the two logs (`eval.mia_attacks.reference_entry`); only with a retrained
model's log that holds per-item ``mia_loss`` scores of the same items.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dsunlearn.config import DataConfig
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log, mia
from dsunlearn.eval.mia_attacks import REFERENCE_ATTACK, muse_auc_of, privleak_entry, reference_entry

CONFIG_REFERENCE = "data.muse.auc_retrain"


def config_reference(data_cfg: DataConfig) -> tuple[float, str]:
    """(PrivLeak's reference AUC in MUSE's convention, where it came from) before any retrained model's log:
    ``data.muse.auc_retrain`` if set, else MUSE's published value for the corpus."""
    m = data_cfg.muse
    if m.auc_retrain is not None:
        return m.auc_retrain, CONFIG_REFERENCE
    return mia.MUSE_AUC_RETRAIN[m.corpus], f"muse_bench AUC_RETRAIN['{m.corpus}'] (no retrained model's log)"


def _holds_auc(entry: Mapping) -> bool:
    """Whether a ``privleak`` entry is ours (an ``auc``, or the per-item scores of both sets): open-unlearning's
    is ``{"agg_value": PrivLeak %}`` alone, against the reference of its own run, and holds no AUC."""
    return "auc" in entry or all(isinstance(entry.get(s), Mapping) for s in ("forget", "holdout"))


def log_reference(retain_log: Mapping) -> tuple[float, str] | None:
    """The reference AUC from the retrained model's log: its ``privleak`` entry (ours: per-item Min-K% scores,
    else its ``auc``) or ``mia_min_k`` (open-unlearning's ``MUSE_EVAL.json`` has it, with a ``privleak`` entry
    that holds only its PrivLeak %, skipped; per-item scores, else ``1 - agg_value``); None if it has neither.
    DataError (one line) for an entry whose numbers are unusable, or an open-unlearning ``privleak`` alone."""
    for key in ("privleak", "mia_min_k"):
        entry = retain_log.get(key)
        if not isinstance(entry, Mapping) or (key == "privleak" and not _holds_auc(entry)):
            continue
        view = dict(entry)
        if key == "privleak":  # its agg_value is the PrivLeak %, its AUC is under "auc" (MUSE convention)
            view[metric_log.AGG] = 1.0 - float(entry["auc"]) if _is_number(entry.get("auc")) else None
        try:
            auc = muse_auc_of(view)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"the retrained model's log: '{key}' has no usable AUC ({type(e).__name__}: {str(e)[:60]}); "
                "re-evaluate that model with `dsunlearn eval`, or set data.muse.auc_retrain"
            ) from None
        if not 0.0 <= auc <= 1.0:
            raise DataError(f"the retrained model's log: '{key}' gives an AUC of {auc:.4g}, not in [0, 1]; "
                            "re-evaluate that model with `dsunlearn eval`")  # fmt: skip
        return auc, f"retain_log ({key})"
    if isinstance(retain_log.get("privleak"), Mapping):
        raise DataError(
            "the retrained model's log: its 'privleak' holds only a PrivLeak % (open-unlearning's entry, against "
            "its own run's reference), no AUC, and it has no 'mia_min_k'; give that model's whole MUSE_EVAL.json "
            "(with mia_min_k), or set data.muse.auc_retrain"
        )
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def privleak(forget_scores: list[float], holdout_scores: list[float], ref: tuple[float, str]) -> dict:
    """The ``privleak`` entry: the per-item Min-K% scores of both sets (so a later reference can be applied),
    both AUCs and PrivLeak; undefined (``agg_value`` None, with the reason) when the reference AUC is 0."""
    entry = metric_log.mia(forget_scores, holdout_scores, mia.auc(forget_scores, holdout_scores))
    model_auc = mia.muse_auc(forget_scores, holdout_scores)
    if ref[0] <= 0:
        note = "reference AUC is 0 (a retrained model that tells every forget text from every holdout one)"
        return {**entry, **metric_log.scalar(None, auc=model_auc, auc_reference=ref[0], reference=ref[1], note=note)}
    return {**entry, **privleak_entry(model_auc, ref[0], ref[1])}


def with_reference(log: Mapping[str, Any], retain_log: Mapping | None) -> dict:
    """`log` against the retrained model's log where one is given (pure; `log` unchanged without one): PrivLeak
    against its reference unless the config set it, and ``mia_reference`` against its ``mia_loss`` (replaced,
    or removed where the two logs cannot give it: `reference_entry`; DataError when their items differ). The
    log's per-item scores are reused: nothing is evaluated again."""
    out, p = dict(log), log["privleak"]
    ref = log_reference(retain_log) if retain_log is not None else None
    if ref is not None and p.get("reference") != CONFIG_REFERENCE:
        f, h = metric_log.item_values(p["forget"]), metric_log.item_values(p["holdout"])
        out["privleak"] = privleak(f, h, ref)
    if retain_log is not None:
        out.pop(REFERENCE_ATTACK, None)  # one against another reference must not stay
        entry = reference_entry(log.get("mia_loss"), retain_log.get("mia_loss"), "the retrained model's log")
        if entry is not None:
            out[REFERENCE_ATTACK] = entry
    return out
