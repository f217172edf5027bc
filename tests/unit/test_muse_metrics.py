"""MUSE's metric rules (suites/muse/metrics.py, privleak.py, summary.py) against hand-worked examples and
independent re-statements: the KnowMem prompt and stop words of muse_bench, ROUGE-L F1 from a float64 LCS
over rouge_score's tokenisation (no stemmer), PrivLeak's reference order and its recomputation."""

from __future__ import annotations

import math
import re

import pytest

from dsunlearn.config import DataConfig
from dsunlearn.eval import metric_log, mia
from dsunlearn.suites.muse import metrics, privleak, summary
from helpers.references import lcs_length


def test_knowmem_prompt_is_muse_benchs_few_shot_format():
    p = metrics.knowmem_prompt([("Q1?", "A1"), ("Q2?", "A2")], "Q3?")
    assert p == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    assert metrics.knowmem_prompt([], "Q?") == "Question: Q?\nAnswer: "


@pytest.mark.parametrize(
    "text, cut",
    [
        ("Paris\n\nQuestion: where?", "Paris"),
        ("Paris\nQuestion: where?", "Paris"),
        ("Paris Question: where?", "Paris "),
        ("Paris, France", "Paris, France"),
        ("\n\nParis", ""),
        ("a\nb\n\nc", "a\nb"),
    ],
)
def test_stop_words_cut_as_muse_bench(text, cut):
    assert metrics.cut_at_stop_words(text) == cut


def _tokens(text: str) -> list[str]:
    # rouge_score's default tokenizer without a stemmer: lowercase, non-alphanumerics to spaces, split
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


@pytest.mark.parametrize(
    "ref, gen",
    [
        ("the cat sat on the mat", "the cat lay on a mat"),
        ("Camna Lambell", "Camna Lambell hopes"),
        ("Bank paid for the music, the lights!", "bank PAID the lights"),
        ("one two three", ""),
        ("running runs", "run ran"),  # no stemming: nothing matches
    ],
)
def test_rouge_l_f1_equals_a_float64lcs_length(ref, gen):
    r, g = _tokens(ref), _tokens(gen)
    lcs = lcs_length(r, g)
    p, rec = (lcs / len(g) if g else 0.0), (lcs / len(r) if r else 0.0)
    f1 = 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)
    got_f1, got_rec = metrics.rouge_l(ref, gen)
    assert math.isclose(got_f1, f1, abs_tol=1e-12) and math.isclose(got_rec, rec, abs_tol=1e-12)


def test_stemmer_setting_changes_only_inflections():
    assert metrics.rouge_l("running runs", "run ran", stemmer=False)[0] == 0.0
    assert metrics.rouge_l("running runs", "run ran", stemmer=True)[0] == pytest.approx(0.5)  # run~running


def test_hand_worked_rouge():
    # ref 6 tokens, gen 6 tokens, LCS "the cat on mat" = 4 -> P = R = 4/6 -> F1 = 2/3
    assert metrics.rouge_l("the cat sat on the mat", "the cat lay on a mat")[0] == pytest.approx(2 / 3)
    assert metrics.mean_x100([0.5, 1.0, 0.0]) == pytest.approx(50.0)


def _privleak_log(forget, holdout, ref=(0.5, "x")):
    return {"privleak": privleak.privleak(forget, holdout, ref)}


def test_privleak_hand_worked_and_reference_order():
    # Min-K scores: forget [1, 2] (members: low), holdout [3, 4] -> MUSE AUC = P(forget > holdout) = 0
    log = _privleak_log([1.0, 2.0], [3.0, 4.0], privleak.config_reference(DataConfig()))
    p = log["privleak"]
    assert p["auc"] == 0.0 and p["auc_reference"] == mia.MUSE_AUC_RETRAIN["news"]
    assert p["agg_value"] == pytest.approx(-100.0) and "AUC_RETRAIN['news']" in p["reference"]
    # one tie and one inversion: forget [1, 3], holdout [3, 2] -> pairs (1>3 0, 1>2 0, 3>3 .5, 3>2 1) -> 0.375
    q = _privleak_log([1.0, 3.0], [3.0, 2.0], (0.5, "r"))["privleak"]
    assert q["auc"] == pytest.approx(0.375) and q["agg_value"] == pytest.approx((0.375 - 0.5) / 0.5 * 100)
    # the config's reference wins; else the retrained model's log (ours, or open-unlearning's mia_min_k)
    books = DataConfig()
    books.muse.corpus = "books"
    assert privleak.config_reference(books)[0] == mia.MUSE_AUC_RETRAIN["books"]
    books.muse.auc_retrain = 0.42
    assert privleak.config_reference(books) == (0.42, privleak.CONFIG_REFERENCE)
    retrained = _privleak_log([2.0, 3.0], [3.0, 2.0])  # MUSE AUC = (0 + .5 + .5 + 1) / 4 = 0.5
    assert privleak.log_reference(retrained) == (0.5, "retain_log (privleak)")
    ou = {"mia_min_k": metric_log.mia([2.0, 3.0], [3.0, 2.0], mia.auc([2.0, 3.0], [3.0, 2.0]))}
    assert privleak.log_reference(ou) == (0.5, "retain_log (mia_min_k)")
    assert privleak.log_reference({"mia_min_k": {"agg_value": 0.7}}) == (pytest.approx(0.3), "retain_log (mia_min_k)")
    assert privleak.log_reference({"forget_verbmem_ROUGE": {"agg_value": 0.1}}) is None


def test_with_reference_recomputes_privleak_from_the_logs_scores():
    log = _privleak_log([1.0, 3.0], [3.0, 2.0], (0.5, "muse_bench"))
    retrained = _privleak_log([2.0, 3.0], [2.5, 1.0])  # MUSE AUC = (0 + 1 + 1 + 1) / 4 = 0.75
    out = privleak.with_reference(log, retrained)["privleak"]
    assert out["auc_reference"] == pytest.approx(0.75) and out["reference"] == "retain_log (privleak)"
    assert out["agg_value"] == pytest.approx((0.375 - 0.75) / 0.75 * 100)
    assert privleak.with_reference(log, None) == log  # nothing given: unchanged
    pinned = _privleak_log([1.0, 3.0], [3.0, 2.0], (0.6, privleak.CONFIG_REFERENCE))
    assert privleak.with_reference(pinned, retrained) == pinned  # a reference set in the config is kept


def test_summary_names_and_x100():
    log = {
        "forget_verbmem_ROUGE": metric_log.per_item([0.5, 1.0], "rougeL_f1"),
        "forget_knowmem_ROUGE": metric_log.per_item([0.25], "rougeL_f1"),
        "retain_knowmem_ROUGE": metric_log.per_item([1.0], "rougeL_f1"),
        "exact_memorization": metric_log.per_item([None, 0.5]),
        **_privleak_log([1.0, 2.0], [3.0, 4.0]),
    }
    s = summary.summarize(log)
    assert s["verbmem_f"] == pytest.approx(75.0) and s["knowmem_f"] == 25.0 and s["knowmem_r"] == 100.0
    assert s["exact_memorization"] == 0.5 and s["privleak"] == pytest.approx(-100.0) and s["privleak_auc"] == 0.0
    table = summary.format_table(s)
    assert "VerbMem forget" in table and "PrivLeak (%)" in table and "mia_loss" not in table


def test_hostile_or_degenerate_reference_logs():
    from dsunlearn.errors import DataError

    # our privleak entry without per-item scores: its AUC is "auc", not 1 - agg_value (agg_value is the %)
    assert privleak.log_reference({"privleak": {"agg_value": -40.0, "auc": 0.3}}) == (
        pytest.approx(0.3),
        "retain_log (privleak)",
    )
    for bad in ({"privleak": {"agg_value": 1.0}}, {"mia_min_k": {"agg_value": None}},
                {"mia_min_k": {"agg_value": 0.5, "forget": {"value_by_index": {"0": {"score": "x"}}},
                               "holdout": {"value_by_index": {"0": {"score": 1.0}}}}},
                {"mia_min_k": {"agg_value": 7.0}}):  # fmt: skip
        with pytest.raises(DataError) as e:
            privleak.log_reference(bad)
        assert "\n" not in str(e.value) and "retrained model's log" in str(e.value)
    # a reference AUC of 0 leaves PrivLeak undefined (None, with the reason), not a crash; the summary omits it
    entry = privleak.privleak([1.0, 2.0], [3.0, 4.0], (0.0, "retain_log (privleak)"))
    assert entry["agg_value"] is None and "reference AUC is 0" in entry["note"]
    assert "privleak" not in summary.summarize({"privleak": entry}) and summary.summarize({"privleak": entry})[
        "privleak_auc"] == 0.0  # fmt: skip
