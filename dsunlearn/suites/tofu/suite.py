"""TOFU as a `Suite`: the interface of ``suites/base.py`` over this package's modules, each keeping its job
(``data`` loads and validates splits, ``evaluate`` runs the evaluation, ``log`` and ``metrics`` own the log
format and its numbers, ``mia_eval`` and ``mia_log`` the membership-inference part and its file, ``summary``
prints, ``ou_log`` reads open-unlearning's log as the retain model's, ``retain_check`` checks that log)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsunlearn.suites.base import FORGET, QA, SUMMARY_FILE, UTILITY, Headline, Suite, TrainingSet
from dsunlearn.suites.tofu import data, metrics, mia_log, ou_log, retain_check, summary
from dsunlearn.suites.tofu import log as tofu_log


class TofuSuite(Suite):
    """TOFU (Maini et al. 2024): forget and retain sets of fictitious-author QA; four evaluation sets."""

    NAME = "tofu"
    HEADLINE = (
        # KS-test p-value of the forget set's truth ratios against the retain model's: 1 = indistinguishable.
        Headline("forget_quality", "Forget Quality", True, role=FORGET, needs_retain_log=True, log_scale=True),
        # Harmonic mean of probability, ROUGE-L and truth ratio on the retain, real-author and world-fact sets.
        Headline("model_utility", "Model Utility", higher_is_better=True, role=UTILITY),
    )
    SWEEP_DETAILS = (("forget_rouge", "Forget ROUGE-L"), ("forget_prob", "Forget Prob"))

    def training_set(self, data_cfg, role: str) -> TrainingSet:
        split = {"forget": data_cfg.forget_split, "retain": data_cfg.retain_split}[role]
        return TrainingSet(role, split, QA, data.load_split(data_cfg, split))

    def finetune_set(self, data_cfg, target: str) -> TrainingSet:
        return TrainingSet("finetune", target, QA, data.finetune_items(data_cfg, target))

    def corpus(self, data_cfg) -> list[str]:
        return data.corpus(data_cfg)

    def synthetic_data(self, data_cfg) -> Mapping[str, list[dict]]:
        return data.synthetic_splits(data_cfg)

    def check_eval_inputs(self, tokenizer, data_cfg, eval_cfg, positions: int | None = None) -> None:
        # TOFU's generation caps are checked against the context by config_bounds.check_generation_fits
        from dsunlearn.suites.tofu.evaluate import check_inputs

        check_inputs(tokenizer, data_cfg, eval_cfg)

    def check_retain_log(self, path: str, cfg, key: str = "eval.retain_log") -> dict:
        return retain_check.check_retain_log(path, cfg, key)

    def evaluate(self, module, tokenizer, data_cfg, eval_cfg) -> dict:
        from dsunlearn.suites.tofu.evaluate import evaluate

        return evaluate(module, tokenizer, data_cfg, eval_cfg)

    def write_eval(self, out_dir: str | os.PathLike[str], log: Any, retain_log: Any = None) -> dict[str, float]:
        from dsunlearn.suites.tofu.evaluate import write_eval

        return write_eval(out_dir, log, retain_log)

    def eval_files(self) -> tuple[str, ...]:
        # Stale TOFU split files must go too: ``load_log(dir)`` prefers them over the aggregated log we write.
        return (*tofu_log.SPLITS, tofu_log.AGGREGATED_FILE, mia_log.MIA_FILE, SUMMARY_FILE)

    def load_log(self, path: str | os.PathLike[str], forget_only: bool = False) -> dict:
        # with the MIA part next to it where there is one (a retain log: PrivLeak's reference); a retain log
        # (forget_only) may also be open-unlearning's TOFU_EVAL.json, converted
        if forget_only:
            return ou_log.load_retain_log(path)
        return mia_log.load_log(path, splits=tofu_log.SPLITS)

    def summarize(self, log: Any, retain_log: Any = None) -> dict[str, float]:
        return metrics.aggregate(log, retain_log)

    def format_summary(self, values: Mapping[str, float], as_json: bool = False) -> str:
        return summary.format_json(values) if as_json else summary.format_table(values)
