"""`dsunlearn finetune`: train the target (full) and retain models, TOFU-style."""

from __future__ import annotations

from dsunlearn.commands.common import add_run_arguments, load_run_config

NAME = "finetune"
HELP = "train the target (full) and retain models, TOFU-style"


add_arguments = add_run_arguments  # --config, key=value overrides, --output-dir, --overwrite, --resume


def run(args) -> int:
    cfg = load_run_config(args, NAME)  # the cheap refusals first (common.py), then the heavy imports
    from dsunlearn import dist
    from dsunlearn.recipes.finetune import run_finetune

    summary = run_finetune(cfg, resume=args.resume)
    if dist.is_main():
        for name, row in summary["models"].items():
            if "prob_after" in row:
                b, a = row["prob_before"], row["prob_after"]
                print(
                    f"{name}: answer probability forget {b['forget']:.4f} -> {a['forget']:.4f}, "
                    f"retain {b['retain']:.4f} -> {a['retain']:.4f} ({row['wall_seconds']} s) -> {row['path']}"
                )
    return 0
