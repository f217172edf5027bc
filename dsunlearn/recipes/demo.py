"""`dsunlearn demo`: the whole pipeline on the embedded default, offline, on CPU (or GPUs).

Synthetic authors -> tokenizer + tiny Llama -> fine-tune the target and retain models -> TOFU eval of both ->
unlearning with GA, GradDiff, NPO, WGA, TNPO, each alone and with GRU, and the IdkDPO and UNDIAL baselines
(G-effect logged online) -> UIPE alpha sweep on WGA -> offline G-effect over NPO+GRU's checkpoints -> results
table, summary.json, report.md and plots. All phases run in ONE process group (`--nproc N` relaunches itself
under torchrun once), so the DeepSpeed start-up cost is paid once.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from dsunlearn import dist
from dsunlearn.fsutil import atomic_write_json, atomic_write_text
from dsunlearn.path_guard import check_writable
from dsunlearn.recipes.uipe_sweep import SweepResult
from dsunlearn.run_layout import EVAL, RunDir
from dsunlearn.rundir import claim, foreign_entry, on_main, read_marker, record_files, release_output_dir
from dsunlearn.runlock import LOCK_FILE

RUNS = [("ga", False), ("ga", True), ("graddiff", False), ("graddiff", True), ("npo", False), ("npo", True),
        ("wga", False), ("wga", True), ("tnpo", False), ("tnpo", True),
        ("dpo", False), ("undial", False)]  # fmt: skip  # the two baselines (IdkDPO, UNDIAL) alone
# UIPE extrapolates a run that forgot too little: WGA keeps utility near the fine-tuned model's (headroom).
SWEEP_RUN, SWEEP_ALPHAS = "wga", [0.1, 0.25, 0.5, 1.0]  # small steps: large ones collapse utility
GEFFECT_RUN = "npo_gru"


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """rows: the results table (summary.json), one per model; uipe: the sweep on SWEEP_RUN (TOFU only)."""

    rows: list[dict]
    wall_seconds: float
    uipe: SweepResult | None
    suite: str = "tofu"


def relaunch(out: Path, nproc: int, overwrite: bool = False, quick: bool = False, suite: str = "tofu") -> int:
    """Re-run `dsunlearn demo` under torchrun with `nproc` processes (one process group for all phases)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(dist.free_port()), "-m", "dsunlearn", "demo",
           "--output-dir", str(out)]  # fmt: skip
    # No --nproc for the children (torchrun's parser would claim it); they know from WORLD_SIZE.
    cmd += (["--overwrite"] if overwrite else []) + (["--quick"] if quick else []) + ["--suite", suite]
    env = dict(os.environ, DSUNLEARN_DEMO_CHILD="1")
    return subprocess.run(cmd, env=env).returncode


def _say(msg: str) -> None:
    if dist.is_main():
        print(msg, flush=True)


def _row(name, objective, gru, summary, wall) -> dict:
    return {"name": name, "objective": objective, "gru": gru, "forget_quality": summary.get("forget_quality"),
            "model_utility": summary["model_utility"], "forget_rouge": summary["forget_rouge"],
            "wall_seconds": round(wall, 1)}  # fmt: skip


def _eval_saved(model_dir: Path, cfg, retain_log=None) -> tuple[dict, dict]:
    """(summary, log) of a saved model; `retain_log=None` compares the model with itself (FQ = 1)."""
    from dsunlearn.suites import get_suite

    suite = get_suite(cfg.data.suite)
    log = suite.evaluate_saved(model_dir, cfg)
    return suite.write_eval(model_dir.parent, log, log if retain_log is None else retain_log), log


# --quick: the same pipeline on 12 authors and a few steps (a smoke test, not a result).
QUICK = ["data.synthetic.n_authors=12", "data.synthetic.n_world_facts=8", "data.synthetic.n_real_authors=2",
         "model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.intermediate_size=64",
         "model.tiny.vocab_size=400", "data.max_length=128", "eval.max_new_tokens=8"]  # fmt: skip


def run_demo(out: Path, overwrite: bool = False, quick: bool = False, suite: str = "tofu") -> DemoResult:
    # Under a launcher rank 0 decides for all (a process group is needed first); one process decides alone,
    # before torch and DeepSpeed are imported, so a refused demo answers in a second.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_distributed()
    _claim_demo_dir(out, overwrite)
    try:
        dist.init_distributed()
        if suite == "muse":
            return _run_muse_demo(out, quick, dist.world_size())
        if suite == "wmdp":
            return _run_wmdp_demo(out, quick, dist.world_size())
        return _run_demo(out, quick, dist.world_size())
    finally:
        release_output_dir(out)


def _claim_demo_dir(out: Path, overwrite: bool) -> None:
    """The demo directory is a run of kind `demo` (rundir.py): refused if it holds anything dsunlearn did not
    write (a user's own report.md included), locked for the demo's life, its old contents removed on
    --overwrite only after that check."""

    def claim_it():
        check_writable(out, "--output-dir")
        if out.exists() and not out.is_dir():
            return f"--output-dir '{out}' is a file; choose a directory"
        if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
            marker = read_marker(out)
            if marker is None or marker["kind"] != "demo":
                return (f"'{out}' exists and is not a dsunlearn demo; dsunlearn never deletes it, even with "
                        "--overwrite: choose another --output-dir")  # fmt: skip
            if not overwrite:
                return f"'{out}' holds a demo; pass --overwrite to replace it, or choose --output-dir"
            if (foreign := foreign_entry(out, "demo")) is not None:
                return (f"refusing --overwrite of '{out}': '{foreign}' is not something dsunlearn wrote there; "
                        "move it out, or choose another --output-dir")  # fmt: skip
        claim(out, "demo", None, overwrite=overwrite, resume=False)
        return None

    on_main(claim_it)


def _run_demo(out: Path, quick: bool, world: int) -> DemoResult:
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.finetune import run_finetune
    from dsunlearn.recipes.uipe_sweep import sweep
    from dsunlearn.recipes.unlearn import run_unlearn
    from dsunlearn.report import plot_fq_vs_mu, plot_geffect_online, plot_loss_curves, results_table

    ow = QUICK if quick else []  # the old demo (nested runs included) was cleared by _claim_demo_dir
    runs = RUNS[4:8] if quick else RUNS
    t_all = time.time()
    n_phases = 4 + len(runs)
    _say(f"[1/{n_phases}] fine-tuning the target (full) and retain tiny models on {world} process(es)")
    t0 = time.time()
    demo, ft = RunDir(out), RunDir(out).demo_finetune
    ft_cfg = load_config("tiny_finetune", [f"run.output_dir={ft.root}", "engine.grad_accum_steps=0",
                         "eval.at_end=false"] + ow  # evaluated below, once
                         + (["engine.max_steps=6"] if quick else []))  # fmt: skip
    run_finetune(ft_cfg)
    ft_wall = time.time() - t0
    _say(f"[2/{n_phases}] evaluating the fine-tuned and retain models (TOFU metrics)")
    retain_dir, full_dir = ft.finetuned_model("retain"), ft.finetuned_model("full")
    retain_sum, retain_eval = _eval_saved(retain_dir, ft_cfg)  # retain vs itself: forget quality 1.0
    retain_log = str(retain_dir.parent / EVAL / "eval_log_aggregated.json")
    full_sum, _ = _eval_saved(full_dir, ft_cfg, retain_eval)
    rows = [_row("finetuned", "-", False, full_sum, ft_wall / 2), _row("retain", "-", False, retain_sum, ft_wall / 2)]
    micro = max(1, 8 // world)
    events = {}
    for i, (obj, gru) in enumerate(runs):
        name = f"{obj}_gru" if gru else obj
        _say(f"[{3 + i}/{n_phases}] unlearning: {obj}{' + GRU' if gru else ''}")
        extra = ["run.save_every=10"] if name == GEFFECT_RUN else []
        extra += (
            ["engine.max_steps=4", "run.save_every=2" if name == GEFFECT_RUN else "run.save_every=0"] if quick else []
        )
        run = demo.demo_run(name)
        cfg = load_config(f"tiny_{name}", [f"model.name_or_path={full_dir}", f"run.output_dir={run.root}",
                          f"eval.retain_log={retain_log}", f"engine.micro_batch_size={micro}",
                          "geometry.geffect_every=5"] + extra + ow)  # fmt: skip
        t0 = time.time()
        res = run_unlearn(cfg)
        rows.append(_row(name, obj, gru, res.eval, time.time() - t0))
        events[name] = run.events
    _say(f"[{3 + len(runs)}/{n_phases}] UIPE alpha sweep on {SWEEP_RUN}")
    sweep_run = demo.demo_run(SWEEP_RUN)
    uipe = sweep(sweep_run.root, full_dir, sweep_run.delta, SWEEP_ALPHAS, retain_log)
    _say(f"[{4 + len(runs)}/{n_phases}] offline G-effect over {GEFFECT_RUN}'s checkpoints")
    geffect = None
    try:
        from dsunlearn.recipes.geffect import run_geffect

        geffect = run_geffect(demo.demo_run(GEFFECT_RUN).root, probe_size=16)
    except ImportError:  # pragma: no cover - the offline analysis ships with the engine
        pass
    from dsunlearn.recipes.demo_attacks import robustness  # int4 on every run, a short relearn of GA

    robustness(demo, list(events), full_dir, retain_dir, full_sum, retain_sum)
    wall = time.time() - t_all
    if dist.is_main():
        plots = demo.plots
        plot_fq_vs_mu(rows, plots / "fq_vs_mu.png")
        plot_loss_curves(events, plots / "loss_curves.png")
        if "ga" in events:
            plot_geffect_online(events["ga"], plots / "geffect_ga.png", "GA: online G-effect")
        plot_geffect_online(events["npo_gru"], plots / "geffect_npo_gru.png", "NPO + GRU: online G-effect")
        atomic_write_json(demo.demo_summary, rows)
        _write_report(out, rows, uipe, geffect, wall, world, results_table)
        record_files(out, [demo.demo_summary.name, demo.demo_report.name])
    dist.barrier()
    return DemoResult(rows=rows, wall_seconds=round(wall, 1), uipe=uipe)


def _run_muse_demo(out: Path, quick: bool, world: int) -> DemoResult:
    from dsunlearn.recipes.demo_muse import plot_muse, report_lines, run_muse

    return _run_suite_demo(out, quick, world, "muse", "MUSE", "synthetic MUSE-format corpus", run_muse, plot_muse,
                           report_lines)  # fmt: skip


def _run_wmdp_demo(out: Path, quick: bool, world: int) -> DemoResult:
    from dsunlearn.recipes.demo_wmdp import plot_wmdp, report_lines, run_wmdp

    return _run_suite_demo(out, quick, world, "wmdp", "WMDP", "synthetic WMDP-format set", run_wmdp, plot_wmdp,
                           report_lines)  # fmt: skip


def _run_suite_demo(out: Path, quick: bool, world: int, suite: str, title: str, data: str, run, plot,
                    report_lines) -> DemoResult:  # fmt: skip
    """A suite's demo (MUSE, WMDP): `run(out, quick, world)` -> rows on all ranks; rank 0 writes the plot
    (`plots/<suite>.png`), summary.json and report.md."""
    t0 = time.time()
    rows = run(out, quick, world)
    wall = time.time() - t0
    demo = RunDir(out)
    if dist.is_main():
        plot(rows, demo.plots / f"{suite}.png")
        atomic_write_json(demo.demo_summary, rows)
        lines = [f"# dsunlearn demo report: {title}", "",
                 f"Embedded default ({data}, tiny Llama), {world} process(es), "
                 f"{wall / 60:.1f} minutes in all.", "", *report_lines(rows)]  # fmt: skip
        atomic_write_text(demo.demo_report, "\n".join(lines))
        record_files(out, [demo.demo_summary.name, demo.demo_report.name])
    dist.barrier()
    return DemoResult(rows=rows, wall_seconds=round(wall, 1), uipe=None, suite=suite)


def _write_report(out: Path, rows, uipe: SweepResult, geffect, wall, world, results_table) -> None:
    sel = uipe.selected_alpha
    lines = [
        "# dsunlearn demo report",
        "",
        f"Embedded default (synthetic TOFU, tiny Llama), {world} process(es), {wall / 60:.1f} minutes in all.",
        "",
        results_table(rows),
        "Forget quality: KS p-value of the truth-ratio statistics on the forget set against the retain model "
        "(1.0 = indistinguishable). Model utility: harmonic mean of probability, ROUGE-L and truth ratio on the "
        "retain, real-authors and world-facts sets; compare it to the fine-tuned model's.",
        "",
        "![forget quality vs model utility](plots/fq_vs_mu.png)",
        "",
        "![loss curves](plots/loss_curves.png)",
        "",
        "## G-effect",
        "",
        *(["![GA](plots/geffect_ga.png)", ""] if (RunDir(out).plots / "geffect_ga.png").exists() else []),
        "![NPO + GRU](plots/geffect_npo_gru.png)",
        "",
    ]
    if geffect is not None:
        lines += [f"Offline G-effect over {GEFFECT_RUN}'s checkpoints: `runs/{GEFFECT_RUN}/geffect/`.", "",
                  f"![offline G-effect](runs/{GEFFECT_RUN}/geffect/geffect.png)", ""]  # fmt: skip
    lines += [f"## UIPE on {SWEEP_RUN}", "", (RunDir(out).demo_run(SWEEP_RUN).uipe / "sweep.md").read_text(), "",
              f"Selected alpha = {sel:g}.", "", f"![UIPE](runs/{SWEEP_RUN}/uipe/sweep.png)", ""]  # fmt: skip
    atomic_write_text(RunDir(out).demo_report, "\n".join(lines))
