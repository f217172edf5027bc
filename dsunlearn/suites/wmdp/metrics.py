"""WMDP log names and the group accuracies (pure).

An entry ``wmdp_bio_acc`` / ``mmlu_anatomy_acc`` holds one set's per-question 0/1 values; a group's accuracy
(``wmdp_acc``, ``mmlu_acc``) is lm_eval's ``weight_by_size: True`` aggregate: the set accuracies weighted by
their question counts, i.e. the mean over every question of the group (not the mean of the set accuracies).
MMLU's category groups (``mmlu_stem_acc``, ``mmlu_other_acc``, ``mmlu_social_sciences_acc``,
``mmlu_humanities_acc``) are the same aggregate over the subjects lm_eval files under each category
(``mmlu_categories.py``); a category is reported only when at least one of its subjects was evaluated, and a
subject outside lm_eval's 57 (a local or synthetic one) counts in ``mmlu_acc`` but in no category. With every
subject in the table, ``mmlu_acc`` is the question-count-weighted mean of the category values, as lm_eval's
``mmlu`` group is of its four subgroups.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from dsunlearn.eval import metric_log
from dsunlearn.suites.wmdp.mmlu_categories import CATEGORIES, CATEGORY_OF

LOG_FILE = "WMDP_EVAL.json"
GROUPS = ("wmdp", "mmlu")
METRICS = ("acc", "acc_norm")


def entry_name(set_name: str, metric: str) -> str:
    """'wmdp/bio', 'acc' -> 'wmdp_bio_acc'."""
    return f"{set_name.replace('/', '_')}_{metric}"


def set_entries(log: Mapping, group: str, metric: str) -> dict[str, Mapping]:
    """The per-question entries of one group and metric: {entry name: entry}."""
    suffix = f"_{metric}"
    return {k: v for k, v in log.items() if k.startswith(f"{group}_") and k.endswith(suffix)
            and metric_log.BY_INDEX in v and (metric == "acc_norm" or not k.endswith("_acc_norm"))}  # fmt: skip


def weighted_accuracy(entries: Mapping[str, Mapping], metric: str) -> float | None:
    """Sum of the 0/1 values over all questions / their number (None for no questions)."""
    values = [v for e in entries.values() for v in metric_log.item_values(e, metric)]
    return math.fsum(values) / len(values) if values else None


def category_of(entry: str, metric: str) -> str | None:
    """lm_eval's MMLU category of a subject's entry ('mmlu_anatomy_acc', 'acc' -> 'stem'); None outside its table."""
    return CATEGORY_OF.get(entry.removeprefix("mmlu_").removesuffix(f"_{metric}"))


def group_entries(log: Mapping) -> dict[str, dict]:
    """{"wmdp_acc": scalar, "mmlu_acc": scalar, "mmlu_stem_acc": scalar, ...} of the groups, MMLU categories
    (those with an evaluated subject) and metrics the log holds; each scalar carries its number of sets."""
    out = {}
    for group in GROUPS:
        for metric in METRICS:
            entries = set_entries(log, group, metric)
            if entries:
                out[f"{group}_{metric}"] = metric_log.scalar(weighted_accuracy(entries, metric), n_sets=len(entries))
    for metric in METRICS:
        subjects = set_entries(log, "mmlu", metric)
        for category in CATEGORIES:
            members = {k: v for k, v in subjects.items() if category_of(k, metric) == category}
            if members:
                out[f"mmlu_{category}_{metric}"] = metric_log.scalar(weighted_accuracy(members, metric),
                                                                     n_sets=len(members))  # fmt: skip
    return out
