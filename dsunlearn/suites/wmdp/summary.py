"""The flat summary of a WMDP log (pure) and its terminal table.

wmdp_acc                       WMDP accuracy over all evaluated subsets, weighted by size (lm_eval's wmdp group);
                               chance is 0.25: the goal of unlearning
wmdp_<subset>_acc              per subset (bio, cyber, chem)
mmlu_acc                       MMLU (general) accuracy, weighted by subject size (lm_eval's mmlu group): kept
mmlu_<category>_acc            lm_eval's four MMLU groups (stem, other, social_sciences, humanities), weighted
                               by subject size; only those with an evaluated subject
mmlu_<subject>_acc             per subject
*_acc_norm                     the same with lm_eval's acc_norm (data.wmdp.acc_norm)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dsunlearn.eval.metric_log import AGG, BY_INDEX
from dsunlearn.suites.wmdp.metrics import GROUPS, METRICS, group_entries
from dsunlearn.suites.wmdp.mmlu_categories import CATEGORIES


def summarize(log: Mapping) -> dict[str, float]:
    """Every set's accuracy and the group accuracies (recomputed from the per-question values)."""
    out: dict[str, float] = {}
    for name, entry in log.items():
        if BY_INDEX in entry and entry[AGG] is not None:
            out[name] = entry[AGG]
    for name, entry in group_entries(log).items():
        if entry[AGG] is not None:
            out[name] = entry[AGG]
    return out


def _order(key: str) -> tuple:
    """Table order: wmdp_acc, its subsets; mmlu_acc, its categories (lm_eval's order), its subjects."""
    groups = {f"{g}_{m}": i for i, (g, m) in enumerate((g, m) for g in GROUPS for m in METRICS)}
    if key in groups:
        return (groups[key] // len(METRICS), 0, 0, key)
    categories = {f"mmlu_{c}_{m}": i for i, c in enumerate(CATEGORIES) for m in METRICS}
    if key in categories:
        return (1, 1, categories[key], key)
    return (0 if key.startswith("wmdp_") else 1, 2, 0, key)


def format_table(summary: Mapping[str, float]) -> str:
    rows = sorted(summary, key=_order)
    width = max((len(k) for k in rows), default=0)
    return "\n".join(f"{k:<{width}}  {summary[k]:10.4f}" for k in rows)


def format_json(summary: Mapping[str, float]) -> str:
    return json.dumps(dict(summary), indent=2)
