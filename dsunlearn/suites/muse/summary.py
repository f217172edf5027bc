"""The flat summary of a MUSE log (pure) and its terminal table.

verbmem_f, knowmem_f, knowmem_r   mean ROUGE-L F1 x 100 (MUSE's VerbMem / KnowMem; lower on forget is
                                  forgetting, KnowMem_r is the utility kept)
privleak                          (AUC - AUC_ref) / AUC_ref x 100: about 0 = leaks no more than a model
                                  never trained on the forget set; about -100 = remembers it
privleak_auc, privleak_reference_auc   MUSE-convention AUCs behind it
mia_<attack>_auc                  open-unlearning-convention AUC of each MIA (about 0.5 = cannot tell);
                                  mia_reference_auc only where the log has that entry (a retrained model's log)
exact_memorization, extraction_strength   on verbmem/forget (open-unlearning's)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dsunlearn.eval.metric_log import AGG
from dsunlearn.eval.mia_attacks import ATTACKS, REFERENCE_ATTACK
from dsunlearn.suites.muse.metrics import KNOWMEM, VERBMEM

ROWS: tuple[tuple[str, str], ...] = (
    ("verbmem_f", "VerbMem forget (ROUGE-L F1 x100)"),
    ("knowmem_f", "KnowMem forget (ROUGE-L F1 x100)"),
    ("knowmem_r", "KnowMem retain (ROUGE-L F1 x100)"),
    ("privleak", "PrivLeak (%)"),
    ("privleak_auc", "PrivLeak AUC (MUSE convention)"),
    ("privleak_reference_auc", "PrivLeak reference AUC"),
    *((f"{a}_auc", f"{a} AUC") for a in (*ATTACKS, REFERENCE_ATTACK)),
    ("exact_memorization", "Exact memorization (verbmem forget)"),
    ("extraction_strength", "Extraction strength (verbmem forget)"),
)


def summarize(log: Mapping) -> dict[str, float]:
    """The numbers of a MUSE log (keys in `ROWS`; those whose entry the log lacks are left out)."""
    out: dict[str, float] = {}
    names = {"verbmem_f": VERBMEM, **dict(zip(("knowmem_f", "knowmem_r"), KNOWMEM, strict=True))}
    for key, metric in names.items():
        if metric in log and log[metric][AGG] is not None:
            out[key] = 100.0 * log[metric][AGG]
    if "privleak" in log:
        p = log["privleak"]
        if p[AGG] is not None:  # None: undefined (a reference AUC of 0), left out like a missing number
            out["privleak"] = p[AGG]
        for key, field in (("privleak_auc", "auc"), ("privleak_reference_auc", "auc_reference")):
            if field in p:
                out[key] = p[field]
    for attack in (*ATTACKS, REFERENCE_ATTACK):
        if attack in log:
            out[f"{attack}_auc"] = log[attack][AGG]
    for key in ("exact_memorization", "extraction_strength"):
        if key in log and log[key][AGG] is not None:
            out[key] = log[key][AGG]
    return out


def format_table(summary: Mapping[str, float]) -> str:
    rows = [(label, summary[key]) for key, label in ROWS if summary.get(key) is not None]
    width = max(len(label) for label, _ in rows) if rows else 0
    return "\n".join(f"{label:<{width}}  {value:10.4f}" for label, value in rows)


def format_json(summary: Mapping[str, float]) -> str:
    return json.dumps(dict(summary), indent=2)
