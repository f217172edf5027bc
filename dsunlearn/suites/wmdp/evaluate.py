"""WMDP evaluation of a causal LM -> ``WMDP_EVAL.json`` (open-unlearning's log layout, ``eval/metric_log.py``).

Every question of the evaluated sets (``data.wmdp.subsets`` of cais/wmdp, ``data.wmdp.mmlu_subjects`` of
cais/mmlu; the first ``eval.max_items`` of each) is scored zero-shot as lm-evaluation-harness scores its
``wmdp_*`` / ``mmlu_*`` tasks (``eval/multiple_choice.py``), in one sharded pass over all of them. Entries:

    wmdp_<subset>_acc, mmlu_<subject>_acc   per question: acc (0/1), pred, answer, the four log-likelihoods;
                                            agg_value = the set's accuracy
    *_acc_norm                              the same with lm_eval's acc_norm (data.wmdp.acc_norm)
    wmdp_acc, mmlu_acc (and _acc_norm)      the groups' accuracy weighted by set size (lm_eval's
                                            ``weight_by_size: True`` groups: the mean over all their questions)
    mmlu_<category>_acc (and _acc_norm)     the same over lm_eval's MMLU categories (stem, other,
                                            social_sciences, humanities: ``mmlu_categories.py``), for those
                                            with at least one evaluated subject
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsunlearn.config import DataConfig, EvalConfig
from dsunlearn.eval import metric_log
from dsunlearn.eval.multiple_choice import LETTERS, choice_loglikelihoods, encode_pair, mc_prompt, predictions
from dsunlearn.suites.wmdp.data import question_sets
from dsunlearn.suites.wmdp.metrics import GROUPS, LOG_FILE, entry_name, group_entries


def eval_sets(data_cfg: DataConfig, eval_cfg: EvalConfig) -> dict[str, tuple[str, list[dict]]]:
    """set name -> (prompt subject, its first eval.max_items questions)."""
    return {name: (subject, items[: eval_cfg.max_items]) for name, (subject, items) in question_sets(data_cfg).items()}


def _contexts(sets: Mapping[str, tuple[str, list[dict]]]) -> list[str]:
    return [mc_prompt(subject, it["question"], it["choices"]) for subject, items in sets.values() for it in items]


def check_inputs(tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> None:
    """Load every evaluated set and tokenize its prompts and continuations without a model (DataError if one
    fails); prompts longer than the model's context are left-truncated when scored, as lm_eval does."""
    for ctx in _contexts(eval_sets(data_cfg, eval_cfg)):
        encode_pair(tokenizer, ctx, " " + LETTERS[0])


def evaluate(module, tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> dict:
    """The WMDP log of `module` (an HF causal LM or a DeepSpeed engine's `.module`, any ZeRO stage; every rank
    must call this, all get the whole log). Mode (train/eval) is kept."""
    sets = eval_sets(data_cfg, eval_cfg)
    lls = choice_loglikelihoods(module, tokenizer, _contexts(sets), eval_cfg.batch_size)
    log: dict[str, Any] = {}
    start = 0
    for name, (_, items) in sets.items():
        part = lls[start : start + len(items)]
        start += len(items)
        pred, pred_norm = predictions(part)
        answers = [it["answer"] for it in items]
        extras = [{"pred": p, "answer": a, "loglikelihoods": row}
                  for p, a, row in zip(pred, answers, part, strict=True)]  # fmt: skip
        log[entry_name(name, "acc")] = metric_log.per_item([float(p == a) for p, a in zip(pred, answers, strict=True)],
                                                           "acc", extras)  # fmt: skip
        if data_cfg.wmdp.acc_norm:
            log[entry_name(name, "acc_norm")] = metric_log.per_item(
                [float(p == a) for p, a in zip(pred_norm, answers, strict=True)], "acc_norm")  # fmt: skip
    log.update(group_entries(log))
    return log


def write_eval(out_dir: str | os.PathLike[str], log: Mapping[str, Any]) -> dict:
    """`log` and its summary into ``<out_dir>/eval/`` (rank 0, atomically); every rank returns the summary."""
    from dsunlearn.suites.base import write_log_and_summary
    from dsunlearn.suites.wmdp.summary import summarize

    return write_log_and_summary(out_dir, LOG_FILE, log, summarize(log))


__all__ = ["GROUPS", "check_inputs", "eval_sets", "evaluate", "write_eval"]
