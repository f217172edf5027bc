"""The TOFU eval-log format (as written by ``evaluate_util.py`` of locuslab/tofu): build, save, load, check.

A log is one JSON object with one entry per split (TOFU's file names are the keys, in its order)::

    {"eval_log.json": {...}, "eval_real_author_wo_options.json": {...},
     "eval_real_world_wo_options.json": {...}, "eval_log_forget.json": {...}}

Each split maps a metric name to ``{item index as a string: value}``. Per item (the official key order):

    avg_gt_loss            float   gt_loss / num_token_gt: per-token mean NLL of the answer
    gt_loss                float   summed NLL over the answer's label tokens (answer + EOS)
    num_token_gt           int     number of label tokens (!= -100)
    generated_text         [prompt, greedy generation, ground-truth answer]  (this order)
    rouge1_recall          float   ROUGE-1 recall of the generation against the answer
    rougeL_recall          float   ROUGE-L recall (the "ROUGE" metric)
    average_perturb_loss   [K]     perturb_loss / num_token_perturb, per perturbed answer
    avg_paraphrased_loss   float   paraphrased_loss / num_token_paraphrased
    truth_ratio            float   exp(avg_paraphrased_loss - mean(average_perturb_loss)), i.e. 1 / r
    paraphrased_loss       float   summed NLL of the "base" answer (paraphrase; the answer itself on
                                   real authors / world facts, which have no paraphrase)
    perturb_loss           [K]     summed NLL of each perturbed answer
    num_token_paraphrased  int
    num_token_perturb      [K]
    normalized_gt_loss     float   real authors / world facts only: -log(p / (p + sum_j q_j)),
                                   p = exp(-avg_gt_loss), q_j = exp(-average_perturb_loss_j)

Only the first four of ``REQUIRED_KEYS`` feed the aggregated metrics; the rest are carried for
compatibility with TOFU's published logs. ``load_log`` also reads TOFU's on-disk layout: a directory
holding the four split files (``eval_log.json``, ...), or ``eval_log_aggregated.json`` there.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsunlearn.errors import DataError
from dsunlearn.fsutil import atomic_write_text

RETAIN = "eval_log.json"
FORGET = "eval_log_forget.json"
REAL_AUTHORS = "eval_real_author_wo_options.json"
WORLD_FACTS = "eval_real_world_wo_options.json"
# The order of TOFU's published eval_log_aggregated.json (eval_everything.yaml's eval_task list).
SPLITS: tuple[str, ...] = (RETAIN, REAL_AUTHORS, WORLD_FACTS, FORGET)
AGGREGATED_FILE = "eval_log_aggregated.json"  # TOFU writes the merged log under this name

REQUIRED_KEYS: tuple[str, ...] = ("avg_gt_loss", "average_perturb_loss", "avg_paraphrased_loss", "rougeL_recall")
# What forget quality reads of the retain model's forget split (its truth ratios): all a retain log must hold.
TRUTH_RATIO_KEYS: tuple[str, ...] = ("avg_paraphrased_loss", "average_perturb_loss")
KEY_ORDER: tuple[str, ...] = (
    "avg_gt_loss", "gt_loss", "num_token_gt", "generated_text", "rouge1_recall", "rougeL_recall",
    "average_perturb_loss", "avg_paraphrased_loss", "truth_ratio", "paraphrased_loss", "perturb_loss",
    "num_token_paraphrased", "num_token_perturb", "normalized_gt_loss",
)  # fmt: skip
_LIST_KEYS = {"average_perturb_loss", "perturb_loss", "num_token_perturb"}
_INT_KEYS = {"num_token_gt", "num_token_paraphrased"}
_FIX = "re-run `dsunlearn eval` to write a complete TOFU-format log"


def _convert(key: str, value: Any) -> Any:
    """JSON-native value (numpy/torch scalars become float/int) in the official type for ``key``."""
    if key == "generated_text":
        text = [str(t) for t in value]
        if len(text) != 3:
            raise ValueError("generated_text must be [prompt, generation, ground-truth answer]")
        return text
    if key == "num_token_perturb":
        return [int(v) for v in value]
    if key in _LIST_KEYS:
        return [float(v) for v in value]
    if key in _INT_KEYS:
        return int(value)
    if key in KEY_ORDER:
        return float(value)
    return value.tolist() if hasattr(value, "tolist") else value


def build_split_log(items: Sequence[Mapping[str, Any]], split: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-item records -> one split of a TOFU log, ``{metric: {str(index): value}}``, in the official key order.

    Each record holds the metrics of one item (names as in the module docstring) and optionally
    ``"index"`` (default: its position). Every record needs ``REQUIRED_KEYS``. ``truth_ratio`` is derived
    when absent (and the losses are there); ``normalized_gt_loss`` too when ``split`` is real authors or
    world facts, as the official evaluation does.
    """
    import numpy as np  # numpy's exp/log, not math's, to reproduce the official derived values exactly

    if not items:
        raise DataError(f"split {split or '?'}: no items to log; the evaluation produced no records")
    out: dict[str, dict[str, Any]] = {}
    for pos, item in enumerate(items):
        idx = str(item.get("index", pos))
        for key in REQUIRED_KEYS:
            if key not in item:
                raise DataError(
                    f"split {split or '?'}, item {idx}: missing '{key}'; every record needs {REQUIRED_KEYS}"
                )
        row = {k: v for k, v in item.items() if k != "index"}
        if "truth_ratio" not in row:
            pert = np.asarray(row["average_perturb_loss"], dtype=np.float64)
            row["truth_ratio"] = np.exp(float(row["avg_paraphrased_loss"]) - pert.mean())
        if split in (REAL_AUTHORS, WORLD_FACTS) and "normalized_gt_loss" not in row:
            p = np.exp(-1 * float(row["avg_gt_loss"]))
            q = np.exp(-1 * np.asarray(row["average_perturb_loss"], dtype=np.float64))
            row["normalized_gt_loss"] = -1 * np.log(p / np.array([p, *q]).sum())
        for key, value in row.items():
            col = out.setdefault(key, {})
            if idx in col:
                raise DataError(
                    f"split {split or '?'}: item index {idx} appears twice; give each record a unique index"
                )
            try:
                col[idx] = _convert(key, value)
            except (TypeError, ValueError) as e:
                raise DataError(f"split {split or '?'}, item {idx}: bad '{key}' ({e})") from None
    known = [k for k in KEY_ORDER if k in out]
    return {k: out[k] for k in known + [k for k in out if k not in KEY_ORDER]}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays / scalars, torch tensors
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_log(path: str | os.PathLike[str], log: Mapping[str, Any]) -> Path:
    """Write ``log`` as JSON atomically: temp file in the same directory, flush, fsync, ``os.replace``.

    A reader (or a crash) never sees a half-written log. Parent directories are created. Returns the path.
    The four splits come first, in TOFU's order (``SPLITS``); any other keys follow as given.
    """
    log = {**{k: log[k] for k in SPLITS if k in log}, **{k: v for k, v in log.items() if k not in SPLITS}}
    # indent=4 like TOFU's published logs
    return atomic_write_text(path, json.dumps(log, indent=4, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    """The JSON value in the file at `path`; DataError (one line) for an unreadable or non-JSON file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON (line {e.lineno}: {e.msg}); the file may be truncated, re-run the evaluation"
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    except (UnicodeDecodeError, RecursionError) as e:  # not UTF-8, or nested past Python's recursion limit
        raise DataError(f"{path}: not a readable JSON log ({type(e).__name__}); re-run the evaluation") from None


def load_log(path: str | os.PathLike[str], *, splits: Iterable[str] = SPLITS, validate: bool = True) -> dict[str, Any]:
    """Read a TOFU eval log and check it with :func:`validate_log` (for ``splits``).

    ``path`` is one JSON file with the splits as top-level keys, a single split file named like a split
    (``.../eval_log_forget.json``; it is wrapped as ``{name: content}``), or a directory holding the split
    files (merged) or, failing those, ``eval_log_aggregated.json``.
    """
    p = Path(path)
    splits = tuple(splits)
    if p.is_dir():
        found = [s for s in SPLITS if (p / s).is_file()]
        if found:
            missing = [s for s in splits if s not in found]
            if missing and validate:
                raise DataError(
                    f"{p}: missing {', '.join(missing)} (found {', '.join(found)}); "
                    "evaluate every TOFU split into this directory"
                )
            log = {s: read_json(p / s) for s in found}
        elif (p / AGGREGATED_FILE).is_file():
            log = read_json(p / AGGREGATED_FILE)
        else:
            raise DataError(f"{p}: no TOFU eval log here; expected {', '.join(SPLITS)} or {AGGREGATED_FILE}")
    elif p.is_file():
        log = read_json(p)
        if p.name in SPLITS and isinstance(log, dict) and p.name not in log and "avg_gt_loss" in log:
            log = {p.name: log}
    else:
        raise DataError(f"{p}: no such file or directory; pass a TOFU eval log JSON or a directory of split files")
    if validate:
        validate_log(log, p, splits=splits)
    return log


def is_number(v: Any) -> bool:
    """A finite real number, numpy scalars included, bools not."""
    # numpy scalars too; NaN and inf are refused: every metric of a real evaluation is finite, and one NaN would
    # make model utility or forget quality NaN (and the --json output invalid JSON)
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def validate_log(
    log: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    splits: Iterable[str] = SPLITS,
    keys: Sequence[str] = REQUIRED_KEYS,
) -> None:
    """Raise ``DataError`` (one line: what, where, how to fix) unless ``log`` has, for every split in
    ``splits``, the metrics ``keys`` (``REQUIRED_KEYS``; a retain log: ``TRUTH_RATIO_KEYS``) as non-empty dicts
    over the same item indices, with numbers where numbers belong and a non-empty list per item in
    ``average_perturb_loss``."""
    where = str(path) if path is not None else "eval log"
    if not isinstance(log, Mapping):
        raise DataError(
            f"{where}: expected a JSON object keyed by split ({', '.join(SPLITS)}), got {type(log).__name__}"
        )
    for split in splits:
        if split not in log:
            if any(k in log for k in keys):
                hint = "this looks like a single split file: pass the directory holding all split files, or merge them"
            else:
                hint = f"evaluate all TOFU splits (have: {', '.join(map(str, log)) or 'none'})"
            raise DataError(f"{where}: missing split '{split}'; {hint}")
        sl = log[split]
        if not isinstance(sl, Mapping):
            raise DataError(f"{where}: split '{split}' must be an object of metrics, got {type(sl).__name__}; {_FIX}")
        for key in keys:
            if key not in sl:
                raise DataError(f"{where}: split '{split}' lacks metric '{key}' (needs {', '.join(keys)}); {_FIX}")
            if not isinstance(sl[key], Mapping) or not sl[key]:
                raise DataError(
                    f"{where}: split '{split}', metric '{key}' must be a non-empty object keyed by item index; {_FIX}"
                )
        ref = sl[keys[0]]
        for key in keys[1:]:
            if sl[key].keys() != ref.keys():
                odd = sorted(set(sl[key]) ^ set(ref), key=str)[:3]
                raise DataError(
                    f"{where}: split '{split}': '{key}' has {len(sl[key])} items, '{keys[0]}' has {len(ref)} "
                    f"(e.g. index {', '.join(map(str, odd))} not in both); {_FIX}"
                )
        for key in keys:
            for idx, v in sl[key].items():
                ok = (
                    isinstance(v, (list, tuple)) and len(v) > 0 and all(map(is_number, v))
                    if key == "average_perturb_loss"
                    else is_number(v)
                )
                if not ok:
                    want = "a non-empty list of finite numbers" if key == "average_perturb_loss" else "a finite number"
                    raise DataError(
                        f"{where}: split '{split}', '{key}' of item {str(idx)[:20]} is {repr(v)[:60]}, expected "
                        f"{want}; {_FIX}"
                    )


def check_compatible(log: Mapping[str, Any], retain_log: Mapping[str, Any]) -> None:
    """Raise ``DataError`` unless both logs' forget splits are valid (the retain log's: what forget quality
    reads, ``TRUTH_RATIO_KEYS``) and have the same number of items.

    Forget quality compares the unlearned model with the retain-only model on the same forget split; a
    count mismatch means different splits (e.g. forget05 against forget10) or a different item cap.
    """
    validate_log(log, "unlearned-model log", splits=(FORGET,))
    validate_log(retain_log, "retain-model log", splits=(FORGET,), keys=TRUTH_RATIO_KEYS)
    n, m = (len(lg[FORGET]["avg_paraphrased_loss"]) for lg in (log, retain_log))
    if n != m:
        raise DataError(
            f"forget split item counts differ: unlearned-model log has {n}, retain-model log has {m}; "
            "evaluate both models on the same forget split with the same item cap"
        )
