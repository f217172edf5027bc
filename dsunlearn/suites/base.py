"""What every suite (benchmark) provides: its training sets, evaluation, metrics, headline and input checks.

A recipe holds one `Suite` (``get_suite(cfg.data.suite)``) and reaches data and evaluation only through it, so
the unlearning loop, the objectives and the engine never learn which benchmark they serve. Per suite:

- training sets: the forget and retain sets as a `TrainingSet` of a `kind` (question/answer items today;
  text documents are the next kind, for MUSE's corpora), from the hub, local files or the suite's synthetic
  offline data (``data.source``);
- evaluation: distributed over all ranks (every rank calls it, each takes a share of the batches, all get the
  whole result), per item, into the suite's own log format, written to ``<out>/eval/`` with ``summary.json``;
- metrics: pure functions of logs -> a flat summary ``{name: number}``, of which a few are the `Headline`;
- input checks: everything an evaluation will need (its sets encodable, a reference log that fits) is checked
  before any training, so a bad input fails in seconds, not after the run.

Generic evaluation primitives (sharded NLL, sharded greedy generation) live in ``dsunlearn/eval/``.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Kinds of training set. QA items are dicts with string `question` and `answer` (trained on the answer tokens,
# data/collate.py); DOCUMENTS items are dicts with a string `text` (cut into windows trained on every token,
# data/documents.py: MUSE's corpora).
QA = "qa"
DOCUMENTS = "documents"
KINDS = (QA, DOCUMENTS)
ROLES = ("forget", "retain", "finetune")

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class TrainingSet:
    """One training set of a suite: the forget or the retain set, as loaded and validated."""

    role: str  # "forget" | "retain" | "finetune" (what a fine-tuned target or retain model learns)
    split: str  # its name in the suite's data (named in messages and encodings)
    kind: str  # QA | DOCUMENTS: how its items are encoded
    items: list[dict]
    windows: str = "concat"  # DOCUMENTS: how texts become windows (data/documents.py WINDOWS)

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.kind not in KINDS:
            raise ValueError(f"TrainingSet(role={self.role!r}, kind={self.kind!r}): role in {ROLES}, kind in {KINDS}")

    def encode(self, tokenizer, data) -> list:
        """The training sequences (list[Encoded]) of this set under `data` (a DataConfig): one per QA item
        (answer tokens labelled), or the windows of the documents (every token labelled). Their number is
        what the batch streams count (for documents: windows, not documents)."""
        if self.kind == QA:
            from dsunlearn.data.collate import encode_items

            return encode_items(tokenizer, self.items, data, split=self.split)
        from dsunlearn.data.documents import document_windows

        texts = [it["text"] for it in self.items]
        return document_windows(tokenizer, texts, data.max_length, self.windows, f"split '{self.split}'")


# What a headline number is to UIPE's alpha sweep (recipes/uipe_sweep.py): a FORGET number (how much of the
# forget set is gone; several are ranked in declaration order) or the suite's one UTILITY number (what must be
# kept: an alpha keeps >= rho x the unlearned model's).
FORGET, UTILITY = "forget", "utility"
HEADLINE_ROLES = (FORGET, UTILITY)


@dataclass(frozen=True)
class Headline:
    """One headline number of a suite's summary: its summary key, its display name, which way is better, and
    what UIPE's alpha sweep does with it (`role`)."""

    key: str
    label: str
    higher_is_better: bool
    value: float | None = None  # None in a suite's declaration (`Suite.HEADLINE`) and where a summary lacks it
    role: str | None = None  # FORGET | UTILITY (the sweep's rule), None: reported only
    needs_retain_log: bool = False  # computed only against the retain model's log (TOFU's forget quality)
    log_scale: bool = False  # spans orders of magnitude (a p-value): 3 significant digits, a log axis

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in HEADLINE_ROLES:
            raise ValueError(f"Headline({self.key!r}, role={self.role!r}): role in {HEADLINE_ROLES} or None")

    @property
    def fmt(self) -> str:
        """Its format spec in tables: 3 significant digits on a log scale, else 4 decimals."""
        return ".3g" if self.log_scale else ".4f"


class Suite(abc.ABC):
    """A benchmark. Subclasses are stateless: every method takes the run's config sections it needs."""

    NAME: str
    HEADLINE: tuple[Headline, ...]  # the declaration (values None); `headline(summary)` fills them in
    # (summary key, label): numbers UIPE's sweep records and tabulates per alpha besides the headline (may be None)
    SWEEP_DETAILS: tuple[tuple[str, str], ...] = ()
    # Whether its evaluation generates under eval.max_length / eval.max_new_tokens: only then are those checked
    # against the model's context (config_bounds.check_generation_fits). WMDP never generates; MUSE generates
    # under its own caps (data.muse.*_max_new_tokens), checked prompt by prompt in its check_eval_inputs.
    USES_GENERATION_CAPS: bool = True

    # -- training sets ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def training_set(self, data, role: str) -> TrainingSet:
        """The forget or retain set (`role`) of the run's data (a DataConfig), validated."""

    @abc.abstractmethod
    def finetune_set(self, data, target: str) -> TrainingSet:
        """What a fine-tuned model learns (role "finetune"): `target` "full" (the model to unlearn from) or
        "retain" (the retrained model, the reference of forgetting)."""

    @abc.abstractmethod
    def corpus(self, data) -> list[str]:
        """Every string of the training and evaluation sets (a locally trained tokenizer must cover them)."""

    @abc.abstractmethod
    def synthetic_data(self, data) -> Mapping[str, list[dict]]:
        """The suite's offline data (``data.source=synthetic``): every split by name, deterministic in its seed."""

    # -- input checks ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def check_eval_inputs(self, tokenizer, data, eval_cfg, positions: int | None = None) -> None:
        """Load and encode every evaluation set without a model; DataError / ModelError (one line) if one fails.
        `positions`: the model's context (max_position_embeddings) where known, for generation caps."""

    @abc.abstractmethod
    def check_retain_log(self, path: str, cfg, key: str = "eval.retain_log") -> Any:
        """The retain model's log at `path` (given as config / CLI `key`), validated against this run's
        evaluation (`cfg` a RunConfig); the loaded log."""

    # -- evaluation --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def evaluate(self, module, tokenizer, data, eval_cfg) -> Any:
        """The suite's log of `module` (an HF causal LM, or a DeepSpeed engine's `.module` at any ZeRO stage).
        Every rank must call this; all get the whole log."""

    def evaluate_saved(self, model_dir: str | os.PathLike[str], cfg) -> Any:
        """The log of a saved HF model dir (one replica per rank; every rank must call this), `cfg` a RunConfig."""
        from dsunlearn.eval.saved import load_saved

        model, tokenizer = load_saved(model_dir, cfg.model)
        return self.evaluate(model, tokenizer, cfg.data, cfg.eval)

    @abc.abstractmethod
    def write_eval(self, out_dir: str | os.PathLike[str], log: Any, retain_log: Any = None) -> dict[str, float]:
        """Write the log and ``summary.json`` into ``<out_dir>/eval/`` (rank 0, atomically); every rank gets the
        summary. `retain_log` (a log or a path) adds what needs the retain model."""

    @abc.abstractmethod
    def eval_files(self) -> tuple[str, ...]:
        """The names an evaluation writes (or a copied log may hold) in ``<out>/eval/``: what --overwrite removes."""

    # -- metrics and summary ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def load_log(self, path: str | os.PathLike[str], forget_only: bool = False) -> Any:
        """A log from disk, validated; `forget_only`: only what a retain log contributes."""

    @abc.abstractmethod
    def summarize(self, log: Any, retain_log: Any = None) -> dict[str, float]:
        """The flat summary of a log (pure: no I/O, no ranks), with the retain model's log where given."""

    @abc.abstractmethod
    def format_summary(self, summary: Mapping[str, float], as_json: bool = False) -> str:
        """The summary for a terminal: an aligned table, or JSON."""

    def headline(self, summary: Mapping[str, float]) -> tuple[Headline, ...]:
        """The headline numbers of `summary` (value None where it lacks one, e.g. no retain log)."""
        return tuple(dataclasses.replace(h, value=summary.get(h.key)) for h in self.HEADLINE)


class SingleLogSuite(Suite):
    """A suite whose evaluation writes one log in open-unlearning's layout (``eval/metric_log.py``), named
    `LOG_FILE`, next to ``summary.json`` (MUSE, WMDP); its logs are read back from that file or its directory."""

    LOG_FILE: str  # "MUSE_EVAL.json": open-unlearning's <benchmark>_EVAL.json

    def eval_files(self) -> tuple[str, ...]:
        return (self.LOG_FILE, SUMMARY_FILE)

    def load_log(self, path: str | os.PathLike[str], forget_only: bool = False) -> dict:
        """The log at `path`: the log file, or a directory holding one (an ``eval/`` dir, open-unlearning's output
        dir); checked (`metric_log.load`). `forget_only` changes nothing: the whole log is the reference."""
        from pathlib import Path

        from dsunlearn.eval import metric_log

        p = Path(path)
        return metric_log.load(p / self.LOG_FILE if p.is_dir() else p)


def write_log_and_summary(
    out_dir: str | os.PathLike[str], log_file: str, log: Mapping[str, Any], summary: dict[str, float]
) -> dict[str, float]:
    """The tail of a one-log suite's `write_eval` (MUSE, WMDP): rank 0 writes `log` (open-unlearning's layout,
    ``eval/metric_log.py``) as ``<out_dir>/eval/<log_file>`` and `summary` as ``<out_dir>/eval/summary.json``,
    each atomically; every rank waits for that (a barrier) and returns `summary`. Everything that can fail on
    bad input (the summary, a reference log) is computed by the caller before, so nothing is half-written."""
    from dsunlearn import dist
    from dsunlearn.eval import metric_log
    from dsunlearn.fsutil import atomic_write_json
    from dsunlearn.run_layout import RunDir

    if dist.is_main():
        where = RunDir(out_dir).eval
        metric_log.save(where / log_file, log)
        atomic_write_json(where / SUMMARY_FILE, summary)
    dist.barrier()
    return summary
