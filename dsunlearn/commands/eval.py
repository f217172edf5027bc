"""`dsunlearn eval`: TOFU evaluation of a saved model, or aggregation of an existing TOFU eval log (the job:
`recipes/evaluate.py`; this module parses and prints).

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

NAME = "eval"
HELP = "TOFU evaluation of a saved model (--model), or the metrics of an existing TOFU log (--from-log)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dsunlearn.suites import NAMES as SUITE_NAMES

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="saved HF model dir (safetensors + tokenizer) to evaluate")
    src.add_argument("--from-log", metavar="LOG", help="only aggregate this eval log (file or directory)")
    p.add_argument("--config", "-c", default=None, help="YAML or shipped config name: data and eval.* settings")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. eval.max_items=100")
    retain = "the retain model's log (ours, TOFU's or open-unlearning's): forget quality, PrivLeak's reference"
    p.add_argument("--retain-log", metavar="LOG", help=retain)
    p.add_argument("--output-dir", metavar="DIR", help="eval files go to DIR/eval (default: the model dir's parent)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/eval")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    what = (
        "the benchmark: with --from-log the one whose log it is (default tofu); with --model it sets "
        "data.suite (default: the config's)"
    )
    p.add_argument("--suite", default=None, choices=SUITE_NAMES, help=what)


def _print(suite: str, summary: dict, as_json: bool) -> None:
    from dsunlearn.suites import get_suite

    print(get_suite(suite).format_summary(summary, as_json))


def _from_log(args) -> int:
    from dsunlearn.errors import ConfigError
    from dsunlearn.recipes.evaluate import DEFAULT_SUITE, summarize_log

    if args.config or args.overrides or args.output_dir or args.overwrite:
        raise ConfigError("--from-log only aggregates a log: --config, key=value, --output-dir apply to --model")
    suite = args.suite or DEFAULT_SUITE  # no config here: the log's suite is named, or it is TOFU's
    _print(suite, summarize_log(args.from_log, args.retain_log, suite), args.json)
    return 0


def _from_model(args) -> int:
    from dsunlearn import dist
    from dsunlearn.recipes.evaluate import EvalInputs, evaluate_model

    # --suite first, so that an explicit data.suite=... override still wins
    overrides = ((f"data.suite={args.suite}",) if args.suite else ()) + tuple(args.overrides or [])
    inputs = EvalInputs(args.model, args.config, overrides, args.retain_log, args.output_dir,
                        bool(args.overwrite))  # fmt: skip
    result = evaluate_model(inputs)
    if dist.is_main():
        _print(result.suite, result.summary, args.json)
        if not args.json:
            print(f"wrote {result.eval_dir} ({result.seconds:.1f} s, {result.world_size} rank(s))")
    return 0


def run(args) -> int:
    return _from_log(args) if args.from_log else _from_model(args)
