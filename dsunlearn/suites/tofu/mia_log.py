"""TOFU's membership-inference log: open-unlearning's ``TOFU_EVAL.json`` next to the TOFU log; PrivLeak, summary.

In memory a TOFU log is ``{file name: content}`` (TOFU's four split files, `log.py`); an evaluation with
``eval.mia`` adds ``MIA_FILE``: open-unlearning's layout (`eval/metric_log.py`) of

    mia_loss, mia_zlib, mia_min_k, mia_min_k_plus_plus    forget (members) vs holdout (non-members): per-item
                                                           scores of both and the AUC (open-unlearning's, ~1 when
                                                           the forget answers are remembered, ~0.5 when not)
    exact_memorization, extraction_strength                per forget item, and their mean
    privleak                                               (written only): MUSE's PrivLeak of mia_min_k
    mia_reference                                          (written only, with a retain log holding per-item
                                                           mia_loss): mia_loss minus the retain model's, per item

On disk the TOFU part is ``eval_log_aggregated.json`` (unchanged: TOFU's own format) and this part is
``MIA_FILE`` in the same directory, as open-unlearning names its TOFU log (``<benchmark>_EVAL.json``), so that
its published retain-model logs can serve as PrivLeak's reference. A TOFU log from TOFU's own code has no such
file: it loads and summarizes without these numbers.

PrivLeak = (AUC - AUC_ref) / AUC_ref x 100 with both AUCs in MUSE's convention (1 - open-unlearning's, see
`eval/mia.py`), AUC the model's ``mia_min_k``; AUC_ref the retain model's ``mia_min_k`` when a retain log with
this file is given ("retain_log"), else open-unlearning's ``ref_value`` ("default", its privleak.yaml).
mia_reference is open-unlearning's reference-model attack with the retain model as reference, taken from the
two logs' per-item mia_loss scores (`eval.mia_attacks.reference_entry`). Both are recomputed against the
retain log given each time (`DERIVED`): a stored one is never read back.
Pure: no ranks, no torch; `load_log` and `attach` are the only file access.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log
from dsunlearn.eval.mia_attacks import ATTACKS, REFERENCE_ATTACK, muse_auc_of, privleak_entry, reference_entry
from dsunlearn.suites.tofu import log as tofu_log

MIA_FILE = "TOFU_EVAL.json"  # open-unlearning's TOFUEvaluator: f"{name}_EVAL.json" with name "TOFU"
PRIVLEAK_ATTACK = "mia_min_k"  # open-unlearning's privleak.yaml pre-computes mia_min_k
DEFAULT_REF_VALUE = 0.5  # open-unlearning's privleak.yaml ref_value: an AUC in its convention (MUSE's: 1 - 0.5)
MEMORIZATION = ("exact_memorization", "extraction_strength")
DERIVED = ("privleak", REFERENCE_ATTACK)  # entries that depend on the retain log: recomputed, never read back

# Summary key -> its name in the printed table, in display order (open-unlearning's metric names in the keys).
SUMMARY_NAMES: dict[str, str] = {
    "privleak": "PrivLeak (mia_min_k vs the reference; ~0 = no more leak than the retain model)",
    "privleak_reference_auc": "PrivLeak reference: MUSE AUC (retain log's mia_min_k, else 1 - 0.5)",
    "mia_min_k_auc": "MIA Min-K% AUC (forget vs holdout)",
    "mia_min_k_plus_plus_auc": "MIA Min-K%++ AUC",
    "mia_loss_auc": "MIA LOSS AUC",
    "mia_zlib_auc": "MIA zlib AUC",
    "mia_reference_auc": "MIA reference AUC (LOSS minus the retain model's LOSS)",
    "exact_memorization": "Exact memorization (forget)",
    "extraction_strength": "Extraction strength (forget)",
}


def mia_of(log: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The MIA part of a TOFU log (in memory or loaded), or None where it has none."""
    return None if log is None else log.get(MIA_FILE)


def tofu_part(log: Mapping[str, Any]) -> dict[str, Any]:
    """The log without its MIA part: what ``eval_log_aggregated.json`` holds, TOFU's format exactly."""
    return {k: v for k, v in log.items() if k != MIA_FILE}


def _auc(entry: Mapping[str, Any], where: str) -> float:
    try:
        return muse_auc_of(dict(entry))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{where}: '{PRIVLEAK_ATTACK}' has no usable AUC ({type(e).__name__}: {str(e)[:60]}); re-evaluate that "
            f"model with `dsunlearn eval` (eval.mia=true), or remove its {MIA_FILE} to use the default reference"
        ) from None


def reference(retain_log: Mapping[str, Any] | None, where: str = "retain log") -> tuple[float, str]:
    """(PrivLeak's reference AUC in MUSE's convention, its source): the retain log's ``mia_min_k`` where it
    has one ("retain_log"), else ``1 - DEFAULT_REF_VALUE`` ("default"). DataError for an unusable entry."""
    entry = (mia_of(retain_log) or {}).get(PRIVLEAK_ATTACK)
    if entry is None:
        return 1.0 - DEFAULT_REF_VALUE, "default"
    return _auc(entry, where), "retain_log"


def privleak(mia: Mapping[str, Any], retain_log: Mapping[str, Any] | None) -> dict:
    """The ``privleak`` entry of a model's MIA part against `retain_log`'s reference (`reference`). Undefined
    (``agg_value`` None, with the reason) when the reference's MUSE AUC is 0: a retain model that tells every
    forget answer from every holdout one."""
    auc = _auc(mia[PRIVLEAK_ATTACK], "model log")
    ref, source = reference(retain_log)
    if ref <= 0:
        return metric_log.scalar(None, auc=auc, auc_reference=ref, reference=source, note="reference AUC is 0")
    return privleak_entry(auc, ref, source)


def reference_attack(mia: Mapping[str, Any], retain_log: Mapping[str, Any] | None) -> dict | None:
    """The ``mia_reference`` entry of a model's MIA part against the retain log's per-item ``mia_loss``
    (`reference_entry`); None without a retain log, without per-item mia_loss in either, or for a log given
    as its own reference. DataError (one line) when the two logs' items differ."""
    ref = (mia_of(retain_log) or {}).get("mia_loss")
    return reference_entry(mia.get("mia_loss"), ref, "the retain log")


def file_content(log: Mapping[str, Any], retain_log: Mapping[str, Any] | None = None) -> dict | None:
    """What ``MIA_FILE`` holds for `log`: its MIA part plus ``privleak`` and, where `reference_attack` gives
    one, ``mia_reference``, keys sorted (as open-unlearning writes its logs); None for a log without an MIA
    part."""
    mia = mia_of(log)
    if mia is None:
        return None
    out = {k: v for k, v in mia.items() if k not in DERIVED}
    if PRIVLEAK_ATTACK in out:
        out["privleak"] = privleak(mia, retain_log)
    if (entry := reference_attack(mia, retain_log)) is not None:
        out[REFERENCE_ATTACK] = entry
    return dict(sorted(out.items()))


def summary(log: Mapping[str, Any], retain_log: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The flat summary keys of `log`'s MIA part (`SUMMARY_NAMES`; {} without one): each attack's AUC as
    ``<attack>_auc``, the forget set's mean exact memorization and extraction strength, PrivLeak against
    `retain_log`'s reference and that reference's AUC, and ``mia_reference_auc`` against `retain_log`
    (`reference_attack`; both recomputed: a stored ``privleak`` or ``mia_reference`` is not read)."""
    mia = mia_of(log)
    if mia is None:
        return {}
    out: dict[str, float] = {}
    if PRIVLEAK_ATTACK in mia:
        entry = privleak(mia, retain_log)
        if entry[metric_log.AGG] is not None:
            out["privleak"] = entry[metric_log.AGG]
        out["privleak_reference_auc"] = entry["auc_reference"]
    values = {f"{a}_auc": mia[a][metric_log.AGG] for a in ATTACKS if a in mia}
    if (attack := reference_attack(mia, retain_log)) is not None:
        values[f"{REFERENCE_ATTACK}_auc"] = attack[metric_log.AGG]
    values.update({m: mia[m][metric_log.AGG] for m in MEMORIZATION if m in mia})
    out.update({k: float(v) for k, v in values.items() if v is not None})
    return {k: out[k] for k in SUMMARY_NAMES if k in out}


def mia_path(path: str | os.PathLike[str]) -> Path:
    """Where the MIA file of the TOFU log at `path` is: in that directory, or next to that file."""
    p = Path(path)
    return (p if p.is_dir() else p.parent) / MIA_FILE


def attach(log: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """`log` (read from `path`) with its MIA part: ``MIA_FILE`` next to it, checked (`metric_log.load`), where
    there is one. A TOFU log without it is returned as it is."""
    f = mia_path(path)
    if f.is_file():
        log[MIA_FILE] = metric_log.load(f)
    elif MIA_FILE in log:  # an in-memory log saved whole: check what it holds as the file would be
        log[MIA_FILE] = metric_log.check(log[MIA_FILE], f"{path}: {MIA_FILE}")
    return log


def load_log(path: str | os.PathLike[str], splits: Iterable[str] = tofu_log.SPLITS) -> dict[str, Any]:
    """A TOFU log from disk (`log.load_log`, for `splits`) with its MIA part where it has one (`attach`)."""
    return attach(tofu_log.load_log(path, splits=splits), path)
