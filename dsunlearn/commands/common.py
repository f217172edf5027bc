"""Arguments and helpers shared by the run commands (finetune, unlearn, demo, ...)."""

from __future__ import annotations

import argparse
import os


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML file or shipped config name (`dsunlearn configs`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. objective.beta=0.1")
    p.add_argument("--output-dir", default=None, help="shorthand for run.output_dir=DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in the output dir")
    p.add_argument("--resume", action="store_true", help="continue the run in the output dir (same config only)")


def overrides_of(args) -> list[str]:
    out = list(args.overrides or [])
    if getattr(args, "output_dir", None):
        out.append(f"run.output_dir={args.output_dir}")
    if getattr(args, "overwrite", False):
        out.append("run.overwrite=true")
    return out


def load_run_config(args, command: str):
    """The run's config (file + overrides, validated) for `command` (finetune, unlearn).

    On one process (no launcher) it also refuses what `rundir.check_output_dir` refuses (the batch arithmetic,
    the output dir, a --resume that cannot continue), all before torch and DeepSpeed are imported: a refused
    command answers in about a second instead of five. The recipe makes the same check again under its process
    group, with the same answer; under a launcher the ranks decide together there (rank 0 decides)."""
    from dsunlearn.config_io import load_config

    cfg = load_config(args.config, overrides_of(args))
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        from dsunlearn.rundir import check_output_dir

        check_output_dir(cfg, command, resume=args.resume)
    return cfg
