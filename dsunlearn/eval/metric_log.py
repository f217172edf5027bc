"""open-unlearning's evaluation-log layout: one JSON object, one entry per metric, per-item values by index.

    {"forget_verbmem_ROUGE": {"agg_value": 0.41,
                              "value_by_index": {"0": {"rougeL_f1": 0.5, "generation": "...", ...}, ...}},
     "mia_min_k":            {"forget":  {"agg_value": 2.1, "value_by_index": {"0": {"score": 1.9}, ...}},
                              "holdout": {"agg_value": 3.0, "value_by_index": {...}},
                              "auc": 0.27, "agg_value": 0.27},
     "privleak":             {"agg_value": -43.4}}

This is the layout of open-unlearning's ``<benchmark>_EVAL.json`` (its ``evals/metrics``), so that its published
retain-model logs can serve as references (``eval.retain_log``) and its tools read ours. The rules kept here:

- ``agg_value`` of a per-item metric is the mean over the items whose value is not None (open-unlearning's
  ``np.mean`` after dropping None: an item with no scored token has no exact memorization);
- item indices are strings ``"0"``, ``"1"``, ... in item order (JSON object keys);
- an MIA entry holds the per-item ``score`` of both sets under ``forget`` / ``holdout`` and its AUC twice
  (``auc`` and ``agg_value``), as open-unlearning's ``mia_auc`` writes it.

Pure: building and checking entries does no I/O; `save` / `load` are the only file access.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsunlearn.errors import DataError

AGG = "agg_value"
BY_INDEX = "value_by_index"


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None if there are none. Example: [1, None, 3] -> 2.0."""
    kept = [float(v) for v in values if v is not None]
    return math.fsum(kept) / len(kept) if kept else None


def per_item(values: Sequence[float | None], key: str = "score", extras: Sequence[Mapping] | None = None) -> dict:
    """``{"agg_value": mean, "value_by_index": {"i": {key: v_i, **extras[i]}}}`` of one metric over items.

    `extras[i]` adds per-item fields (the prompt, the generation, ...) after the value, as open-unlearning does.
    """
    if extras is not None and len(extras) != len(values):
        raise ValueError(f"per_item: {len(values)} values but {len(extras)} extras")
    by_index = {}
    for i, v in enumerate(values):
        by_index[str(i)] = {key: None if v is None else float(v), **(dict(extras[i]) if extras is not None else {})}
    return {AGG: mean_defined(values), BY_INDEX: by_index}


def mia(forget_scores: Sequence[float], holdout_scores: Sequence[float], auc: float) -> dict:
    """An MIA entry: per-item scores of the forget (member) and holdout (non-member) sets and their AUC."""
    return {"forget": per_item(forget_scores), "holdout": per_item(holdout_scores), "auc": float(auc), AGG: float(auc)}


def scalar(value: float | None, **fields: Any) -> dict:
    """An entry with only an aggregate (PrivLeak), plus any named fields (which reference was used)."""
    return {AGG: None if value is None else float(value), **fields}


def item_values(entry: Mapping, key: str = "score") -> list[float | None]:
    """The per-item `key` values of a per-item entry, in index order ("0", "1", ...)."""
    by_index = entry[BY_INDEX]
    return [by_index[str(i)][key] for i in range(len(by_index))]


def check(log: Any, where: str) -> dict:
    """`log` if it has this layout: a mapping of metric name -> mapping with a numeric (or null) ``agg_value``
    and, where present, a ``value_by_index`` keyed "0".."n-1". DataError naming `where` and the metric else."""
    fix = "re-run `dsunlearn eval` to write it, or give open-unlearning's <benchmark>_EVAL.json"
    if not isinstance(log, Mapping) or not log:
        raise DataError(f"{where} is not an evaluation log (expected a JSON object of metrics); {fix}")
    for name, entry in log.items():
        if not isinstance(entry, Mapping) or AGG not in entry:
            raise DataError(f"{where}: metric '{name}' has no '{AGG}'; {fix}")
        agg = entry[AGG]
        if agg is not None and (not isinstance(agg, numbers.Real) or isinstance(agg, bool) or not math.isfinite(agg)):
            raise DataError(f"{where}: metric '{name}' has a non-numeric {AGG} ({str(agg)[:40]!r}); {fix}")
        for part in (entry, *(entry[s] for s in ("forget", "holdout") if isinstance(entry.get(s), Mapping))):
            by_index = part.get(BY_INDEX)
            if by_index is None:
                continue
            if not isinstance(by_index, Mapping) or set(by_index) != {str(i) for i in range(len(by_index))}:
                raise DataError(f'{where}: metric \'{name}\' {BY_INDEX} must be keyed "0".."n-1"; {fix}')
            if not all(isinstance(v, Mapping) for v in by_index.values()):
                raise DataError(f"{where}: metric '{name}' {BY_INDEX} values must be objects; {fix}")
    return dict(log)


def save(path: str | os.PathLike[str], log: Mapping) -> None:
    """Write `log` as indented JSON, atomically (never half-written)."""
    from dsunlearn.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(log, indent=2, ensure_ascii=False) + "\n")


def load(path: str | os.PathLike[str]) -> dict:
    """A log from disk, checked (`check`); DataError (one line) for a missing, non-JSON or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"evaluation log '{p}' does not exist; give the path of an <name>_EVAL.json or eval dir")
    try:
        log = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"evaluation log '{p}' is not JSON ({type(e).__name__}); re-run `dsunlearn eval`") from None
    return check(log, str(p))
