"""TOFU metrics as pure functions over per-item numbers, matching ``aggregate_eval_stat.py`` of locuslab/tofu.

Per item the eval log holds per-token mean NLLs of the answer (see ``dsunlearn.suites.tofu.log``):
``avg_gt_loss`` [N], ``avg_paraphrased_loss`` [N] and ``average_perturb_loss`` [N, K] (K perturbed answers;
each entry is already a per-token mean: the official code divides each summed loss by its token count).

Output names of :func:`aggregate` (snake_case key -> official TOFU column name); every value is returned
under both names in the same flat dict:

    ra_rouge / ra_prob / ra_truth_ratio              -> "ROUGE Real Authors" / "Prob. Real Authors" / ...
    wf_rouge / wf_prob / wf_truth_ratio              -> "ROUGE Real World" / "Prob. Real World" / ...
    retain_rouge / retain_prob / retain_truth_ratio  -> "ROUGE Retain" / "Prob. Retain" / "Truth Ratio Retain"
    forget_rouge / forget_prob / forget_truth_ratio  -> "ROUGE Forget" / "Prob. Forget" / "Truth Ratio Forget"
    model_utility                                    -> "Model Utility"
    forget_quality, forget_ks_statistic              -> "Forget Quality", "KS Test Forget" (only with retain_log)

followed, for a log with a membership-inference part (``eval.mia``), by its snake_case keys only
(``mia_log.summary``: ``privleak``, ``privleak_reference_auc``, ``mia_*_auc`` (``mia_reference_auc`` with a
retain log holding per-item mia_loss), ``exact_memorization``, ``extraction_strength``).

Arithmetic follows the official code step by step (float64, same reductions, same order of the nine
utility values) so that results agree to the last digit, not just to a tolerance.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from dsunlearn.suites.tofu.log import (
    FORGET,
    REAL_AUTHORS,
    RETAIN,
    WORLD_FACTS,
    check_compatible,
    validate_log,
)
from dsunlearn.suites.tofu.mia_log import summary as mia_summary

# Official column order: tasks (real authors, world facts, retain, forget) x (ROUGE, Prob., Truth Ratio).
# The harmonic mean sums reciprocals in this order, so keeping it keeps the last digit identical.
_SPLIT_NAMES = {
    REAL_AUTHORS: ("ra", "Real Authors"),
    WORLD_FACTS: ("wf", "Real World"),
    RETAIN: ("retain", "Retain"),
    FORGET: ("forget", "Forget"),
}
_METRIC_NAMES = (("rouge", "ROUGE"), ("prob", "Prob."), ("truth_ratio", "Truth Ratio"))

TOFU_NAMES: dict[str, str] = {
    f"{prefix}_{m}": f"{tofu_m} {tofu_split}"
    for prefix, tofu_split in _SPLIT_NAMES.values()
    for m, tofu_m in _METRIC_NAMES
}
TOFU_NAMES.update(model_utility="Model Utility", forget_quality="Forget Quality", forget_ks_statistic="KS Test Forget")
"""snake_case key of :func:`aggregate` -> official TOFU column name."""

UTILITY_KEYS: tuple[str, ...] = tuple(
    f"{_SPLIT_NAMES[s][0]}_{m}" for s in (REAL_AUTHORS, WORLD_FACTS, RETAIN) for m, _ in _METRIC_NAMES
)
"""The nine model-utility inputs, in the official order."""


def _vector(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of per-item numbers, got shape {a.shape}")
    return a


def _perturb_matrix(x: Any) -> np.ndarray | list[np.ndarray]:
    """[N, K] float64 array, or a list of N 1-D arrays when items have different numbers of perturbations."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except ValueError:  # ragged: numpy refuses to build a 2-D array
        rows = [np.asarray(r, dtype=np.float64) for r in x]
        if not rows or any(r.ndim != 1 or r.size == 0 for r in rows):
            raise ValueError("avg_perturb_loss must hold one non-empty list of losses per item") from None
        return rows
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"avg_perturb_loss must be [N, K] (K perturbed answers per item), got {a.shape}")
    return a


def _row_means(pert: np.ndarray | list[np.ndarray]) -> np.ndarray:
    if isinstance(pert, np.ndarray):
        return pert.mean(axis=-1)  # exactly the official reduction
    return np.array([r.mean() for r in pert])


def probability(avg_gt_loss: Sequence[float] | np.ndarray) -> float:
    """Answer probability of the retain and forget sets: ``mean_i exp(-avg_gt_loss_i)``.

    ``avg_gt_loss`` [N] is the per-token mean NLL of the ground-truth answer, so ``exp(-loss)`` is the
    geometric mean of the per-token probabilities (length-normalised sequence probability).
    """
    return float(np.mean(np.exp(-1 * _vector(avg_gt_loss, "avg_gt_loss"))))


def normalized_probability(
    avg_gt_loss: Sequence[float] | np.ndarray, avg_perturb_loss: Sequence[Sequence[float]] | np.ndarray
) -> float:
    """Answer probability of real authors and world facts: ``mean_i p_i / (p_i + sum_j q_ij)``.

    ``p_i = exp(-avg_gt_loss_i)`` [N] and ``q_ij = exp(-avg_perturb_loss_ij)`` [N, K]: the true answer's
    share of the probability mass over {true answer, perturbed answers}. If every probability of an item
    underflows to 0 (per-token losses above ~745) the item is 0/0 = NaN, as in the official code.
    """
    p_true = np.exp(-1 * _vector(avg_gt_loss, "avg_gt_loss"))
    pert = _perturb_matrix(avg_perturb_loss)
    if len(pert) != len(p_true):
        raise ValueError(f"avg_gt_loss has {len(p_true)} items but avg_perturb_loss has {len(pert)}")
    if isinstance(pert, np.ndarray):
        # Same reduction as the official code: concatenate [p, q_1..q_K] per row, then sum.
        p_all = np.concatenate([p_true[:, None], np.exp(-1 * pert)], axis=1).sum(-1)
    else:
        p_all = np.array([np.concatenate([[p], np.exp(-1 * q)]).sum() for p, q in zip(p_true, pert, strict=True)])
    with np.errstate(invalid="ignore"):
        return float(np.mean(p_true / p_all))


def truth_ratio_stat(
    avg_paraphrased_loss: Sequence[float] | np.ndarray, avg_perturb_loss: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """Per-item truth-ratio statistic ``r_i = exp(mean_j avg_perturb_loss_ij - avg_paraphrased_loss_i)``.

    Shapes: [N] and [N, K] -> [N]. ``r = P_para / P_pert`` with P the length-normalised probability and
    P_pert the geometric mean over the K perturbed answers: r > 1 means the model prefers the (paraphrased)
    true answer. The "base" answer is the paraphrase on retain/forget and the answer itself on real
    authors / world facts. Note the official log's own ``truth_ratio`` key holds ``1 / r``.
    """
    para = _vector(avg_paraphrased_loss, "avg_paraphrased_loss")
    pert = _perturb_matrix(avg_perturb_loss)
    if len(pert) != len(para):
        raise ValueError(f"avg_paraphrased_loss has {len(para)} items but avg_perturb_loss has {len(pert)}")
    with np.errstate(over="ignore"):  # r = inf is meaningful (see truth_ratio)
        return np.exp(_row_means(pert) - para)


def truth_ratio(r: Sequence[float] | np.ndarray, kind: Literal["forget", "utility"] = "utility") -> float:
    """Aggregate the per-item statistic ``r`` [N] (from :func:`truth_ratio_stat`).

    - ``kind="forget"`` (forget set): ``mean_i min(r_i, 1 / r_i)``; 1 when true and perturbed answers are
      equally likely, i.e. the model no longer knows which is true.
    - ``kind="utility"`` (retain, real authors, world facts): ``mean_i max(0, 1 - 1 / r_i)``; 0 unless the
      true answer is preferred.

    Limits: r = inf counts as 0 (forget) / 1 (utility); r = 0 counts as 0 for both. NaN propagates.
    """
    r = _vector(r, "r")
    with np.errstate(divide="ignore", over="ignore"):
        inv = 1 / r
    if kind == "forget":
        return float(np.mean(np.minimum(r, inv)))
    if kind == "utility":
        return float(np.mean(np.maximum(0, 1 - inv)))
    raise ValueError(f"kind must be 'forget' or 'utility', got {kind!r}")


@functools.cache
def _scorer(rouge_type: str) -> Any:
    # Built once per process on first use: rouge_score (and nltk's stemmer) import slowly.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)


def rouge_l_recall(generation: str, answer: str) -> float:
    """ROUGE-L recall of a generation against the ground-truth answer.

    ``LCS(answer_tokens, generation_tokens) / len(answer_tokens)`` with rouge_score's tokenizer (lower case,
    alphanumeric tokens) and the Porter stemmer on, as ``rouge_score.RougeScorer(["rougeL"],
    use_stemmer=True).score(target=answer, prediction=generation).recall``. 0 for an empty answer.
    """
    return float(_scorer("rougeL").score(answer, generation)["rougeL"].recall)


def rouge_1_recall(generation: str, answer: str) -> float:
    """ROUGE-1 recall (unigram overlap / answer unigrams), stemmer on; logged as ``rouge1_recall``."""
    return float(_scorer("rouge1").score(answer, generation)["rouge1"].recall)


def rouge_recalls(generation: str, answer: str) -> tuple[float, float]:
    """(ROUGE-1 recall, ROUGE-L recall) from ONE scorer call: tokenising and stemming once (the runner's path).

    The same numbers as `rouge_1_recall` / `rouge_l_recall` (rouge_score scores each type independently)."""
    s = _scorer_pair().score(answer, generation)
    return float(s["rouge1"].recall), float(s["rougeL"].recall)


@functools.cache
def _scorer_pair() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def _ks(a: Any, b: Any) -> Any:
    from scipy.stats import ks_2samp

    return ks_2samp(_vector(a, "unlearned_forget_r"), _vector(b, "retain_forget_r"))


def forget_quality(
    unlearned_forget_r: Sequence[float] | np.ndarray, retain_forget_r: Sequence[float] | np.ndarray
) -> float:
    """Forget quality: two-sided two-sample KS test p-value, ``scipy.stats.ks_2samp(a, b).pvalue``.

    Both inputs are the per-item truth-ratio statistics ``r`` of :func:`truth_ratio_stat` on the forget
    set (not the aggregated truth ratio): ``a`` from the unlearned model, ``b`` from the model trained on
    the retain set only. The sizes may differ. High p (up to 1.0) means the two r distributions are
    indistinguishable. The KS statistic depends only on ranks, so passing ``1 / r`` (the log's
    ``truth_ratio`` key) to both sides gives the same value.
    """
    return float(_ks(unlearned_forget_r, retain_forget_r).pvalue)


def model_utility(values: Mapping[str, float] | Sequence[float]) -> float:
    """Model utility: harmonic mean ``9 / sum_k (1 / v_k)`` of the nine utility values.

    The values are Prob., ROUGE and Truth Ratio on retain, real authors and world facts. ``values`` is a
    list of 9, or a mapping: the output of :func:`aggregate` (its :data:`UTILITY_KEYS` are picked, in the
    official order), or any mapping with exactly 9 entries. Computed with ``scipy.stats.hmean`` as the
    official code does: if any value is 0 the result is 0 (1/0 = inf in the sum); NaN propagates;
    negative values are rejected.
    """
    if isinstance(values, Mapping):
        if all(k in values for k in UTILITY_KEYS):
            vals = [values[k] for k in UTILITY_KEYS]
        elif all(TOFU_NAMES[k] in values for k in UTILITY_KEYS):
            vals = [values[TOFU_NAMES[k]] for k in UTILITY_KEYS]
        else:
            vals = list(values.values())
    else:
        vals = list(values)
    a = np.asarray(vals, dtype=np.float64)
    if a.shape != (9,):
        raise ValueError(f"model_utility needs the 9 utility values ({', '.join(UTILITY_KEYS)}), got {a.size}")
    if np.any(a < 0):
        raise ValueError(f"model_utility inputs must be >= 0, got {a.tolist()}")
    from scipy.stats import hmean

    return float(hmean(a))


def _column(split_log: Mapping[str, Mapping[Any, Any]], key: str, order: list[Any]) -> list[Any]:
    # Look items up by index so metrics stay paired even if a log's dicts were written in different
    # orders; for well-formed logs this is exactly the official ``.values()`` order.
    col = split_log[key]
    return [col[i] for i in order]


def split_truth_ratio_stats(split_log: Mapping[str, Mapping[Any, Any]]) -> np.ndarray:
    """Per-item ``r`` [N] of one split of a TOFU log (the input of :func:`forget_quality`); reads only
    ``TRUTH_RATIO_KEYS``, all a retain log needs (open-unlearning's, converted by ``ou_log``, has no more)."""
    order = list(split_log["avg_paraphrased_loss"])
    return truth_ratio_stat(
        _column(split_log, "avg_paraphrased_loss", order), _column(split_log, "average_perturb_loss", order)
    )


def split_metrics(split_log: Mapping[str, Mapping[Any, Any]], split: str) -> dict[str, float]:
    """``{"rouge", "prob", "truth_ratio"}`` of one split; ``split`` is its TOFU file name (decides the
    probability form and the truth-ratio aggregation, like the official ``'eval_log' in k`` and
    ``'forget' in k`` tests)."""
    order = list(split_log["avg_gt_loss"])
    gt = _column(split_log, "avg_gt_loss", order)
    if split in (RETAIN, FORGET):
        prob = probability(gt)
    else:
        prob = normalized_probability(gt, _column(split_log, "average_perturb_loss", order))
    rouge = float(np.array(_column(split_log, "rougeL_recall", order), dtype=np.float64).mean())
    r = split_truth_ratio_stats(split_log)
    tr = truth_ratio(r, "forget" if split == FORGET else "utility")
    return {"rouge": rouge, "prob": prob, "truth_ratio": tr}


def aggregate(log: Mapping[str, Any], retain_log: Mapping[str, Any] | None = None) -> dict[str, float]:
    """All TOFU metrics of one eval log (the four splits), as one flat dict.

    Keys: the snake_case names of :data:`TOFU_NAMES` (``ra_*``, ``wf_*``, ``retain_*``, ``forget_*`` for
    rouge/prob/truth_ratio, then ``model_utility``, and with ``retain_log`` ``forget_quality`` and
    ``forget_ks_statistic``), followed by the same values under their official TOFU column names.
    ``retain_log`` is the log of the retain-only model on the same forget split (only its forget split is
    read; its MIA part gives PrivLeak's reference). Then the MIA keys of ``mia_log.summary`` where the log has
    an MIA part. Raises ``DataError`` if a log is malformed or the forget splits differ in size.
    """
    validate_log(log)
    out: dict[str, float] = {}
    for split, (prefix, _) in _SPLIT_NAMES.items():
        for m, v in split_metrics(log[split], split).items():
            out[f"{prefix}_{m}"] = v
    out["model_utility"] = model_utility([out[k] for k in UTILITY_KEYS])
    if retain_log is not None:
        check_compatible(log, retain_log)  # validates the retain log's forget truth-ratio inputs
        ks = _ks(split_truth_ratio_stats(log[FORGET]), split_truth_ratio_stats(retain_log[FORGET]))
        out["forget_quality"] = float(ks.pvalue)
        out["forget_ks_statistic"] = float(ks.statistic)
    out.update({TOFU_NAMES[k]: v for k, v in list(out.items())})
    out.update(mia_summary(log, retain_log))  # after TOFU's keys: those are the same with or without it
    return out
