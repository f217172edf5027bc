"""TOFU metrics: hand-worked values, independent float64 re-derivations, edge cases, a full synthetic log."""

import itertools
import math
import re
import warnings

import numpy as np
import pytest
from scipy import stats

from dsunlearn.errors import DataError
from dsunlearn.suites.tofu import metrics as M
from dsunlearn.suites.tofu.log import FORGET, REAL_AUTHORS, RETAIN, SPLITS, WORLD_FACTS
from helpers.references import lcs_length

LN2, LN4 = math.log(2), math.log(4)


# ---------------------------------------------------------------- probability
def test_probability_hand():
    # exp(-[0, ln2, ln4]) = [1, 1/2, 1/4]; mean = 1.75 / 3 = 7/12
    assert M.probability([0.0, LN2, LN4]) == pytest.approx(7 / 12, rel=1e-15)
    with pytest.raises(ValueError):
        M.probability([])


def test_normalized_probability_hand():
    # item 1: p = 1/2, q = [1/2, 1/4] -> 0.5 / 1.25 = 2/5
    # item 2: p = 1,   q = [1/4, 1/4] -> 1 / 1.5   = 2/3
    # mean = (2/5 + 2/3) / 2 = 8/15
    got = M.normalized_probability([LN2, 0.0], [[LN2, LN4], [LN4, LN4]])
    assert got == pytest.approx(8 / 15, rel=1e-15)
    # Different numbers of perturbed answers per item are fine: same per-item shares.
    assert M.normalized_probability([LN2, 0.0], [[LN2, LN4], [LN4, LN4, 50.0]]) == pytest.approx(8 / 15, rel=1e-12)
    with pytest.raises(ValueError, match="2 items but avg_perturb_loss has 1"):
        M.normalized_probability([LN2, 0.0], [[LN2, LN4]])


def test_normalized_probability_matches_official_log_values():
    # Items 0 and 1 of TOFU's published real-authors log (locuslab/tofu, data/ft_epoch5_lr1e-05_llama2-7b_
    # retain90_wd0.01/eval_results/ds_size300/eval_real_author_wo_options.json): avg_gt_loss,
    # average_perturb_loss and the normalized_gt_loss = -log(share) the official code computed from them.
    official = [
        (4.233737945556641, [5.984416961669922, 3.5121266841888428, 6.536808013916016], 1.2033787109412362),
        (3.538726806640625, [2.6659915447235107, 5.230353355407715, 6.711672306060791], 1.2863492427376675),
    ]
    for gt, pert, norm_loss in official:
        assert -np.log(M.normalized_probability([gt], [pert])) == norm_loss  # to the last digit


# ---------------------------------------------------------------- truth ratio
def test_truth_ratio_stat_hand():
    # item 1: mean pert = (1.5 + 2.5) / 2 = 2, para = 1 -> r = exp(1) = e
    # item 2: mean pert = 1, para = 2 -> r = exp(-1)
    r = M.truth_ratio_stat([1.0, 2.0], [[1.5, 2.5], [1.0, 1.0]])
    np.testing.assert_allclose(r, [math.e, 1 / math.e], rtol=1e-15)


def test_truth_ratio_aggregations_hand():
    r = [math.e, 1 / math.e, 1.0]
    # forget: min(r, 1/r) = [1/e, 1/e, 1] -> (2/e + 1) / 3 = 0.578586...
    assert M.truth_ratio(r, "forget") == pytest.approx((2 / math.e + 1) / 3, rel=1e-15)
    # utility: max(0, 1 - 1/r) = [1 - 1/e, max(0, 1 - e) = 0, 0] -> (1 - 1/e) / 3 = 0.210707...
    assert M.truth_ratio(r, "utility") == pytest.approx((1 - 1 / math.e) / 3, rel=1e-15)
    assert M.truth_ratio(r) == M.truth_ratio(r, "utility")  # default
    with pytest.raises(ValueError, match="kind"):
        M.truth_ratio(r, "retain")


def test_truth_ratio_edge_cases_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # exp overflow: perturbed answers astronomically less likely -> r = inf
        r = M.truth_ratio_stat([0.0, 1000.0], [[1000.0, 1000.0], [0.0, 0.0]])
        assert r[0] == math.inf and r[1] == 0.0
        assert M.truth_ratio([math.inf], "forget") == 0.0  # min(inf, 0)
        assert M.truth_ratio([math.inf], "utility") == 1.0  # 1 - 1/inf
        assert M.truth_ratio([0.0], "forget") == 0.0  # min(0, inf)
        assert M.truth_ratio([0.0], "utility") == 0.0  # max(0, 1 - inf)
        assert M.truth_ratio([1.0], "forget") == 1.0 and M.truth_ratio([1.0], "utility") == 0.0
    assert math.isnan(M.truth_ratio([1.0, math.nan], "forget"))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        M.truth_ratio_stat([1.0, 2.0], [1.0, 2.0])  # flat: ambiguous, rejected
    with pytest.raises(ValueError, match="non-empty"):
        M.truth_ratio([], "forget")


def test_truth_ratio_against_independent_loop():
    rng = np.random.default_rng(0)
    para, pert = rng.uniform(0.1, 4, 50), rng.uniform(0.1, 4, (50, 5))
    r_ref = [math.exp(sum(row) / len(row) - p) for p, row in zip(para, pert, strict=True)]
    np.testing.assert_allclose(M.truth_ratio_stat(para, pert), r_ref, rtol=1e-13)
    forget_ref = sum(min(x, 1 / x) for x in r_ref) / len(r_ref)
    utility_ref = sum(max(0.0, 1 - 1 / x) for x in r_ref) / len(r_ref)
    assert M.truth_ratio(r_ref, "forget") == pytest.approx(forget_ref, rel=1e-13)
    assert M.truth_ratio(r_ref, "utility") == pytest.approx(utility_ref, rel=1e-13)


# ---------------------------------------------------------------- ROUGE
def test_rouge_l_recall_hand_and_independent():
    # answer tokens [the, quick, brown, fox, jump(s)], generation [a, quick, fox, jump(ed), over];
    # the stemmer maps jumps/jumped -> jump; LCS = quick fox jump = 3 -> recall 3/5
    assert M.rouge_l_recall("a quick fox jumped over", "The quick brown fox jumps") == pytest.approx(0.6)
    assert M.rouge_l_recall("Jane Austen wrote it.", "Jane Austen") == 1.0
    assert M.rouge_l_recall("", "Jane Austen") == 0.0
    assert M.rouge_l_recall("anything", "") == 0.0
    # Independent: lower-case alphanumeric tokens (no stemmable words) and an LCS table.
    for gen, ans in [("b a c d e", "a b c d"), ("one two six two", "two one two six nine"), ("x y", "z")]:
        ta, tg = re.findall(r"[a-z0-9]+", ans.lower()), re.findall(r"[a-z0-9]+", gen.lower())
        assert M.rouge_l_recall(gen, ans) == pytest.approx(lcs_length(ta, tg) / len(ta), rel=1e-15)


def test_rouge_1_recall_hand():
    # answer unigrams {a: 2, b: 1, c: 1}; generation {a: 1, c: 1} -> clipped overlap 2 of 4
    assert M.rouge_1_recall("a c", "a b c a") == 0.5


# ---------------------------------------------------------------- forget quality
def _ks_exact_pvalue(a: list[float], b: list[float]) -> float:
    """Exact two-sided KS p-value by enumerating every split of the pooled sample (no ties)."""
    pooled = sorted(a + b)
    n, m = len(a), len(b)

    def stat(a_positions: set[int]) -> float:
        fa = fb = 0
        d = 0.0
        for i in range(n + m):
            fa, fb = (fa + 1, fb) if i in a_positions else (fa, fb + 1)
            d = max(d, abs(fa / n - fb / m))
        return d

    d_obs = stat({pooled.index(x) for x in a})
    splits = list(itertools.combinations(range(n + m), n))
    hits = sum(stat(set(c)) >= d_obs - 1e-12 for c in splits)
    return hits / len(splits)


def test_forget_quality_hand():
    # [1,2,3] vs [4,5,6]: D = 1, reached only by aaabbb and bbbaaa: p = 2 / C(6,3) = 2/20
    assert M.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1, rel=1e-12)
    # different sizes: [1,2,3] vs [4..7]: p = 2 / C(7,3) = 2/35
    assert M.forget_quality([1, 2, 3], [4, 5, 6, 7]) == pytest.approx(2 / 35, rel=1e-12)


def test_forget_quality_exact_enumeration_and_kstest():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5).tolist(), rng.normal(0.7, 1.3, 8).tolist()
    got = M.forget_quality(a, b)
    assert got == pytest.approx(_ks_exact_pvalue(a, b), rel=1e-9)
    assert got == pytest.approx(stats.kstest(a, b).pvalue, rel=1e-12)


def test_forget_quality_identical_and_different():
    r = np.exp(np.random.default_rng(2).normal(0, 0.5, 40))
    assert M.forget_quality(r, r) == 1.0
    assert M.forget_quality(r, 1 / r[::-1]) <= 1.0
    far = M.forget_quality(np.random.default_rng(3).normal(0, 1, 40), np.random.default_rng(4).normal(6, 1, 40))
    assert far < 1e-15
    # KS depends on ranks only: r and 1/r (the log's truth_ratio key) give the same p.
    x, y = np.exp(np.random.default_rng(5).normal(0, 1, 20)), np.exp(np.random.default_rng(6).normal(0.5, 1, 30))
    assert M.forget_quality(x, y) == pytest.approx(M.forget_quality(1 / x, 1 / y), rel=1e-12)


# ---------------------------------------------------------------- model utility
def test_model_utility_hand_and_edges():
    assert M.model_utility([1.0] * 9) == pytest.approx(1.0)
    # three 1/2 and six 1: 9 / (3*2 + 6*1) = 9/12
    assert M.model_utility([0.5] * 3 + [1.0] * 6) == pytest.approx(0.75, rel=1e-15)
    assert M.model_utility([0.0] + [0.9] * 8) == 0.0  # a zero makes the harmonic mean 0
    vals = np.random.default_rng(7).uniform(0.05, 1, 9)
    assert M.model_utility(vals) == pytest.approx(9 / sum(1 / v for v in vals), rel=1e-13)
    by_key = dict(zip(M.UTILITY_KEYS, vals, strict=True))
    assert M.model_utility(by_key | {"forget_prob": 0.0}) == M.model_utility(vals)  # extra keys ignored
    assert M.model_utility({M.TOFU_NAMES[k]: v for k, v in by_key.items()}) == M.model_utility(vals)
    with pytest.raises(ValueError, match="9 utility values"):
        M.model_utility([0.5] * 8)
    with pytest.raises(ValueError, match=">= 0"):
        M.model_utility([-0.1] + [0.5] * 8)


# ---------------------------------------------------------------- aggregate over a full log
def _synthetic_log(seed: int, n: int = 20) -> dict:
    rng = np.random.default_rng(seed)
    log = {}
    for s in SPLITS:
        k = 5 if s in (RETAIN, FORGET) else 3  # TOFU: 5 perturbed answers on retain/forget, 3 elsewhere
        log[s] = {
            "avg_gt_loss": {str(i): float(rng.uniform(0.05, 3)) for i in range(n)},
            "rougeL_recall": {str(i): float(rng.choice([0.0, 0.25, 0.5, 1.0])) for i in range(n)},
            "average_perturb_loss": {str(i): rng.uniform(0.5, 4, k).tolist() for i in range(n)},
            "avg_paraphrased_loss": {str(i): float(rng.uniform(0.05, 3)) for i in range(n)},
        }
    return log


def _hand_pass(log: dict, retain_log: dict) -> dict:
    """Independent pure-Python pass over the log, written from the docs/evaluation.md formulas."""
    out = {}
    for split, prefix in [(REAL_AUTHORS, "ra"), (WORLD_FACTS, "wf"), (RETAIN, "retain"), (FORGET, "forget")]:
        s = log[split]
        idx = list(s["avg_gt_loss"])
        shares = []
        for i in idx:
            p = math.exp(-s["avg_gt_loss"][i])
            q = sum(math.exp(-x) for x in s["average_perturb_loss"][i])
            shares.append(p if split in (RETAIN, FORGET) else p / (p + q))
        out[f"{prefix}_prob"] = sum(shares) / len(idx)
        out[f"{prefix}_rouge"] = sum(s["rougeL_recall"][i] for i in idx) / len(idx)
        rs = []
        for i in idx:
            pert = s["average_perturb_loss"][i]
            rs.append(math.exp(sum(pert) / len(pert) - s["avg_paraphrased_loss"][i]))
        if split == FORGET:
            out[f"{prefix}_truth_ratio"] = sum(min(r, 1 / r) for r in rs) / len(rs)
            forget_r = rs
        else:
            out[f"{prefix}_truth_ratio"] = sum(max(0.0, 1 - 1 / r) for r in rs) / len(rs)
    util = [out[f"{p}_{m}"] for p in ("ra", "wf", "retain") for m in ("rouge", "prob", "truth_ratio")]
    out["model_utility"] = len(util) / sum(1 / v for v in util)
    rf = retain_log[FORGET]
    retain_r = [
        math.exp(
            sum(rf["average_perturb_loss"][i]) / len(rf["average_perturb_loss"][i]) - rf["avg_paraphrased_loss"][i]
        )
        for i in rf["avg_gt_loss"]
    ]
    out["forget_quality"] = stats.kstest(forget_r, retain_r).pvalue
    out["forget_ks_statistic"] = max(
        abs(sum(r <= x for r in forget_r) / len(forget_r) - sum(r <= x for r in retain_r) / len(retain_r))
        for x in forget_r + retain_r
    )
    return out


def test_aggregate_matches_hand_pass():
    log, retain_log = _synthetic_log(10), _synthetic_log(11)
    got = M.aggregate(log, retain_log)
    want = _hand_pass(log, retain_log)
    snake = list(M.TOFU_NAMES)
    assert list(got) == snake + [M.TOFU_NAMES[k] for k in snake]
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-300), k
        assert got[M.TOFU_NAMES[k]] == got[k]
    assert 0 < got["model_utility"] < 1 and 0 <= got["forget_quality"] <= 1


def test_aggregate_bitwise_official_steps_and_alignment():
    """Same numpy reductions as aggregate_eval_stat.py (arrays of .values(), float64): equal, not approx."""
    log = _synthetic_log(12)
    got = M.aggregate(log)
    assert "forget_quality" not in got and "Forget Quality" not in got
    s = log[REAL_AUTHORS]
    p = np.exp(-1 * np.array(list(s["avg_gt_loss"].values())))
    q = np.exp(-1 * np.array(list(s["average_perturb_loss"].values())))
    assert got["ra_prob"] == np.mean(p / np.concatenate([p[:, None], q], axis=1).sum(-1))
    f = log[FORGET]
    r = np.exp(
        np.array(list(f["average_perturb_loss"].values())).mean(-1) - np.array(list(f["avg_paraphrased_loss"].values()))
    )
    assert got["forget_truth_ratio"] == np.mean(np.minimum(r, 1 / r))
    assert got["model_utility"] == stats.hmean([got[k] for k in M.UTILITY_KEYS])
    # Metrics are paired by item index, not by dict order: reversing one dict changes nothing.
    f["avg_paraphrased_loss"] = dict(reversed(list(f["avg_paraphrased_loss"].items())))
    assert M.aggregate(log)["forget_truth_ratio"] == got["forget_truth_ratio"]


def test_aggregate_retain_log_needs_forget_split_only_and_same_count():
    log = _synthetic_log(13)
    retain_forget_only = {FORGET: _synthetic_log(14)[FORGET]}
    assert "forget_quality" in M.aggregate(log, retain_forget_only)
    with pytest.raises(DataError, match="unlearned-model log has 20, retain-model log has 12"):
        M.aggregate(log, _synthetic_log(15, n=12))
    broken = _synthetic_log(16)
    del broken[WORLD_FACTS]["rougeL_recall"]
    with pytest.raises(DataError, match=r"split 'eval_real_world_wo_options\.json' lacks metric 'rougeL_recall'"):
        M.aggregate(broken)


def test_split_truth_ratio_stats_is_forget_quality_input():
    log, retain_log = _synthetic_log(17), _synthetic_log(18)
    fq = M.forget_quality(M.split_truth_ratio_stats(log[FORGET]), M.split_truth_ratio_stats(retain_log[FORGET]))
    assert M.aggregate(log, retain_log)["forget_quality"] == fq


def test_rouge_recalls_pair_equals_single_scorers():
    from dsunlearn.suites.tofu.metrics import rouge_1_recall, rouge_l_recall, rouge_recalls

    for gen, ans in [("The author was born in Paris", "He was born in Paris, France."), ("", "x"), ("a b c", "c b a")]:
        assert rouge_recalls(gen, ans) == (rouge_1_recall(gen, ans), rouge_l_recall(gen, ans))
