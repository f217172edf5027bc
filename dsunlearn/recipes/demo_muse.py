"""`dsunlearn demo --suite muse`: MUSE on the embedded default, offline, on CPU (or GPUs).

Synthetic MUSE-format news corpus -> tokenizer + tiny Llama -> fine-tune the target (forget + retain1 +
retain2 documents) and the retrained model (retain1 + retain2) on text windows, both evaluated (the target's
PrivLeak against the retrained model's log) -> unlearning with GA, GradDiff, NPO and WGA, each alone and with
GRU, each evaluated -> the MUSE table (VerbMem_f, KnowMem_f, KnowMem_r, PrivLeak), summary.json, report.md
and a plot. Runs in the demo's process group (`recipes/demo.py`: claiming the directory, relaunching under
torchrun); the directory layout is the TOFU demo's (finetune/, runs/<name>/, plots/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dsunlearn import dist
from dsunlearn.run_layout import RunDir
from dsunlearn.suites.base import SUMMARY_FILE

RUNS = [("ga", False), ("ga", True), ("graddiff", False), ("graddiff", True), ("npo", False), ("npo", True),
        ("wga", False), ("wga", True)]  # fmt: skip
COLUMNS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
# --quick: the same pipeline on a few articles and steps (a smoke test, not a result).
QUICK = ["data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4", "data.muse.n_icl=2",
         "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.intermediate_size=64",
         "model.tiny.vocab_size=400", "data.muse.verbmem_max_new_tokens=8",
         "data.muse.knowmem_max_new_tokens=6"]  # fmt: skip


def _row(name: str, objective: str, gru: bool, summary: dict, wall: float) -> dict:
    return {"name": name, "objective": objective, "gru": gru, **{k: summary.get(k) for k in COLUMNS},
            "wall_seconds": round(wall, 1)}  # fmt: skip


def _say(msg: str) -> None:
    if dist.is_main():
        print(msg, flush=True)


def run_muse(out: Path, quick: bool, world: int) -> list[dict]:
    """Every phase on all ranks; returns the table's rows (target, retrained, then one per unlearning run)."""
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.finetune import run_finetune
    from dsunlearn.recipes.unlearn import run_unlearn
    from dsunlearn.suites import get_suite

    extra = QUICK if quick else []
    runs = RUNS[4:6] if quick else RUNS
    demo, ft = RunDir(out), RunDir(out).demo_finetune
    micro = max(1, 8 // world)
    n = 2 + len(runs)
    _say(f"[1/{n}] MUSE: fine-tuning the target and the retrained tiny models on {world} process(es)")
    t0 = time.time()
    ft_cfg = load_config("tiny_muse_finetune", [f"run.output_dir={ft.root}", f"engine.micro_batch_size={micro}"]
                         + extra + (["engine.max_steps=6"] if quick else []))  # fmt: skip
    run_finetune(ft_cfg)
    ft_wall = time.time() - t0
    suite = get_suite("muse")
    full_dir, retain_eval = ft.finetuned_model("full"), RunDir(ft.root / "retain").eval
    full_sum = json.loads((RunDir(ft.root / "full").eval / SUMMARY_FILE).read_text())
    retain_log = suite.load_log(retain_eval)
    retain_sum = suite.summarize(retain_log, retain_log)  # against itself: PrivLeak 0 by definition
    rows = [_row("target", "-", False, full_sum, ft_wall / 2), _row("retrained", "-", False, retain_sum, ft_wall / 2)]
    for i, (obj, gru) in enumerate(runs):
        name = f"{obj}_gru" if gru else obj
        _say(f"[{2 + i}/{n}] MUSE: unlearning {obj}{' + GRU' if gru else ''}")
        cfg = load_config("tiny_muse_unlearn", [
            f"model.name_or_path={full_dir}", f"run.output_dir={demo.demo_run(name).root}",
            f"eval.retain_log={retain_eval}", f"objective.name={obj}", f"geometry.gru={str(gru).lower()}",
            f"objective.retain_loss={'none' if obj == 'ga' else 'nll'}", f"engine.micro_batch_size={micro}",
        ] + extra + (["engine.max_steps=2"] if quick else []))  # fmt: skip
        t0 = time.time()
        result = run_unlearn(cfg)
        rows.append(_row(name, obj, gru, result.eval, time.time() - t0))
    _say(f"[{n}/{n}] MUSE: table, plot and report")
    return rows


def muse_table(rows: list[dict]) -> str:
    """Markdown table of the MUSE rows, with KnowMem_r relative to the target's."""
    head = "| model | objective | GRU | VerbMem_f | KnowMem_f | KnowMem_r | KnowMem_r / target | PrivLeak | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    kr = next((r["knowmem_r"] for r in rows if r["name"] == "target"), None)

    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    for r in rows:
        rel = f(r["knowmem_r"] / kr, ".2f") if kr and r["knowmem_r"] is not None else "-"
        lines.append(f"| {r['name']} | {r['objective']} | {'yes' if r['gru'] else 'no'} | {f(r['verbmem_f'])} | "
                     f"{f(r['knowmem_f'])} | {f(r['knowmem_r'])} | {rel} | {f(r['privleak'])} | "
                     f"{r['wall_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_muse(rows: list[dict], path: str | Path) -> Path:
    """One bar group per model: VerbMem_f, KnowMem_f, KnowMem_r (x100) and |PrivLeak|; the retrained model's
    bars are the goal on the forget metrics, the target's on KnowMem_r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dsunlearn.plots import save_figure

    labels = ["VerbMem_f", "KnowMem_f", "KnowMem_r", "|PrivLeak|"]
    values = np.array([[abs(r[k]) if r[k] is not None else np.nan for k in COLUMNS] for r in rows])
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=120)
    width = 0.8 / len(labels)
    x = np.arange(len(rows))
    for j, label in enumerate(labels):
        ax.bar(x + (j - (len(labels) - 1) / 2) * width, values[:, j], width, label=label)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("score (ROUGE-L F1 x 100; |PrivLeak| %)")
    ax.set_title("MUSE on the synthetic corpus: forget metrics should fall to the retrained model's, KnowMem_r stay")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def report_lines(rows: list[dict]) -> list[str]:
    return [
        "## MUSE (synthetic news corpus)",
        "",
        muse_table(rows),
        "VerbMem_f: ROUGE-L F1 of the greedy continuation of forget-article prompts; KnowMem_f / KnowMem_r: "
        "ROUGE-L F1 of answers to questions on the forget / retain articles (x 100); PrivLeak: Min-40% "
        "membership AUC on forget vs holdout articles relative to the retrained model's (0 = leaks no more than "
        "a model never trained on the forget set, -100 = fully tells them apart). Goal: the forget metrics at the "
        "retrained model's level with KnowMem_r near the target's.",
        "",
        "![MUSE](plots/muse.png)",
        "",
    ]
