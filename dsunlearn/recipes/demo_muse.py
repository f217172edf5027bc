"""`dsunlearn demo --suite muse`: MUSE on the embedded default, offline, on CPU (or GPUs).

Synthetic MUSE-format news corpus -> tokenizer + tiny Llama -> fine-tune the target (forget + retain1 +
retain2 documents) and the retrained model (retain1 + retain2) on text windows, both evaluated (the target's
PrivLeak against the retrained model's log) -> unlearning with GA, GradDiff, NPO and WGA, each alone and with
GRU, each evaluated -> the MUSE table (VerbMem_f, KnowMem_f, KnowMem_r, PrivLeak), summary.json, report.md
and a plot. Runs in the demo's process group (`recipes/demo.py`: claiming the directory, relaunching under
torchrun), through the suite demos' loop (`recipes/demo_suite.py`); the directory layout is the TOFU demo's
(finetune/, runs/<name>/, plots/).
"""

from __future__ import annotations

from pathlib import Path

from dsunlearn.recipes.demo_suite import SuiteDemo, bar_chart, finetune_then_unlearn, table, target_summary
from dsunlearn.run_layout import RunDir

# (objective, GRU, overrides of tiny_muse_unlearn): each objective alone and with GRU; GA has no retain term.
RUNS = [(obj, gru, [f"objective.retain_loss={'none' if obj == 'ga' else 'nll'}"])
        for obj in ("ga", "graddiff", "npo", "wga") for gru in (False, True)]  # fmt: skip
COLUMNS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
# --quick: the same pipeline on a few articles and steps (a smoke test, not a result).
QUICK = ["data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4", "data.muse.n_icl=2",
         "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.intermediate_size=64",
         "model.tiny.vocab_size=400", "data.muse.verbmem_max_new_tokens=8",
         "data.muse.knowmem_max_new_tokens=6"]  # fmt: skip


def _baselines(ft: RunDir) -> list[tuple[str, dict]]:
    """The target, and the retrained model scored against its own log (PrivLeak 0 by definition)."""
    from dsunlearn.suites import get_suite

    suite = get_suite("muse")
    retain_log = suite.load_log(RunDir(ft.root / "retain").eval)
    return [("target", target_summary(ft)), ("retrained", suite.summarize(retain_log, retain_log))]


DEMO = SuiteDemo(suite="muse", title="MUSE", finetuned="the target and the retrained tiny models", columns=COLUMNS,
                 runs=RUNS, quick_runs=RUNS[4:6], quick=QUICK, baselines=_baselines,
                 common=lambda ft: [f"eval.retain_log={RunDir(ft.root / 'retain').eval}"])  # fmt: skip


def run_muse(out: Path, quick: bool, world: int) -> list[dict]:
    """Every phase on all ranks; returns the table's rows (target, retrained, then one per unlearning run)."""
    return finetune_then_unlearn(out, quick, world, DEMO)


def muse_table(rows: list[dict]) -> str:
    """Markdown table of the MUSE rows, with KnowMem_r relative to the target's."""
    columns = (("verbmem_f", "VerbMem_f"), ("knowmem_f", "KnowMem_f"), ("knowmem_r", "KnowMem_r"),
               ("privleak", "PrivLeak"))  # fmt: skip
    return table(rows, columns, ("knowmem_r", "KnowMem_r / target"), ".1f")


def plot_muse(rows: list[dict], path: str | Path) -> Path:
    """One bar group per model: VerbMem_f, KnowMem_f, KnowMem_r (x100) and |PrivLeak|; the retrained model's
    bars are the goal on the forget metrics, the target's on KnowMem_r."""
    series = tuple(zip(COLUMNS, ("VerbMem_f", "KnowMem_f", "KnowMem_r", "|PrivLeak|"), strict=True))
    return bar_chart(rows, series, path, figsize=(12, 4.5), value=abs, ylabel="score (ROUGE-L F1 x 100; |PrivLeak| %)",
                     title="MUSE on the synthetic corpus: forget metrics should fall to the retrained model's, "
                     "KnowMem_r stay")  # fmt: skip


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
