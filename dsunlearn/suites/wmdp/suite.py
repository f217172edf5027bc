"""WMDP as a `Suite`: text-document forget/retain corpora, hazardous and general multiple-choice accuracy in
open-unlearning's log layout (``data`` loads, ``evaluate`` scores, ``metrics`` the groups, ``summary`` the table)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsunlearn.eval.multiple_choice import LETTERS, mc_prompt
from dsunlearn.suites.base import DOCUMENTS, FORGET, UTILITY, Headline, SingleLogSuite, TrainingSet
from dsunlearn.suites.wmdp import data, summary
from dsunlearn.suites.wmdp.metrics import LOG_FILE


class WmdpSuite(SingleLogSuite):
    """WMDP (Li et al. 2024): unlearn hazardous bio / cyber knowledge, keep general knowledge (MMLU)."""

    NAME = "wmdp"
    HEADLINE = (
        # Hazardous accuracy: chance (0.25) is the goal; lower counts as better for UIPE's sweep.
        Headline("wmdp_acc", "WMDP accuracy", higher_is_better=False, role=FORGET),
        Headline("mmlu_acc", "MMLU accuracy", higher_is_better=True, role=UTILITY),
    )
    USES_GENERATION_CAPS = False  # multiple choice only: prompts are left-truncated to the context, as lm_eval does
    LOG_FILE = LOG_FILE  # WMDP_EVAL.json, next to summary.json

    def training_set(self, data_cfg, role: str) -> TrainingSet:
        split = {"forget": data_cfg.forget_split, "retain": data_cfg.retain_split}[role]
        return TrainingSet(role, split, DOCUMENTS, data.training_texts(data_cfg, split), windows=data_cfg.wmdp.windows)

    def finetune_set(self, data_cfg, target: str) -> TrainingSet:
        """The target ("full") learns the forget and retain texts, "retain" the retain texts only."""
        splits = ([data_cfg.forget_split] if target == "full" else []) + [data_cfg.retain_split]
        items = [it for s in splits for it in data.training_texts(data_cfg, s)]
        return TrainingSet("finetune", target, DOCUMENTS, items, windows=data_cfg.wmdp.windows)

    def corpus(self, data_cfg) -> list[str]:
        texts = [it["text"] for s in (data_cfg.forget_split, data_cfg.retain_split)
                 for it in data.training_texts(data_cfg, s)]  # fmt: skip
        for subject, items in data.question_sets(data_cfg).values():
            texts += [mc_prompt(subject, it["question"], it["choices"]) + " " + LETTERS[it["answer"]] for it in items]
        return texts

    def synthetic_data(self, data_cfg) -> Mapping[str, list[dict]]:
        return data.synthetic_sets(data_cfg)

    def check_eval_inputs(self, tokenizer, data_cfg, eval_cfg, positions: int | None = None) -> None:
        from dsunlearn.suites.wmdp.evaluate import check_inputs

        check_inputs(tokenizer, data_cfg, eval_cfg)

    def check_retain_log(self, path: str, cfg, key: str = "eval.retain_log") -> dict:
        """WMDP's metrics need no retain model; a given log is only checked to be a WMDP log."""
        from dsunlearn.errors import DataError

        try:
            return self.load_log(path)
        except DataError as e:
            raise DataError(f"{key}: {e}") from None

    def evaluate(self, module, tokenizer, data_cfg, eval_cfg) -> dict:
        from dsunlearn.suites.wmdp.evaluate import evaluate

        return evaluate(module, tokenizer, data_cfg, eval_cfg)

    def write_eval(self, out_dir: str | os.PathLike[str], log: Any, retain_log: Any = None) -> dict[str, float]:
        from dsunlearn.suites.wmdp.evaluate import write_eval

        return write_eval(out_dir, log)

    def summarize(self, log: Any, retain_log: Any = None) -> dict[str, float]:
        return summary.summarize(log)

    def format_summary(self, values: Mapping[str, float], as_json: bool = False) -> str:
        return summary.format_json(values) if as_json else summary.format_table(values)
