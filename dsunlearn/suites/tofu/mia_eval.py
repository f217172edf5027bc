"""TOFU's membership inference and memorization, as open-unlearning's TOFU metrics compute them: the forget
split's answers (members) against the matching holdout split's (non-members) -> the MIA part of the log.

Sets: ``data.forget_split`` (e.g. forget10; open-unlearning reads forget10_perturbed's question/answer, the same
items) and its holdout split (holdout10: as many authors, in no training set), the first ``eval.max_items`` of
each, question/answer encoded exactly as training encodes them (``data.collate.encode_items``, the run's prompt
format); the answer's label tokens (answer + EOS) are scored. One sharded forward over both lists
(``eval.token_stats.item_token_stats``: fewer ZeRO-3 rounds than two) gives per token the label's log-prob,
the vocabulary mean and variance (Min-K%++) and the argmax; the scores and AUCs are
``eval.mia_attacks.mia_entries`` with k = ``eval.mia_k`` (open-unlearning's TOFU configs: 0.4), and
``memorization_entries`` of the forget items. zlib compresses the scored tokens decoded without special
tokens (open-unlearning's text). Every rank must call :func:`evaluate_mia`; all get the whole result.
"""

from __future__ import annotations

from dsunlearn.config import DataConfig, EvalConfig
from dsunlearn.data.collate import Encoded, encode_items, pad_id_of
from dsunlearn.data.sharding import eval_order
from dsunlearn.eval.mia_attacks import memorization_entries, mia_entries
from dsunlearn.eval.token_stats import item_token_stats
from dsunlearn.suites.tofu.data import mia_sets


def encoded_sets(tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> tuple[list[Encoded], list[Encoded]]:
    """(forget items, holdout items) of `data.mia_sets` encoded as training encodes them; DataError (one line,
    naming split and item) for a missing split or an item that does not fit."""
    sets = mia_sets(data_cfg, eval_cfg.max_items)
    forget, holdout = (encode_items(tokenizer, items, data_cfg, split=split) for split, items in sets.values())
    return forget, holdout


def evaluate_mia(module, tokenizer, data_cfg: DataConfig, eval_cfg: EvalConfig) -> dict[str, dict]:
    """The MIA part of the TOFU log (``suites.tofu.mia_log``) of `module` (an HF causal LM, or a DeepSpeed
    engine's `.module` at any ZeRO stage; every rank must call this): mia_loss, mia_zlib, mia_min_k,
    mia_min_k_plus_plus, exact_memorization, extraction_strength, keys sorted."""
    forget, holdout = encoded_sets(tokenizer, data_cfg, eval_cfg)
    both = forget + holdout
    order = eval_order(eval_cfg, [len(x.input_ids) for x in both])
    stats = item_token_stats(module, both, eval_cfg.batch_size, pad_id_of(tokenizer), order)
    texts = [tokenizer.decode(s.label, skip_special_tokens=True) for s in stats]
    n = len(forget)
    entries = mia_entries(stats[:n], stats[n:], texts[:n], texts[n:], eval_cfg.mia_k)
    entries.update(memorization_entries(stats[:n]))
    return dict(sorted(entries.items()))
