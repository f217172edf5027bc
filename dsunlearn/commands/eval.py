"""`dsunlearn eval`: TOFU evaluation of a saved model, or aggregation of an existing TOFU eval log.

    dsunlearn eval --model DIR [--config FILE] [key=value ...] [--retain-log LOG] [--output-dir DIR] [--overwrite]
    dsunlearn eval --from-log LOG [--retain-log LOG] [--json]

With `--model`, the config supplies the data and `eval.*` settings; the log and summary go to
`<output-dir>/eval/` (default: the model dir's parent, i.e. `<run>/eval` for `<run>/full/model`). Under a
launcher every rank loads a full replica and takes a share of the batches. With `--from-log`, nothing is
evaluated: the log (a JSON file or a directory of TOFU split files, e.g. a published retain-model log) is
aggregated and printed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

NAME = "eval"
HELP = "TOFU evaluation of a saved model (--model), or the metrics of an existing TOFU log (--from-log)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="saved HF model dir (safetensors + tokenizer) to evaluate")
    src.add_argument("--from-log", metavar="LOG", help="only aggregate this TOFU eval log (file or directory)")
    p.add_argument("--config", "-c", default=None, help="YAML or shipped config name: data and eval.* settings")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. eval.max_items=100")
    p.add_argument("--retain-log", metavar="LOG", help="the retain model's TOFU log: adds forget quality")
    p.add_argument("--output-dir", metavar="DIR", help="eval files go to DIR/eval (default: the model dir's parent)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/eval")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


def _print(summary: dict, as_json: bool) -> None:
    from dsunlearn.suites.tofu.summary import format_json, format_table

    print(format_json(summary) if as_json else format_table(summary))


def _from_log(args) -> int:
    from dsunlearn.errors import ConfigError
    from dsunlearn.suites.tofu import log as tofu_log
    from dsunlearn.suites.tofu import metrics

    if args.config or args.overrides or args.output_dir or args.overwrite:
        raise ConfigError("--from-log only aggregates a log: --config, key=value, --output-dir apply to --model")
    log = tofu_log.load_log(args.from_log)
    retain = tofu_log.load_log(args.retain_log, splits=(tofu_log.FORGET,)) if args.retain_log else None
    _print(metrics.aggregate(log, retain), args.json)
    return 0


def _remove_old_logs(eval_dir: Path) -> None:
    """--overwrite: drop the files an earlier eval (or a copied TOFU log) left, and nothing else.

    Stale TOFU split files must go: ``load_log(dir)`` prefers them over the aggregated log we write.
    """
    from dsunlearn.suites.tofu import log as tofu_log
    from dsunlearn.suites.tofu.evaluate import SUMMARY_FILE

    for name in (*tofu_log.SPLITS, tofu_log.AGGREGATED_FILE, SUMMARY_FILE):
        (eval_dir / name).unlink(missing_ok=True)


def _check_eval_output(eval_dir: Path, model_dir: Path, cfg, args) -> None:
    """The eval files go into none of the inputs (the model, its tokenizer, the data, the retain log)."""
    from dsunlearn.path_guard import check_outputs, check_writable, local_inputs

    check_writable(eval_dir, "--output-dir")
    inputs = local_inputs(
        {
            "--model": str(model_dir),
            "model.tokenizer": cfg.model.tokenizer,
            "data.path": cfg.data.path if cfg.data.source == "local" else None,
            "--retain-log": args.retain_log or cfg.eval.retain_log,
        }
    )
    check_outputs({"--output-dir (its eval/)": eval_dir}, inputs, replaces=bool(args.overwrite))


def _from_model(args) -> int:
    from dsunlearn import dist
    from dsunlearn.config_bounds import check_generation_fits
    from dsunlearn.config_io import load_config
    from dsunlearn.errors import RunError
    from dsunlearn.models.load import check_model_dir, model_positions
    from dsunlearn.run_layout import RunDir
    from dsunlearn.suites.tofu.retain_check import check_retain_log

    model_dir = check_model_dir(args.model)  # a wrong path fails before anything heavy is imported
    cfg = load_config(args.config, list(args.overrides or []))
    check_model_dir(model_dir, cfg.model.trust_remote_code)  # remote code needs model.trust_remote_code
    out = Path(args.output_dir) if args.output_dir else model_dir.resolve().parent
    eval_dir = RunDir(out).eval
    _check_eval_output(eval_dir, model_dir, cfg, args)
    if eval_dir.exists() and (not eval_dir.is_dir() or any(eval_dir.iterdir())) and not args.overwrite:
        raise RunError(f"'{eval_dir}' already exists; pass --overwrite to replace it or choose another --output-dir")
    retain_path = args.retain_log or cfg.eval.retain_log
    key = "--retain-log" if args.retain_log else "eval.retain_log"
    retain = check_retain_log(retain_path, cfg, key) if retain_path else None
    check_generation_fits(cfg.eval, model_positions(model_dir), f"'{model_dir}'")

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under a launcher; one process needs no process group
        dist.init_distributed()
    from dsunlearn.suites.tofu.evaluate import evaluate_saved, write_eval

    t0 = time.perf_counter()
    log = evaluate_saved(model_dir, cfg)
    if args.overwrite and dist.is_main():
        _remove_old_logs(eval_dir)
    summary = write_eval(out, log, retain)
    if dist.is_main():
        _print(summary, args.json)
        if not args.json:
            print(f"wrote {eval_dir} ({time.perf_counter() - t0:.1f} s, {dist.world_size()} rank(s))")
    return 0


def run(args) -> int:
    return _from_log(args) if args.from_log else _from_model(args)
