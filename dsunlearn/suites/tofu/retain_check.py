"""The retain model's TOFU log (`eval.retain_log` / `--retain-log`), checked before any evaluation or training.

Forget quality compares the unlearned model's forget-split losses with the retain model's, item for item, so a
wrong file (missing, not a TOFU log, another forget split or item cap) must fail in a second, before
`dsunlearn eval` evaluates or `dsunlearn unlearn` trains and before either writes anything. The log is
dsunlearn's or TOFU's, or open-unlearning's ``TOFU_EVAL.json`` (`ou_log`: converted, its per-item forget losses
checked). Its MIA part (``TOFU_EVAL.json`` next to a TOFU log, `mia_log`; the ``mia_*`` entries of
open-unlearning's) gives PrivLeak's reference where it holds ``mia_min_k``; a retain log without one (TOFU's own
code writes none) gives open-unlearning's default reference, not an error. Where it holds
per-item ``mia_loss`` scores (the reference-model attack's), they must be of the forget and holdout items this
evaluation scores, checked here too.
"""

from __future__ import annotations

from dsunlearn.errors import DataError


def check_retain_log(path: str, cfg, key: str = "eval.retain_log") -> dict:
    """The retain log at `path` (given as `key`), validated (forget split only; with ``eval.mia`` its MIA part's
    reference AUC and per-item mia_loss items too) and of as many items as this run evaluates."""
    from dsunlearn.eval.mia_attacks import check_reference_items
    from dsunlearn.suites.tofu import log as tofu_log
    from dsunlearn.suites.tofu import mia_log, ou_log
    from dsunlearn.suites.tofu.data import eval_split_name, load_split, mia_sets

    try:
        log = ou_log.load_retain_log(path)
        if cfg.eval.mia:
            mia_log.reference(log, f"retain log '{path}'")
    except DataError as e:
        raise DataError(
            f"{key}: {e} (the retain model's log is written by `dsunlearn eval --model <retain model>`, or is "
            "open-unlearning's TOFU_EVAL.json; without it, leave eval.retain_log unset: no forget quality)"
        ) from None
    n = min(cfg.eval.max_items, len(load_split(cfg.data, eval_split_name("forget", cfg.data.forget_split))))
    m = len(log[tofu_log.FORGET]["avg_paraphrased_loss"])
    if n != m:
        # open-unlearning's logs hold every item of the split, beyond eval.max_items' default of 300 (forget10: 400)
        cap = f", e.g. eval.max_items={m} (open-unlearning evaluates every item)" if n == cfg.eval.max_items < m else ""
        raise DataError(
            f"retain log '{path}' has {m} forget items but this evaluation has {n} "
            f"(data.forget_split={cfg.data.forget_split}, eval.max_items={cfg.eval.max_items}); "
            f"evaluate both models on the same forget split with the same item cap{cap}"
        )
    loss = (mia_log.mia_of(log) or {}).get("mia_loss")
    if cfg.eval.mia and loss is not None:  # the reference-model attack's items: those this evaluation scores
        n_forget, n_holdout = (len(items) for _, items in mia_sets(cfg.data, cfg.eval.max_items).values())
        check_reference_items(loss, n_forget, n_holdout, f"retain log '{path}'")
    return log
