"""MMLU's category groups as lm-evaluation-harness reports them (mmlu_stem, mmlu_other, mmlu_social_sciences,
mmlu_humanities: weight_by_size over their subjects): the subject table, hand-worked group values, agreement
with mmlu_acc, the summary's order, and the refusal of a subject named like a category."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log
from dsunlearn.suites.wmdp import data
from dsunlearn.suites.wmdp.metrics import group_entries
from dsunlearn.suites.wmdp.mmlu_categories import CATEGORIES, CATEGORY_OF
from dsunlearn.suites.wmdp.summary import format_table, summarize


def _entry(values, metric="acc"):
    return metric_log.per_item([float(v) for v in values], metric)


def test_every_subject_we_evaluate_is_in_lm_evals_table_and_nothing_else():
    assert len(data.MMLU_SUBJECTS) == 57
    assert set(CATEGORY_OF) == set(data.MMLU_SUBJECTS)
    assert set(CATEGORY_OF.values()) == set(CATEGORIES) == {"stem", "other", "social_sciences", "humanities"}
    # a few read off lm_eval's task YAMLs (lm_eval/tasks/mmlu/default/mmlu_<subject>.yaml, tag mmlu_<category>)
    assert CATEGORY_OF["astronomy"] == "stem" and CATEGORY_OF["high_school_geography"] == "social_sciences"
    assert CATEGORY_OF["professional_law"] == "humanities" and CATEGORY_OF["virology"] == "other"


def test_hand_worked_category_values_weight_by_size():
    """stem: anatomy 1/2 and astronomy 3/3 -> 4/5 = 0.8 (the mean of the two accuracies would be 0.75);
    humanities: philosophy 1/4; geography (the synthetic subject, not lm_eval's) counts in mmlu_acc only:
    mmlu_acc = (1 + 3 + 1 + 1) / (2 + 3 + 4 + 1) = 0.6. No subject of other / social_sciences: not reported."""
    log = {"mmlu_anatomy_acc": _entry([1, 0]), "mmlu_astronomy_acc": _entry([1, 1, 1]),
           "mmlu_philosophy_acc": _entry([0, 0, 0, 1]), "mmlu_geography_acc": _entry([1]),
           "wmdp_bio_acc": _entry([0, 1])}  # fmt: skip
    groups = group_entries(log)
    assert set(groups) == {"wmdp_acc", "mmlu_acc", "mmlu_stem_acc", "mmlu_humanities_acc"}
    assert groups["mmlu_stem_acc"] == {"agg_value": pytest.approx(0.8, abs=1e-15), "n_sets": 2}
    assert groups["mmlu_humanities_acc"] == {"agg_value": 0.25, "n_sets": 1}
    assert groups["mmlu_acc"]["agg_value"] == pytest.approx(0.6, abs=1e-15)
    assert groups["wmdp_acc"]["agg_value"] == 0.5  # the WMDP subsets are in no MMLU category
    s = summarize({**log, **groups})
    assert s["mmlu_stem_acc"] == pytest.approx(0.8) and s["mmlu_humanities_acc"] == 0.25
    assert summarize(log) == s  # recomputed from the per-question values, as for a log read from disk
    rows = [line.split()[0] for line in format_table(s).splitlines()]
    assert rows == ["wmdp_acc", "wmdp_bio_acc", "mmlu_acc", "mmlu_stem_acc", "mmlu_humanities_acc",
                    "mmlu_anatomy_acc", "mmlu_astronomy_acc", "mmlu_geography_acc", "mmlu_philosophy_acc"]  # fmt: skip


def test_acc_norm_categories_only_where_acc_norm_is_logged():
    log = {"mmlu_anatomy_acc": _entry([1, 0]), "mmlu_anatomy_acc_norm": _entry([1, 1], "acc_norm"),
           "mmlu_sociology_acc": _entry([0])}  # fmt: skip
    groups = group_entries(log)
    assert groups["mmlu_stem_acc_norm"]["agg_value"] == 1.0 and groups["mmlu_stem_acc"]["agg_value"] == 0.5
    assert groups["mmlu_social_sciences_acc"]["agg_value"] == 0.0
    assert "mmlu_social_sciences_acc_norm" not in groups  # sociology has no acc_norm entry
    assert groups["mmlu_acc_norm"]["agg_value"] == 1.0


def test_categories_agree_with_mmlu_acc_over_all_57_subjects():
    """Random 0/1 values over every subject (sizes 1..9): each category equals an exact rational reference, and
    mmlu_acc is the question-count-weighted mean of the four categories, as lm_eval's mmlu group is."""
    rng = random.Random(0)
    values = {s: [rng.randint(0, 1) for _ in range(rng.randint(1, 9))] for s in data.MMLU_SUBJECTS}
    groups = group_entries({f"mmlu_{s}_acc": _entry(v) for s, v in values.items()})
    sizes = {}
    for c in CATEGORIES:
        members = [values[s] for s in values if CATEGORY_OF[s] == c]
        sizes[c] = sum(len(v) for v in members)
        want = Fraction(sum(sum(v) for v in members), sizes[c])
        assert groups[f"mmlu_{c}_acc"]["agg_value"] == pytest.approx(float(want), abs=1e-15)
        assert groups[f"mmlu_{c}_acc"]["n_sets"] == len(members)
    weighted = sum(Fraction(groups[f"mmlu_{c}_acc"]["agg_value"]) * sizes[c] for c in CATEGORIES) / sum(sizes.values())
    assert groups["mmlu_acc"]["agg_value"] == pytest.approx(float(weighted), abs=1e-14)
    assert sum(g["n_sets"] for k, g in groups.items() if k != "mmlu_acc") == 57


def test_a_subject_named_like_a_category_is_refused():
    cfg = load_config(None, ["data.suite=wmdp", "data.source=local", "data.path=.",
                             "data.wmdp.mmlu_subjects=anatomy,stem"]).data  # fmt: skip
    with pytest.raises(DataError, match="subject named 'stem' clashes with lm-eval's MMLU category group mmlu_stem"):
        data.mmlu_subjects(cfg)
