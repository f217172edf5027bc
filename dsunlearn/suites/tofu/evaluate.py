"""TOFU evaluation of a causal LM on the four evaluation sets -> a TOFU-format log; writing the log + summary.

Per set (forget ``<forget_split>_perturbed``, ``retain_perturbed``, ``real_authors_perturbed``,
``world_facts_perturbed``; the first ``eval.max_items`` items) and per item:

- NLL of the ground-truth answer (``gt_loss`` sum, ``num_token_gt``, ``avg_gt_loss`` = their ratio),
- NLL of the truth-ratio base answer (``paraphrased_answer`` on forget/retain, the answer itself on real
  authors/world facts, docs/evaluation.md) -> ``paraphrased_loss``, ``num_token_paraphrased``, ``avg_paraphrased_loss``,
- NLL of each perturbed answer -> ``perturb_loss``, ``num_token_perturb``, ``average_perturb_loss`` [K],
- greedy generation -> ``generated_text`` [prompt, generation, answer], ``rouge1_recall``, ``rougeL_recall``.

Every sequence is encoded in the run's prompt format (``data.prompt_format``, ``data/prompt_format.py``), as
training encodes it; the generation prompt is the ground-truth item's prompt tokens (under
``data.tofu_official``: TOFU's decoded-and-split prompt, its reference answer and its per-batch length cap).

Losses are per-token means over the answer's label tokens (answer + EOS), computed by ``eval.nll`` on all
sequences of a set at once (ground truth, base, perturbed: one flat list, so few batches and few ZeRO-3
dummy rounds). Everything is sharded over all ranks and gathered in item order: results do not depend on the
world size. All ranks must call :func:`evaluate` (ZeRO-3 gathers are collective); all get the full log.

With ``eval.mia`` (the default) the log also holds membership inference and memorization on the forget split
against its holdout split (``mia_eval``; one more forward over both sets' answers), under ``mia_log.MIA_FILE``,
written next to TOFU's log in open-unlearning's layout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsunlearn import dist
from dsunlearn.config import DataConfig, EvalConfig
from dsunlearn.data import prompt_format as pf
from dsunlearn.data.collate import encode_qa, pad_id_of
from dsunlearn.data.sharding import eval_order
from dsunlearn.eval.generate import greedy_generate
from dsunlearn.eval.nll import answer_nll_sums
from dsunlearn.run_layout import RunDir
from dsunlearn.suites.base import SUMMARY_FILE
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu import metrics, mia_eval, mia_log
from dsunlearn.suites.tofu.data import eval_split_name, load_split

# Evaluation role (suites.tofu.data.EVAL_SPLITS) -> TOFU log key, in the order TOFU's published logs list them
# (its eval_everything.yaml: retain, real authors, world facts, forget; = tofu_log.SPLITS).
ROLE_TO_LOG: dict[str, str] = {
    "retain": tofu_log.RETAIN,
    "real_authors": tofu_log.REAL_AUTHORS,
    "world_facts": tofu_log.WORLD_FACTS,
    "forget": tofu_log.FORGET,
}


def base_answer(item: Mapping[str, Any]) -> str:
    """The truth-ratio base answer: the paraphrase where the split has one, else the answer (docs/evaluation.md)."""
    return item.get("paraphrased_answer") or item["answer"]


def _avg(s: float, c: int) -> float:
    return s / max(c, 1)


def split_records(
    module, tokenizer, items: list[dict], data_cfg: DataConfig, eval_cfg: EvalConfig, split: str
) -> list[dict[str, Any]]:
    """One evaluation set (already cut to its first items) -> per-item records for ``tofu_log.build_split_log``.

    `split` is the data split name (for error messages). Sequences scored: N ground truths, N base answers
    (skipped where the base is the answer itself: same text, same numbers), sum_i K_i perturbed answers.
    """

    fmt = pf.from_config(tokenizer, data_cfg)

    def enc(question: str, prompt: str, answer: str, what: str):
        where = f"split '{split}' {what}"
        return encode_qa(tokenizer, question, answer, data_cfg.max_length, data_cfg.truncation, where, fmt, prompt)

    seqs, slots = [], []  # slots[i] = (gt position, base position, [perturbed positions]) in `seqs`
    for i, it in enumerate(items):
        q = it["question"]
        prompt = pf.prompt_text(tokenizer, fmt, q, f"split '{split}' item {i}")  # one render for its 2 + K answers
        gt = len(seqs)
        seqs.append(enc(q, prompt, it["answer"], f"item {i} answer"))
        base = gt
        if base_answer(it) != it["answer"]:
            base = len(seqs)
            seqs.append(enc(q, prompt, base_answer(it), f"item {i} paraphrased_answer"))
        pert = []
        for k, p in enumerate(it["perturbed_answer"]):
            pert.append(len(seqs))
            seqs.append(enc(q, prompt, p, f"item {i} perturbed_answer {k}"))
        slots.append((gt, base, pert))
    order = eval_order(eval_cfg, [len(x.input_ids) for x in seqs])
    sums, counts = answer_nll_sums(module, seqs, eval_cfg.batch_size, pad_id_of(tokenizer), order)

    # [(prompt ids, prompt text, reference answer)] from each ground-truth sequence
    gp = [pf.generation_prompt(tokenizer, fmt, it["question"], seqs[gt].input_ids, seqs[gt].n_prompt, it["answer"])
          for it, (gt, _, _) in zip(items, slots, strict=True)]  # fmt: skip
    e, official = eval_cfg, fmt.official
    prompts = [g[0] for g in gp]
    order = None if official else eval_order(e, [len(p) for p in prompts])  # official: TOFU's batches, its caps
    gens = greedy_generate(module, tokenizer, prompts, e.batch_size, e.max_new_tokens, e.max_length,
                           batch_cap=official, strip=not official, order=order)  # fmt: skip
    records = []
    for i, ((gt, base, pert), gen, (_, prompt, reference)) in enumerate(zip(slots, gens, gp, strict=True)):
        r1, rl = metrics.rouge_recalls(gen, reference)
        records.append(
            {
                "index": i,
                "avg_gt_loss": _avg(sums[gt], counts[gt]),
                "gt_loss": sums[gt],
                "num_token_gt": counts[gt],
                "generated_text": [prompt, gen, reference],
                "rouge1_recall": r1,
                "rougeL_recall": rl,
                "average_perturb_loss": [_avg(sums[j], counts[j]) for j in pert],
                "avg_paraphrased_loss": _avg(sums[base], counts[base]),
                "paraphrased_loss": sums[base],
                "perturb_loss": [sums[j] for j in pert],
                "num_token_paraphrased": counts[base],
                "num_token_perturb": [counts[j] for j in pert],
            }
        )
    return records


def check_inputs(tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> None:
    """Load and encode the four evaluation sets (and with ``eval.mia`` the forget and holdout splits) without a
    model: a missing split, an over-long item or a template that fails is found before any training
    (DataError / ModelError, one line)."""
    fmt = pf.from_config(tokenizer, data_cfg)
    for role in ROLE_TO_LOG:
        split = eval_split_name(role, data_cfg.forget_split)
        for i, it in enumerate(load_split(data_cfg, split)[: eval_cfg.max_items]):
            for answer in (it["answer"], base_answer(it), *it["perturbed_answer"]):
                where = f"split '{split}' item {i}"
                encode_qa(tokenizer, it["question"], answer, data_cfg.max_length, data_cfg.truncation, where, fmt)
    if eval_cfg.mia:
        mia_eval.encoded_sets(tokenizer, data_cfg, eval_cfg)


def evaluate(module, tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> dict:
    """TOFU evaluation of `module` on the four sets -> a TOFU-format log ``{split file name: {metric: {i: v}}}``,
    with ``eval.mia`` plus ``mia_log.MIA_FILE``: the membership-inference entries (``mia_eval.evaluate_mia``).

    `module`: an HF causal LM on its device (one process, or one replica per rank), or a DeepSpeed engine's
    `.module` at any ZeRO stage (partitioned parameters are detected by ``engine.partitioning``, so ranks keep
    in lockstep); every rank must call this. Mode (train/eval) is restored.
    """
    log: dict[str, Any] = {}
    for role, key in ROLE_TO_LOG.items():
        split = eval_split_name(role, data_cfg.forget_split)
        items = load_split(data_cfg, split)[: eval_cfg.max_items]
        records = split_records(module, tokenizer, items, data_cfg, eval_cfg, split)
        log[key] = tofu_log.build_split_log(records, key)
    if eval_cfg.mia:
        log[mia_log.MIA_FILE] = mia_eval.evaluate_mia(module, tokenizer, data_cfg, eval_cfg)
    return log


def _as_log(retain_log: Mapping[str, Any] | str | os.PathLike[str] | None) -> Mapping[str, Any] | None:
    if retain_log is None or isinstance(retain_log, Mapping):
        return retain_log
    from dsunlearn.suites.tofu.ou_log import load_retain_log

    return load_retain_log(retain_log)  # dsunlearn's / TOFU's log, or open-unlearning's TOFU_EVAL.json


def write_eval(
    out_dir: str | os.PathLike[str], log: Mapping[str, Any], retain_log: Mapping[str, Any] | str | None = None
) -> dict[str, float]:
    """Aggregate `log` and write ``<out_dir>/eval/eval_log_aggregated.json`` (TOFU's part: its format exactly),
    ``<out_dir>/eval/TOFU_EVAL.json`` (the MIA part with PrivLeak, where the log has one; a stale one is removed
    where it has none) and ``<out_dir>/eval/summary.json``.

    `retain_log` (a log or a path to one; only its forget split and MIA part are read) adds forget quality,
    PrivLeak's reference and, where its MIA part has per-item mia_loss, the reference-model attack
    (``mia_log.reference_attack``; none for `log` passed as its own reference). Every rank computes and returns
    the summary (:func:`metrics.aggregate`); rank 0 alone writes, atomically. Errors (malformed log, forget or
    MIA item counts differing from the retain log's) are raised before anything is written.
    """
    from dsunlearn.eval import metric_log
    from dsunlearn.fsutil import atomic_write_json

    retain = _as_log(retain_log)
    summary = metrics.aggregate(log, retain)
    mia_file = mia_log.file_content(log, retain)
    if dist.is_main():
        where = RunDir(out_dir).eval
        if mia_file is not None:
            metric_log.save(where / mia_log.MIA_FILE, mia_file)
        else:  # a previous evaluation's, which `load_log(eval dir)` would attach to this log
            (where / mia_log.MIA_FILE).unlink(missing_ok=True)
        tofu_log.save_log(where / tofu_log.AGGREGATED_FILE, mia_log.tofu_part(log))
        atomic_write_json(where / SUMMARY_FILE, summary)
    dist.barrier()  # readers on other ranks may open the files right after
    return summary
