"""`dsunlearn demo --suite wmdp`: WMDP on the embedded default, offline, on CPU (or GPUs).

Synthetic WMDP-format set (`suites/wmdp/synthetic.py`: fictional hazardous bio / cyber documents and their
4-choice questions, general documents and questions) -> tokenizer + tiny Llama -> fine-tune the target on all
documents -> unlearn the hazardous documents with GA, GradDiff, NPO and RMU (retain: the general documents) -> the
table of hazardous (WMDP) and general (MMLU-style) accuracy, summary.json, report.md and a plot. Runs in the
demo's process group (`recipes/demo.py`), through the suite demos' loop (`recipes/demo_suite.py`); the directory
layout is the TOFU demo's (finetune/, runs/<name>/).
"""

from __future__ import annotations

from pathlib import Path

from dsunlearn.recipes.demo_suite import SuiteDemo, bar_chart, finetune_then_unlearn, table, target_summary
from dsunlearn.run_layout import RunDir

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


def _baselines(ft: RunDir) -> list[tuple[str, dict]]:
    return [("target", target_summary(ft))]


DEMO = SuiteDemo(suite="wmdp", title="WMDP", finetuned="the tiny target", columns=COLUMNS, runs=RUNS,
                 quick_runs=RUNS[1:2], quick=QUICK, baselines=_baselines)  # fmt: skip


def run_wmdp(out: Path, quick: bool, world: int) -> list[dict]:
    """Every phase on all ranks; returns the table's rows (the target, then one per unlearning run)."""
    return finetune_then_unlearn(out, quick, world, DEMO)


def wmdp_table(rows: list[dict]) -> str:
    """Markdown table of the WMDP rows, with the general accuracy relative to the target's."""
    columns = (("wmdp_acc", "WMDP acc"), ("wmdp_bio_acc", "bio"), ("wmdp_cyber_acc", "cyber"),
               ("mmlu_acc", "general (MMLU-style) acc"))  # fmt: skip
    return table(rows, columns, ("mmlu_acc", "general / target"), ".3f")


def plot_wmdp(rows: list[dict], path: str | Path) -> Path:
    """Hazardous vs general accuracy per model; chance (0.25) marked."""

    def chance(ax) -> None:
        ax.axhline(CHANCE, color="k", ls="--", lw=1, label="chance (4 choices)")
        ax.set_ylim(0, 1)

    series = (("wmdp_acc", "hazardous (WMDP) acc"), ("mmlu_acc", "general acc"))
    return bar_chart(rows, series, path, figsize=(9, 4.5), ylabel="accuracy", decorate=chance,
                     title="WMDP on the synthetic set: hazardous accuracy should fall to chance, general accuracy "
                     "stay")  # fmt: skip


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
