"""open-unlearning's TOFU log (``TOFU_EVAL.json``) as the retain model's log: found, checked, converted.

open-unlearning publishes its retain models' evaluations (``python setup_data.py --eval_logs``: the hub dataset
``open-unlearning/eval`` into ``saves/eval/``, e.g. ``tofu_Llama-3.2-1B-Instruct_retain90/TOFU_EVAL.json``) and
reads one as ``retain_logs_path``. Its forget quality (``ks_test`` of configs/eval/tofu_metrics/forget_quality.yaml)
is ``ks_2samp`` of the per-item ``score`` of ``forget_truth_ratio``, the model's against the retain log's. Per
forget item i (``value_by_index["i"]``, i = 0..N-1 in the split's order) that log holds

    forget_Q_A_PARA_Prob  {"prob": exp(-L_para_i), "avg_loss": L_para_i}                 the paraphrased answer
    forget_Q_A_PERT_Prob  {"prob": [exp(-L_pert_ij)], "avg_loss": [L_pert_ij]}  (K)     the perturbed answers
    forget_truth_ratio    {"score": s_i},  s_i = exp(-mean_j L_pert_ij) / (exp(-L_para_i) + 1e-10)

(the first two are the pre-computed inputs of the third, which open-unlearning's evaluator stores in the same
log), L the per-token mean NLL of an answer: TOFU's ``avg_paraphrased_loss`` and ``average_perturb_loss``.
TOFU's statistic (`metrics.truth_ratio_stat`) is r_i = exp(mean_j L_pert_ij - L_para_i), so s_i = 1 / r_i
but for open-unlearning's 1e-10, which cannot be taken out of s_i exactly. Hence the retain model's r_i is
computed from the two loss entries, exactly as from a TOFU log with those losses, and ``forget_truth_ratio``,
where present, must agree with them (relative 1e-9; else its entries are not of one evaluation). Both samples
of the KS test are then TOFU's r, as with a dsunlearn retain log. The p-value is also open-unlearning's
wherever its 1e-10 changes no order among the pooled values: it moves s_i by a relative 1e-10 exp(L_para_i),
under 1e-6 for L_para_i < 9.2 nats. (1 / r or r: the two-sided KS test depends only on the order.)

Its ``mia_*`` entries are in our layout already (`eval/metric_log.py`): ``mia_min_k`` gives PrivLeak's
reference, ``mia_loss`` (where kept) the reference-model attack; they become the log's MIA part (`mia_log`).
Pure but for `load_retain_log`, the only file access; nothing in a log is executed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log
from dsunlearn.eval.mia_attacks import ATTACKS
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu import mia_log

PARA, PERT, TRUTH_RATIO = "forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob", "forget_truth_ratio"
EPS = 1e-10  # open-unlearning's truth_ratio: wrong_prob / (correct_prob + 1e-10)
RTOL = 1e-9  # its scores are float64 from the same floats: agreement to the last bits, 1e-9 leaves room
_FIX = "give open-unlearning's TOFU_EVAL.json as its evaluation wrote it, or a dsunlearn / TOFU eval log"


def truth_ratio_scores(para: Sequence[float], pert: Sequence[Sequence[float]]) -> list[float]:
    """open-unlearning's per-item ``forget_truth_ratio`` score from the losses, float64 as its numpy code:
    ``s_i = exp(-mean_j pert[i][j]) / (exp(-para[i]) + 1e-10)``; [N], [N][K] -> [N].
    Example: para [1.0], pert [[1.0, 3.0]] -> exp(-2) / (exp(-1) + 1e-10) = 0.3678794...(1 - 2.7e-10)."""
    out = []
    for l_para, l_pert in zip(para, pert, strict=True):
        wrong = np.exp(-np.mean(np.asarray(l_pert, dtype=np.float64)))
        out.append(float(wrong / (np.exp(-np.float64(l_para)) + EPS)))
    return out


def _losses(entry: Mapping, name: str, where: str, per_answer: bool) -> list:
    """The per-item ``avg_loss`` of `entry` in index order: one finite number per item, or (`per_answer`) a
    non-empty list of them, one per perturbed answer. DataError naming `where`, `name` and the item else."""
    by_index = entry.get(metric_log.BY_INDEX)
    if not isinstance(by_index, Mapping) or not by_index:
        raise DataError(f"{where}: '{name}' has no per-item values ('{metric_log.BY_INDEX}'); {_FIX}")
    out = []
    for i in range(len(by_index)):  # metric_log.check: keyed "0".."n-1", each an object
        v = by_index[str(i)].get("avg_loss")
        if per_answer:
            ok = isinstance(v, list) and len(v) > 0 and all(map(tofu_log.is_number, v))
        else:
            ok = tofu_log.is_number(v)
        if not ok:
            want = "a non-empty list of finite numbers, one per perturbed answer" if per_answer else "a finite number"
            raise DataError(f"{where}: '{name}' item {i} has avg_loss {repr(v)[:40]}, expected {want}; {_FIX}")
        out.append([float(x) for x in v] if per_answer else float(v))
    return out


def _check_scores(entry: Mapping, want: Sequence[float], where: str) -> None:
    """``forget_truth_ratio``'s per-item scores are those its loss entries give (`truth_ratio_scores`)."""
    by_index = entry.get(metric_log.BY_INDEX)
    n = len(by_index) if isinstance(by_index, Mapping) else 0
    if n != len(want):
        raise DataError(f"{where}: '{TRUTH_RATIO}' has {n} items but '{PARA}' has {len(want)}; {_FIX}")
    for i, w in enumerate(want):
        s = by_index[str(i)].get("score")
        if not tofu_log.is_number(s) or not math.isclose(s, w, rel_tol=RTOL, abs_tol=0.0):
            raise DataError(
                f"{where}: '{TRUTH_RATIO}' item {i} has score {repr(s)[:30]} but its losses give {w:.10g} "
                f"(exp(-mean L_pert) / (exp(-L_para) + 1e-10)): the entries are not of one evaluation; {_FIX}"
            )


def to_retain_log(log: Any, where: str) -> dict[str, Any]:
    """open-unlearning's TOFU log -> the retain log the TOFU metrics read: ``{FORGET: {"avg_paraphrased_loss":
    {"i": L_para_i}, "average_perturb_loss": {"i": [L_pert_ij]}}}`` plus, where it has ``mia_*`` entries,
    ``{MIA_FILE: those}``. DataError (one line, naming `where` and the entry) for a malformed log, or one
    without the two loss entries (its ``forget_truth_ratio`` alone cannot give TOFU's r exactly)."""
    log = metric_log.check(log, where)
    for name in (PARA, PERT):
        if name not in log:
            alone = ""
            if TRUTH_RATIO in log:
                alone = f" ('{TRUTH_RATIO}' alone cannot: its 1e-10 does not come out exactly)"
            raise DataError(
                f"{where}: no '{name}' entry, the per-item losses forget quality's truth ratios are computed "
                f"from{alone}; {_FIX}"
            )
    para = _losses(log[PARA], PARA, where, per_answer=False)
    pert = _losses(log[PERT], PERT, where, per_answer=True)
    if len(para) != len(pert):
        raise DataError(f"{where}: '{PARA}' has {len(para)} items but '{PERT}' has {len(pert)}; {_FIX}")
    if TRUTH_RATIO in log:
        _check_scores(log[TRUTH_RATIO], truth_ratio_scores(para, pert), where)
    forget = {
        "avg_paraphrased_loss": {str(i): v for i, v in enumerate(para)},
        "average_perturb_loss": {str(i): v for i, v in enumerate(pert)},
    }
    out: dict[str, Any] = {tofu_log.FORGET: forget}
    mia = {k: log[k] for k in ATTACKS if k in log}
    if mia:
        out[mia_log.MIA_FILE] = mia
    return out


def is_tofu_log(content: Any) -> bool:
    """Whether a file's JSON is TOFU's format (a log keyed by split file names, or one split's metrics)."""
    return isinstance(content, Mapping) and any(k in content for k in (*tofu_log.SPLITS, *tofu_log.REQUIRED_KEYS))


def _has_tofu_log(d: Path) -> bool:
    return any((d / f).is_file() for f in (*tofu_log.SPLITS, tofu_log.AGGREGATED_FILE))


def load_retain_log(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The retain model's log at `path`, as the TOFU metrics read it: dsunlearn's or TOFU's own
    (`mia_log.load_log`, its forget split: a TOFU log file, or a directory holding TOFU's split files or
    ``eval_log_aggregated.json``, with the ``TOFU_EVAL.json`` next to it), or open-unlearning's ``TOFU_EVAL.json``
    (that file under any name, or a directory holding it and none of TOFU's files), converted (`to_retain_log`)."""
    p = Path(path)
    if p.is_dir() and not _has_tofu_log(p) and (p / mia_log.MIA_FILE).is_file():
        p = p / mia_log.MIA_FILE
    if p.is_file():
        content = tofu_log.read_json(p)
        if not is_tofu_log(content):
            if isinstance(content, Mapping) and PARA not in content and _has_tofu_log(p.parent):
                raise DataError(
                    f"{p} is the membership-inference part of the TOFU log next to it, not open-unlearning's "
                    f"whole log; pass the directory '{p.parent}'"
                )
            return to_retain_log(content, str(p))
    return mia_log.load_log(p, splits=(tofu_log.FORGET,))
