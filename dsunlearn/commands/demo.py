"""`dsunlearn demo`: the whole pipeline on the embedded default (offline, CPU-friendly), with a report."""

from __future__ import annotations

from pathlib import Path

NAME = "demo"
HELP = "fine-tune, unlearn (GA, GradDiff, NPO, WGA, TNPO; +/- GRU), evaluate, UIPE, G-effect on the tiny default"


def add_arguments(p) -> None:
    p.add_argument("--output-dir", default="runs/demo", help="where everything goes (default runs/demo)")
    p.add_argument("--nproc", type=int, default=1, help="processes (CPU ranks or GPUs) to run on")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo in the output dir")
    p.add_argument("--quick", action="store_true", help="smoke test: the same pipeline on tiny data, few steps")
    p.add_argument("--suite", default="tofu", choices=("tofu", "muse", "wmdp"),
                   help="which benchmark's demo: tofu (default), muse (synthetic MUSE news corpus) or wmdp "
                        "(synthetic hazardous / general multiple-choice set)")  # fmt: skip


def run(args) -> int:
    import os

    from dsunlearn import dist
    from dsunlearn.recipes.demo import relaunch, run_demo

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch(Path(args.output_dir), args.nproc, overwrite=args.overwrite, quick=args.quick,
                        suite=args.suite)  # fmt: skip
    result = run_demo(Path(args.output_dir), overwrite=args.overwrite, quick=args.quick, suite=args.suite)
    if dist.is_main():
        print()
        if result.suite == "muse":
            from dsunlearn.recipes.demo_muse import muse_table

            print(muse_table(result.rows))
        elif result.suite == "wmdp":
            from dsunlearn.recipes.demo_wmdp import wmdp_table

            print(wmdp_table(result.rows))
        else:
            from dsunlearn.report import results_table

            print(results_table(result.rows))
            print(f"UIPE: {result.uipe.reason}")
        print(f"demo finished in {result.wall_seconds / 60:.1f} min -> {args.output_dir}/report.md")
    return 0
