"""Printing a TOFU summary (the output of ``metrics.aggregate``): an aligned table, or JSON.

The table leads with the two headline numbers (forget quality, model utility), then every sub-metric by its
snake_case key and its official TOFU column name, split by split, then membership inference and memorization
(`mia_log.SUMMARY_NAMES`, where the log has them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from dsunlearn.suites.tofu.metrics import TOFU_NAMES
from dsunlearn.suites.tofu.mia_log import SUMMARY_NAMES as MIA_NAMES

# Display order: headline numbers, then the forget set (what unlearning changes), then the utility sets.
ORDER: tuple[str, ...] = (
    "forget_quality",
    "model_utility",
    *(f"{s}_{m}" for s in ("forget", "retain", "ra", "wf") for m in ("prob", "rouge", "truth_ratio")),
    "forget_ks_statistic",
    *MIA_NAMES,
)
NAMES = {**TOFU_NAMES, **MIA_NAMES}  # the third column


def _fmt(v: float) -> str:
    if not isinstance(v, (int, float)) or math.isnan(v):
        return str(v)
    # Forget quality spans 1e-20..1: fixed point would print 0.0000 for a clearly failing model.
    return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.3e}"


def rows(summary: Mapping[str, float]) -> list[tuple[str, str, str]]:
    """(key, formatted value, TOFU name) in display order; forget quality says why it is missing."""
    out = []
    for key in ORDER:
        if key in summary:
            out.append((key, _fmt(summary[key]), NAMES.get(key, "")))
        elif key == "forget_quality":
            out.append((key, "n/a", "needs --retain-log (the retain model's TOFU log)"))
    # Anything else a caller added (extra snake_case keys), so nothing in the summary goes unprinted.
    tofu = set(TOFU_NAMES.values())
    out += [(k, _fmt(v), "") for k, v in summary.items() if k not in ORDER and k not in tofu]
    return out


def format_table(summary: Mapping[str, float]) -> str:
    """An aligned three-column table of the summary, one metric a line."""
    table = [("metric", "value", "TOFU name"), *rows(summary)]
    w0 = max(len(r[0]) for r in table)
    w1 = max(len(r[1]) for r in table)
    return "\n".join(f"{k:<{w0}}  {v:>{w1}}  {n}".rstrip() for k, v, n in table)


def format_json(summary: Mapping[str, float]) -> str:
    """The whole summary as JSON (both key styles, as ``summary.json`` holds it)."""
    return json.dumps(dict(summary), indent=2)
