"""Membership-inference and memorization scores (`dsunlearn/eval/mia.py`) against hand-worked examples and
independent references: numpy for the means and sorts, scipy's Mann-Whitney U for the AUC, brute-force pair
counting with ties, and open-unlearning's loops re-written plainly for the memorization scores."""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import pytest
from scipy import stats

from dsunlearn.eval import mia


def test_loss_zlib_and_reference_by_hand():
    lp = [math.log(0.5), math.log(0.25)]
    assert mia.loss_score(lp) == pytest.approx(1.5 * math.log(2), abs=1e-15)  # (ln 2 + 2 ln 2) / 2
    text = "the quick brown fox"
    assert mia.zlib_score(lp, text) == pytest.approx(1.5 * math.log(2) / len(zlib.compress(text.encode("utf-8"))))
    assert mia.reference_score(lp, [math.log(0.5), math.log(0.5)]) == pytest.approx(0.5 * math.log(2), abs=1e-15)
    assert math.isnan(mia.loss_score([]))
    with pytest.raises(ValueError, match="reference"):
        mia.reference_score(lp, [0.0])


def test_min_k_by_hand_and_against_numpy():
    assert mia.min_k_score([-1, -4, -2, -3, -0.5], k=0.4) == 3.5  # n_k = int(5 * 0.4) = 2: -4, -3
    assert mia.min_k_score([-1, -4, -2], k=0.2) == 4.0  # int(0.6) = 0 -> at least one token
    assert mia.min_k_score([], k=0.2) == 0.0
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        lp = -rng.exponential(2.0, n)
        for k in (0.1, 0.2, 0.4, 1.0):
            want = -np.sort(lp)[: max(1, int(n * k))].astype(np.float64).mean()
            assert mia.min_k_score(lp.tolist(), k) == pytest.approx(want, rel=1e-14)
    with pytest.raises(ValueError, match="k must be"):
        mia.min_k_score([-1.0], k=0.0)


def test_min_k_plus_plus_by_hand_and_from_a_vocabulary():
    assert mia.min_k_plus_plus_score([-1, -3], [-2, -2], [4, 1], k=0.5) == 1.0  # z = [0.5, -1]
    # the variance floor: a one-hot position (var 0) divides by sqrt(1e-6)
    assert mia.min_k_plus_plus_score([-0.5], [-0.25], [0.0], k=1.0) == pytest.approx(0.25 / 1e-3)
    # mu, var from a full vocabulary distribution, in float64
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 11))
    logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    tokens = rng.integers(0, 11, 6)
    lp = logprobs[np.arange(6), tokens]
    p = np.exp(logprobs)
    mu = (p * logprobs).sum(-1)
    var = (p * logprobs**2).sum(-1) - mu**2
    z = (lp - mu) / np.sqrt(np.maximum(var, 1e-6))
    want = -np.sort(z)[: max(1, int(6 * 0.2))].mean()
    assert mia.min_k_plus_plus_score(lp.tolist(), mu.tolist(), var.tolist(), k=0.2) == pytest.approx(want, rel=1e-13)


def _auc_pairs(forget, holdout) -> float:
    """Brute force: every (forget, holdout) pair, ties one half."""
    wins = sum(1.0 if h > f else 0.5 if h == f else 0.0 for f in forget for h in holdout)
    return wins / (len(forget) * len(holdout))


def test_auc_by_hand_with_ties():
    assert mia.auc([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert mia.auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    # pairs (f, h): (1,2) win, (1,1) tie, (3,2) loss, (3,1) loss -> 1.5 / 4
    assert mia.auc([1.0, 3.0], [2.0, 1.0]) == 0.375
    assert mia.auc([5.0, 5.0], [5.0]) == 0.5


def test_auc_against_scipy_and_pair_counting():
    rng = random.Random(3)
    for n_f, n_h in ((1, 1), (3, 5), (40, 17), (100, 100)):
        forget = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(n_f)]  # many ties
        holdout = [rng.choice([0.5, 1.0, rng.random() + 0.3]) for _ in range(n_h)]
        u = stats.mannwhitneyu(holdout, forget, alternative="two-sided").statistic
        assert mia.auc(forget, holdout) == pytest.approx(u / (n_f * n_h), abs=1e-12)
        assert mia.auc(forget, holdout) == pytest.approx(_auc_pairs(forget, holdout), abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        mia.auc([math.nan], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        mia.auc([], [1.0])


def test_privleak_and_the_muse_sign():
    # a model that remembers its forget set: Min-K% scores of forget items low, holdout high -> open-unlearning's
    # AUC 1, MUSE's AUC (ROC of minus the score, same labels) 0 -> PrivLeak -100
    forget, holdout = [0.5, 0.7], [2.0, 3.0]
    assert mia.auc(forget, holdout) == 1.0 and mia.muse_auc(forget, holdout) == 0.0
    assert mia.privleak(mia.muse_auc(forget, holdout), mia.MUSE_AUC_RETRAIN["news"]) == -100.0
    # ties: MUSE's AUC is exactly 1 - AUC; pairs (0.5, 0.5) tie, (0.5, 2) holdout higher, (1, 0.5) forget higher...
    forget, holdout = [0.5, 1.0], [0.5, 2.0]
    assert mia.auc(forget, holdout) == 0.625 and mia.muse_auc(forget, holdout) == 0.375
    assert mia.MUSE_AUC_RETRAIN == {"news": 0.47719999999999996, "books": 0.5392999999999999}  # muse_bench's
    assert mia.privleak(0.6, 0.5) == pytest.approx(20.0)
    assert mia.privleak(0.4772, 0.4772) == 0.0
    with pytest.raises(ValueError):
        mia.privleak(0.5, 0.0)


def _es_open_unlearning(preds, labels) -> float:
    """open-unlearning's loop, re-written: the loop variable survives the loop."""
    n = len(labels)
    if n == 0:
        return 0.0
    k = 0
    for k in range(n):  # noqa: B007 (the value after the loop is the point)
        if preds[k:] == labels[k:]:
            break
    return 1 - k / n


def test_memorization_scores_by_hand_and_against_the_loop():
    assert mia.exact_memorization([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    assert mia.exact_memorization([], []) is None
    assert mia.extraction_strength([5, 1, 2], [4, 1, 2]) == pytest.approx(2 / 3)
    assert mia.extraction_strength([4, 1, 2], [4, 1, 2]) == 1.0
    # nothing matches: open-unlearning scores 1/n (the same as only the last token matching); strict scores 0
    assert mia.extraction_strength([9, 9, 9], [4, 1, 2]) == pytest.approx(1 / 3)
    assert mia.extraction_strength([9, 9, 2], [4, 1, 2]) == pytest.approx(1 / 3)
    assert mia.extraction_strength([9, 9, 9], [4, 1, 2], official=False) == 0.0
    assert mia.extraction_strength([7], [4]) == 1.0 and mia.extraction_strength([7], [4], official=False) == 0.0
    assert mia.extraction_strength([], []) == 0.0
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(0, 8)
        labels = [rng.randint(0, 2) for _ in range(n)]
        preds = [rng.randint(0, 2) for _ in range(n)]
        assert mia.extraction_strength(preds, labels) == pytest.approx(_es_open_unlearning(preds, labels))
    with pytest.raises(ValueError):
        mia.extraction_strength([1], [1, 2])
