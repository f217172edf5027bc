"""The loop the suite demos (MUSE, WMDP) share: fine-tune the tiny target, then unlearn it once per run of the
demo's list, every phase on all ranks; each demo names its configs, runs, rows and columns in a `SuiteDemo`.

`recipes/demo.py: _run_suite_demo` writes what this returns (plot, summary.json, report.md). The directory
layout is the TOFU demo's: ``finetune/`` (its ``full``/``retain`` models), ``runs/<name>/`` per unlearning run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsunlearn import dist
from dsunlearn.run_layout import RunDir
from dsunlearn.suites.base import SUMMARY_FILE

# One unlearning run: (objective, GRU on, overrides of the demo's tiny_<suite>_unlearn config).
Run = tuple[str, bool, list[str]]


@dataclass(frozen=True)
class SuiteDemo:
    """What one suite's demo runs. Configs: the shipped ``tiny_<suite>_finetune`` and ``tiny_<suite>_unlearn``."""

    suite: str  # "muse": the configs' infix
    title: str  # "MUSE": the progress lines' prefix
    finetuned: str  # what phase 1 fine-tunes, in its progress line ("the tiny target")
    columns: tuple[str, ...]  # the summary keys a row keeps
    runs: Sequence[Run]
    quick_runs: Sequence[Run]  # --quick: these only
    quick: Sequence[str]  # --quick: overrides of both configs (a smoke test, not a result)
    # (finetune dir) -> [(row name, summary)] of the fine-tuned models, the table's first rows; the phase's wall
    # time is split evenly between them
    baselines: Callable[[RunDir], list[tuple[str, dict]]]
    # (finetune dir) -> overrides every unlearning run takes besides its own (MUSE: the retrained model's log)
    common: Callable[[RunDir], list[str]] = lambda ft: []


def row(name: str, objective: str, gru: bool, summary: dict, wall: float, columns: Sequence[str]) -> dict:
    """One table row: the run's name, objective, GRU flag, `columns` of its summary (None where missing), wall s."""
    return {"name": name, "objective": objective, "gru": gru, **{k: summary.get(k) for k in columns},
            "wall_seconds": round(wall, 1)}  # fmt: skip


def table(rows: list[dict], columns: Sequence[tuple[str, str]], relative: tuple[str, str], spec: str) -> str:
    """Markdown table of a suite demo's rows: model, objective, GRU, then each (summary key, label) of `columns`
    formatted by `spec` ("-" where None) and, right after the column `relative[0]`, its ratio to the target
    row's (headed `relative[1]`, 2 decimals; "-" without a target value), then the wall seconds."""
    rel_key, rel_label = relative
    labels = [lab for key, label in columns for lab in ((label, rel_label) if key == rel_key else (label,))]
    lines = ["| model | objective | GRU | " + " | ".join(labels) + " | wall s |", "|" + "---|" * (len(labels) + 4)]
    base = next((r[rel_key] for r in rows if r["name"] == "target"), None)

    def f(v, fmt=spec):
        return "-" if v is None else format(v, fmt)

    for r in rows:
        cells = []
        for key, _ in columns:
            cells.append(f(r[key]))
            if key == rel_key:
                cells.append(f(r[key] / base, ".2f") if base and r[key] is not None else "-")
        lines.append(f"| {r['name']} | {r['objective']} | {'yes' if r['gru'] else 'no'} | {' | '.join(cells)} | "
                     f"{r['wall_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], series: Sequence[tuple[str, str]], path: str | Path, *, title: str, ylabel: str,
              figsize: tuple[float, float], value: Callable[[float], float] = lambda v: v,
              decorate: Callable[[Any], None] | None = None) -> Path:  # fmt: skip
    """One group of bars per row (model), one bar per (summary key, label) of `series`, heights `value(v)` (NaN:
    no bar, where v is None), 0.8 wide a group; `decorate(ax)` adds what a suite marks (a chance line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dsunlearn.plots import save_figure

    fig, ax = plt.subplots(figsize=figsize, dpi=120)
    width = 0.8 / len(series)
    x = np.arange(len(rows))
    for j, (key, label) in enumerate(series):
        heights = [value(r[key]) if r[key] is not None else np.nan for r in rows]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, heights, width, label=label)
    if decorate is not None:
        decorate(ax)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def target_summary(ft: RunDir) -> dict:
    """The fine-tuned target's (``finetune/full``) evaluation summary, as its fine-tuning wrote it."""
    return json.loads((RunDir(ft.root / "full").eval / SUMMARY_FILE).read_text())


def _say(msg: str) -> None:
    if dist.is_main():
        print(msg, flush=True)


def finetune_then_unlearn(out: Path, quick: bool, world: int, demo: SuiteDemo) -> list[dict]:
    """Every phase on all ranks; returns the table's rows (the baselines, then one per unlearning run)."""
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.finetune import run_finetune
    from dsunlearn.recipes.unlearn import run_unlearn

    extra = list(demo.quick) if quick else []
    runs = demo.quick_runs if quick else demo.runs
    root, ft = RunDir(out), RunDir(out).demo_finetune
    micro = max(1, 8 // world)  # a global batch of 8 whatever the world size
    n = 2 + len(runs)
    _say(f"[1/{n}] {demo.title}: fine-tuning {demo.finetuned} on {world} process(es)")
    t0 = time.time()
    ft_overrides = [f"run.output_dir={ft.root}", f"engine.micro_batch_size={micro}", *extra]
    ft_cfg = load_config(f"tiny_{demo.suite}_finetune", ft_overrides + (["engine.max_steps=6"] if quick else []))
    run_finetune(ft_cfg)
    ft_wall = time.time() - t0
    baselines = demo.baselines(ft)
    rows = [row(name, "-", False, summary, ft_wall / len(baselines), demo.columns) for name, summary in baselines]
    common = demo.common(ft)
    for i, (obj, gru, overrides) in enumerate(runs):
        name = f"{obj}_gru" if gru else obj
        _say(f"[{2 + i}/{n}] {demo.title}: unlearning {obj}{' + GRU' if gru else ''}")
        cfg = load_config(f"tiny_{demo.suite}_unlearn", [
            f"model.name_or_path={ft.finetuned_model('full')}", f"run.output_dir={root.demo_run(name).root}",
            f"objective.name={obj}", f"geometry.gru={str(gru).lower()}", f"engine.micro_batch_size={micro}",
        ] + common + overrides + extra + (["engine.max_steps=2"] if quick else []))  # fmt: skip
        t0 = time.time()
        result = run_unlearn(cfg)
        rows.append(row(name, obj, gru, result.eval, time.time() - t0, demo.columns))
    _say(f"[{n}/{n}] {demo.title}: table, plot and report")
    return rows
