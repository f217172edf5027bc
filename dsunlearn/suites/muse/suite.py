"""MUSE as a `Suite`: text-document training sets, VerbMem / KnowMem / PrivLeak and the MIA family, a log in
open-unlearning's layout (``data`` loads, ``evaluate`` runs the evaluation, ``metrics`` holds muse_bench's
rules, ``summary`` the flat numbers and the table)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsunlearn.errors import DataError
from dsunlearn.suites.base import DOCUMENTS, FORGET, UTILITY, Headline, SingleLogSuite, TrainingSet
from dsunlearn.suites.muse import data, summary
from dsunlearn.suites.muse.metrics import LOG_FILE


class MuseSuite(SingleLogSuite):
    """MUSE (Shi et al. 2024): unlearn news articles (News) or books (Books) a model was trained on."""

    NAME = "muse"
    HEADLINE = (
        # Verbatim and knowledge memorisation of the forget set: a retrained model's level is the goal. With no
        # such reference at hand, lower counts as better (UIPE's sweep ranks VerbMem first, then KnowMem).
        Headline("verbmem_f", "VerbMem forget", higher_is_better=False, role=FORGET),
        Headline("knowmem_f", "KnowMem forget", higher_is_better=False, role=FORGET),
        # Knowledge of the retain set: the utility the unlearning must keep.
        Headline("knowmem_r", "KnowMem retain", higher_is_better=True, role=UTILITY),
    )
    SWEEP_DETAILS = (("privleak", "PrivLeak (%)"),)  # None without a reference AUC (no retain log, no auc_retrain)
    # Its generations stop at data.muse.verbmem/knowmem_max_new_tokens, checked against the context prompt by prompt
    # (check_eval_inputs); eval.max_length / eval.max_new_tokens are not read, so not checked either.
    USES_GENERATION_CAPS = False
    LOG_FILE = LOG_FILE  # MUSE_EVAL.json (ours or open-unlearning's), next to summary.json

    def training_set(self, data_cfg, role: str) -> TrainingSet:
        name = data.training_set_name({"forget": data_cfg.forget_split, "retain": data_cfg.retain_split}[role])
        return TrainingSet(role, name, DOCUMENTS, data.load(data_cfg, name), windows=data_cfg.muse.windows)

    def finetune_set(self, data_cfg, target: str) -> TrainingSet:
        items = [it for name in data.finetune_sets(data_cfg, target) for it in data.load(data_cfg, name)]
        return TrainingSet("finetune", target, DOCUMENTS, items, windows=data_cfg.muse.windows)

    def corpus(self, data_cfg) -> list[str]:
        return data.corpus(data_cfg)

    def synthetic_data(self, data_cfg) -> Mapping[str, list[dict]]:
        return data.synthetic_sets(data_cfg)

    def check_eval_inputs(self, tokenizer, data_cfg, eval_cfg, positions: int | None = None) -> None:
        from dsunlearn.suites.muse.evaluate import check_inputs

        check_inputs(tokenizer, data_cfg, eval_cfg, positions)

    def check_retain_log(self, path: str, cfg, key: str = "eval.retain_log") -> dict:
        """The retrained model's MUSE log (ours or open-unlearning's MUSE_EVAL.json): PrivLeak's reference, and
        where it holds per-item ``mia_loss`` scores the reference-model attack's, of the items evaluated here."""
        from dsunlearn.eval.mia_attacks import check_reference_items
        from dsunlearn.suites.muse.privleak import log_reference

        try:
            log = self.load_log(path)
        except DataError as e:
            raise DataError(f"{key}: {e}") from None
        try:
            ref = log_reference(log)
        except DataError as e:  # its message names no file: this one does
            raise DataError(f"{key}='{path}': {e}") from None
        if ref is None:
            raise DataError(
                f"{key}='{path}' has no 'privleak' or 'mia_min_k' entry, so it cannot give PrivLeak's reference; "
                "give the retrained model's MUSE log (dsunlearn eval of it) or set data.muse.auc_retrain"
            )
        if "mia_loss" in log:  # the privleak sets this evaluation scores, as `evaluate.eval_sets` cuts them
            n_forget, n_holdout = (len(data.load(cfg.data, f"privleak/{part}")[: cfg.eval.max_items])
                                   for part in ("forget", "holdout"))  # fmt: skip
            check_reference_items(log["mia_loss"], n_forget, n_holdout, f"{key}='{path}'")
        return log

    def evaluate(self, module, tokenizer, data_cfg, eval_cfg) -> dict:
        from dsunlearn.suites.muse.evaluate import evaluate

        return evaluate(module, tokenizer, data_cfg, eval_cfg)

    def write_eval(self, out_dir: str | os.PathLike[str], log: Any, retain_log: Any = None) -> dict[str, float]:
        from dsunlearn.suites.muse.evaluate import write_eval

        ref = self.load_log(retain_log) if isinstance(retain_log, (str, os.PathLike)) else retain_log
        return write_eval(out_dir, log, ref)

    def summarize(self, log: Any, retain_log: Any = None) -> dict[str, float]:
        from dsunlearn.suites.muse.privleak import with_reference

        return summary.summarize(with_reference(log, retain_log) if retain_log is not None else log)

    def format_summary(self, values: Mapping[str, float], as_json: bool = False) -> str:
        return summary.format_json(values) if as_json else summary.format_table(values)
