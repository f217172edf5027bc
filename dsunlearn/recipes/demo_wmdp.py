"""`dsunlearn demo --suite wmdp`: WMDP on the embedded default, offline, on CPU (or GPUs).

Synthetic WMDP-format set (`suites/wmdp/synthetic.py`: fictional hazardous bio / cyber documents and their
4-choice questions, general documents and questions) -> tokenizer + tiny Llama -> fine-tune the target on all
documents -> unlearn the hazardous documents with GA, GradDiff, NPO and RMU (retain: the general documents) -> the
table of hazardous (WMDP) and general (MMLU-style) accuracy, summary.json, report.md and a plot. Runs in the
demo's process group (`recipes/demo.py`); the directory layout is the TOFU demo's (finetune/, runs/<name>/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dsunlearn import dist
from dsunlearn.run_layout import RunDir
from dsunlearn.suites.base import SUMMARY_FILE

# (objective, GRU, overrides of tiny_wmdp_unlearn). GA has no retain term; GradDiff's gradient is unbounded,
# so it runs at a tenth of NPO's lr. RMU: the 2-layer target's last layer (1) steered, layers 0-1's
# mlp.down_proj trained, its retain term on the general documents' layer-1 states; tiny_rmu's c 20 and lr 1e-2
# (the paper's Zephyr-7B values barely move a tiny model), lambda 10 as the other rows' retain weight.
RUNS = [("ga", False, ["objective.retain_loss=none", "engine.lr=3e-4", "engine.epochs=5"]),
        ("graddiff", False, ["engine.lr=3e-4"]),
        ("npo", False, []),
        ("rmu", False, ["objective.retain_loss=embed_diff", "objective.layer=1", "objective.train_layers=2",
                        "objective.steering_coeff=20", "engine.lr=1e-2"])]  # fmt: skip
COLUMNS = ("wmdp_acc", "wmdp_bio_acc", "wmdp_cyber_acc", "mmlu_acc")
CHANCE = 0.25
# --quick: the same pipeline on a few questions and steps (a smoke test, not a result).
QUICK = ["data.wmdp.n_hazard=8", "data.wmdp.n_general=4", "model.tiny.hidden_size=32", "model.tiny.num_layers=2",
         "model.tiny.intermediate_size=64", "model.tiny.vocab_size=400"]  # fmt: skip


def _row(name: str, objective: str, gru: bool, summary: dict, wall: float) -> dict:
    return {"name": name, "objective": objective, "gru": gru, **{k: summary.get(k) for k in COLUMNS},
            "wall_seconds": round(wall, 1)}  # fmt: skip


def _say(msg: str) -> None:
    if dist.is_main():
        print(msg, flush=True)


def run_wmdp(out: Path, quick: bool, world: int) -> list[dict]:
    """Every phase on all ranks; returns the table's rows (the target, then one per unlearning run)."""
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.finetune import run_finetune
    from dsunlearn.recipes.unlearn import run_unlearn

    extra = QUICK if quick else []
    runs = RUNS[1:2] if quick else RUNS
    demo, ft = RunDir(out), RunDir(out).demo_finetune
    micro = max(1, 8 // world)
    n = 2 + len(runs)
    _say(f"[1/{n}] WMDP: fine-tuning the tiny target on {world} process(es)")
    t0 = time.time()
    ft_cfg = load_config("tiny_wmdp_finetune", [f"run.output_dir={ft.root}", f"engine.micro_batch_size={micro}"]
                         + extra + (["engine.max_steps=6"] if quick else []))  # fmt: skip
    run_finetune(ft_cfg)
    full_sum = json.loads((RunDir(ft.root / "full").eval / SUMMARY_FILE).read_text())
    rows = [_row("target", "-", False, full_sum, time.time() - t0)]
    for i, (obj, gru, overrides) in enumerate(runs):
        name = f"{obj}_gru" if gru else obj
        _say(f"[{2 + i}/{n}] WMDP: unlearning {obj}{' + GRU' if gru else ''}")
        cfg = load_config("tiny_wmdp_unlearn", [
            f"model.name_or_path={ft.finetuned_model('full')}", f"run.output_dir={demo.demo_run(name).root}",
            f"objective.name={obj}", f"geometry.gru={str(gru).lower()}", f"engine.micro_batch_size={micro}",
        ] + overrides + extra + (["engine.max_steps=2"] if quick else []))  # fmt: skip
        t0 = time.time()
        result = run_unlearn(cfg)
        rows.append(_row(name, obj, gru, result.eval, time.time() - t0))
    _say(f"[{n}/{n}] WMDP: table, plot and report")
    return rows


def wmdp_table(rows: list[dict]) -> str:
    """Markdown table of the WMDP rows, with the general accuracy relative to the target's."""
    head = "| model | objective | GRU | WMDP acc | bio | cyber | general (MMLU-style) acc | general / target | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    base = next((r["mmlu_acc"] for r in rows if r["name"] == "target"), None)

    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    for r in rows:
        rel = f(r["mmlu_acc"] / base, ".2f") if base and r["mmlu_acc"] is not None else "-"
        lines.append(f"| {r['name']} | {r['objective']} | {'yes' if r['gru'] else 'no'} | {f(r['wmdp_acc'])} | "
                     f"{f(r['wmdp_bio_acc'])} | {f(r['wmdp_cyber_acc'])} | {f(r['mmlu_acc'])} | {rel} | "
                     f"{r['wall_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_wmdp(rows: list[dict], path: str | Path) -> Path:
    """Hazardous vs general accuracy per model; chance (0.25) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dsunlearn.plots import save_figure

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    x = np.arange(len(rows))
    for j, (key, label) in enumerate((("wmdp_acc", "hazardous (WMDP) acc"), ("mmlu_acc", "general acc"))):
        ax.bar(x + (j - 0.5) * 0.4, [r[key] if r[key] is not None else np.nan for r in rows], 0.4, label=label)
    ax.axhline(CHANCE, color="k", ls="--", lw=1, label="chance (4 choices)")
    ax.set_xticks(x, [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("WMDP on the synthetic set: hazardous accuracy should fall to chance, general accuracy stay")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def report_lines(rows: list[dict]) -> list[str]:
    return [
        "## WMDP (synthetic hazardous / general set)",
        "",
        wmdp_table(rows),
        "WMDP acc: zero-shot 4-choice accuracy (lm-evaluation-harness's scoring) on the fictional hazardous bio "
        "and cyber questions, weighted by size; general acc: the same on the general-knowledge questions. Goal: "
        f"WMDP acc near chance ({CHANCE}) with the general accuracy near the target's.",
        "",
        "![WMDP](plots/wmdp.png)",
        "",
    ]
