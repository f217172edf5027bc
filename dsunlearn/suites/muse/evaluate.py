"""MUSE evaluation of a causal LM -> a log in open-unlearning's layout (``eval/metric_log.py``), ``MUSE_EVAL.json``.

Per set (its first ``eval.max_items`` items), every rank computing a share and getting everything:

- ``forget_verbmem_ROUGE``: verbmem/forget, greedy continuation of ``prompt`` (tokenized alone, with the
  tokenizer's special tokens, as muse_bench does) for ``data.muse.verbmem_max_new_tokens`` tokens, against
  ``gt`` cut to as many tokens (tokenized with special tokens, as muse_bench does, so a BOS counts as one of
  them); both decoded skipping special tokens. (muse_bench also asks for ``clean_up_tokenization_spaces``,
  which only removes spaces before punctuation: ROUGE's tokenizer splits on non-alphanumerics, so the score
  cannot change, and transformers 5 ignores the flag for BPE tokenizers; it is not passed.)
- ``forget_knowmem_ROUGE`` / ``retain_knowmem_ROUGE``: knowmem/{forget,retain}_qa with the in-context
  examples of ``*_qa_icl`` (`metrics.knowmem_prompt`), ``data.muse.knowmem_max_new_tokens`` new tokens, cut
  at the stop words, against ``answer``.
- ``mia_loss``, ``mia_zlib``, ``mia_min_k``, ``mia_min_k_plus_plus`` (k = ``data.muse.mia_k``):
  privleak/forget (members) vs privleak/holdout (non-members), each text scored on all its tokens after the
  first (muse_bench's ``compute_ppl``: ``tokenizer.encode(text)``, log-probs of ``input_ids[1:]``), cut only
  at the model's context.
- ``privleak``: Min-K% at ``data.muse.privleak_k`` on the same sets, MUSE's AUC, against the reference AUC:
  ``data.muse.auc_retrain`` if set, else the retrained model's log when one is given (``write_eval``,
  `with_reference`), else MUSE's published value for the corpus; the entry says which (``reference``).
- ``mia_reference`` (``write_eval`` with the retrained model's log only, `with_reference`): per privleak text
  this model's ``mia_loss`` minus the retrained model's, open-unlearning's reference-model attack.
- ``exact_memorization``, ``extraction_strength``: on verbmem/forget, the tokens of ``gt`` after
  ``prompt + " "`` (open-unlearning's CompletionDataset with ``insert_space``).

Generation is batched with left padding and sharded (``eval.generate``), the token statistics come from one
sharded forward over all scored texts (``eval.token_stats``): the numbers do not depend on the world size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsunlearn.config import DataConfig, EvalConfig
from dsunlearn.data.collate import IGNORE, Encoded, pad_id_of
from dsunlearn.data.sharding import eval_order
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log, mia
from dsunlearn.eval.generate import greedy_generate
from dsunlearn.eval.mia_attacks import memorization_entries, mia_entries
from dsunlearn.eval.token_stats import item_token_stats
from dsunlearn.suites.muse import metrics
from dsunlearn.suites.muse.data import load
from dsunlearn.suites.muse.metrics import KNOWMEM, LOG_FILE, VERBMEM
from dsunlearn.suites.muse.privleak import config_reference, privleak, with_reference


def _ids(tokenizer, text: str) -> list[int]:
    # verbose=False: a text longer than the context is cut where it is scored, not warned about per item
    return tokenizer(text, add_special_tokens=True, verbose=False).input_ids


def _positions(module) -> int | None:
    return getattr(getattr(module, "config", None), "max_position_embeddings", None)


def _check_prompts(prompts: list[list[int]], new_tokens: int, positions: int | None, name: str) -> None:
    if positions is None:
        return
    for i, p in enumerate(prompts):
        if len(p) + new_tokens > positions:
            raise DataError(
                f"MUSE set '{name}' item {i}: its prompt is {len(p)} tokens, and {new_tokens} new tokens would run "
                f"past the model's {positions} positions; lower data.muse.*_max_new_tokens or eval.max_items, or "
                "use a model with a longer context"
            )


def _rouge_entry(gens: list[str], refs: list[str], prompts: list[str], stemmer: bool) -> dict:
    scores = [metrics.rouge_l(r, g, stemmer) for g, r in zip(gens, refs, strict=True)]
    extras = [{"rougeL_recall": rec, "input": p, "ground_truth": r, "generation": g}
              for (_, rec), p, r, g in zip(scores, prompts, refs, gens, strict=True)]  # fmt: skip
    return metric_log.per_item([f1 for f1, _ in scores], "rougeL_f1", extras)


def eval_sets(data_cfg: DataConfig, eval_cfg: EvalConfig) -> dict[str, list[dict]]:
    """Every set the evaluation reads, cut to ``eval.max_items`` (in-context sets whole)."""
    n = eval_cfg.max_items
    names = ["verbmem/forget", "privleak/forget", "privleak/holdout"]
    sets = {name: load(data_cfg, name)[:n] for name in names}
    for qa, icl in KNOWMEM.values():
        sets[qa], sets[icl] = load(data_cfg, qa)[:n], load(data_cfg, icl)
    return sets


def _prompts(tokenizer, sets: Mapping[str, list[dict]]) -> dict[str, tuple[list[str], list[list[int]], list[str]]]:
    """name -> (prompt texts, prompt ids, reference texts) of the three generation metrics."""
    out = {}
    verb = sets["verbmem/forget"]
    out[VERBMEM] = ([it["prompt"] for it in verb], [_ids(tokenizer, it["prompt"]) for it in verb],
                    [it["gt"] for it in verb])  # fmt: skip
    for metric, (qa, icl) in KNOWMEM.items():
        shots = [(it["question"], it["answer"]) for it in sets[icl]]
        texts = [metrics.knowmem_prompt(shots, it["question"]) for it in sets[qa]]
        out[metric] = (texts, [_ids(tokenizer, t) for t in texts], [it["answer"] for it in sets[qa]])
    return out


def check_inputs(tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig, positions: int | None = None) -> None:
    """Load every evaluation set and tokenize its prompts without a model; with `positions` (the model's
    context), every prompt plus its new tokens must fit. DataError (one line) otherwise."""
    m = data_cfg.muse
    sets = eval_sets(data_cfg, eval_cfg)
    for metric, (_, ids, _) in _prompts(tokenizer, sets).items():
        cap = m.verbmem_max_new_tokens if metric == VERBMEM else m.knowmem_max_new_tokens
        _check_prompts(ids, cap, positions, metric)
    _mia_texts(tokenizer, sets, positions)


def _scored_text(tokenizer, text: str, positions: int | None, where: str) -> Encoded:
    """muse_bench's compute_ppl: the text tokenized with special tokens, every token after the first scored;
    DataError for a text with nothing to score (one token: the attacks' scores would be undefined)."""
    ids = _ids(tokenizer, text)[:positions]
    if len(ids) < 2:
        raise DataError(f"{where} tokenizes to {len(ids)} token(s), so no token is scored; give it a longer text")
    return Encoded(ids, [IGNORE, *ids[1:]], n_prompt=1)


def _mia_texts(tokenizer, sets: Mapping[str, list[dict]], positions: int | None) -> list[Encoded]:
    """privleak/forget then privleak/holdout texts, encoded for scoring."""
    return [_scored_text(tokenizer, it["text"], positions, f"MUSE set '{name}' item {i}")
            for name in ("privleak/forget", "privleak/holdout") for i, it in enumerate(sets[name])]  # fmt: skip


def _completion(tokenizer, prompt: str, gt: str, positions: int | None) -> Encoded:
    """open-unlearning's CompletionDataset (insert_space): ``prompt + " " + gt`` tokenized once, the prompt's
    own token count masked (at least the first token)."""
    ids = _ids(tokenizer, prompt + " " + gt)[:positions]
    n = max(1, len(_ids(tokenizer, prompt)))
    return Encoded(ids, [IGNORE] * min(n, len(ids)) + ids[n:], n_prompt=n)


def evaluate(module, tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> dict:
    """The MUSE log of `module` (an HF causal LM, or a DeepSpeed engine's `.module` at any ZeRO stage; every
    rank must call this, all get the whole log). PrivLeak's reference is the config's or MUSE's published one
    here; ``write_eval`` replaces it by the retrained model's when given its log. Mode (train/eval) is kept."""
    m, positions = data_cfg.muse, _positions(module)
    sets = eval_sets(data_cfg, eval_cfg)
    log: dict[str, Any] = {}
    for metric, (texts, ids, refs) in _prompts(tokenizer, sets).items():
        cap = m.verbmem_max_new_tokens if metric == VERBMEM else m.knowmem_max_new_tokens
        _check_prompts(ids, cap, positions, metric)
        total = max(len(p) for p in ids) + cap  # the per-item cap is `cap` new tokens (no total cap in MUSE)
        order = eval_order(eval_cfg, [len(p) for p in ids])
        gens = greedy_generate(module, tokenizer, ids, eval_cfg.batch_size, cap, total, strip=False, order=order)
        if metric == VERBMEM:  # muse_bench cuts the reference to as many tokens as it generates
            refs = [tokenizer.decode(_ids(tokenizer, r)[:cap], skip_special_tokens=True) for r in refs]
        else:
            gens = [metrics.cut_at_stop_words(g) for g in gens]
        log[metric] = _rouge_entry(gens, refs, texts, m.rouge_stemmer)

    forget_texts = [it["text"] for it in sets["privleak/forget"]]
    holdout_texts = [it["text"] for it in sets["privleak/holdout"]]
    verb = sets["verbmem/forget"]
    encoded = _mia_texts(tokenizer, sets, positions)
    encoded += [_completion(tokenizer, it["prompt"], it["gt"], positions) for it in verb]
    order = eval_order(eval_cfg, [len(x.input_ids) for x in encoded])
    stats = item_token_stats(module, encoded, eval_cfg.batch_size, pad_id_of(tokenizer), order)  # one pass
    nf, nh = len(forget_texts), len(holdout_texts)
    fs, hs, vs = stats[:nf], stats[nf : nf + nh], stats[nf + nh :]
    log.update(mia_entries(fs, hs, forget_texts, holdout_texts, m.mia_k))
    pf, ph = ([mia.min_k_score(s.logp, m.privleak_k) for s in part] for part in (fs, hs))
    log["privleak"] = privleak(pf, ph, config_reference(data_cfg))
    log.update(memorization_entries(vs))
    return log


def write_eval(out_dir: str | os.PathLike[str], log: Mapping[str, Any], retain_log: Mapping | None = None) -> dict:
    """`log` (PrivLeak and ``mia_reference`` against `retain_log` where given: `with_reference`) and its summary
    into ``<out_dir>/eval/`` (rank 0, atomically); every rank returns the summary. Errors (the two logs' MIA
    items differ) are raised before anything is written."""
    from dsunlearn.suites.base import write_log_and_summary
    from dsunlearn.suites.muse.summary import summarize

    log = with_reference(log, retain_log)
    return write_log_and_summary(out_dir, LOG_FILE, log, summarize(log))
