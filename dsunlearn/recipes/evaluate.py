"""The evaluation job behind `dsunlearn eval`: a saved model's suite evaluation into `<out>/eval/`, or the
summary of an existing log.

With a model, the config supplies the suite, the data and the `eval.*` settings; the log and summary go to
`<output_dir>/eval/` (default: the model dir's parent, i.e. `<run>/eval` for `<run>/full/model`). Every input
is checked (model dir, config, output dir, retain log, generation length) before the model is loaded. Under a
launcher every rank loads a full replica and takes a share of the batches.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dsunlearn.suites import DEFAULT as DEFAULT_SUITE


@dataclass(frozen=True)
class EvalInputs:
    """What to evaluate and where the files go."""

    model_dir: str | Path  # a saved HF model dir (safetensors + tokenizer)
    config: str | None = None  # YAML path or shipped config name: suite, data and eval.* settings
    overrides: tuple[str, ...] = ()  # dotted key=value overrides of that config
    retain_log: str | None = None  # the retain model's log (--retain-log); None: the config's eval.retain_log
    output_dir: str | Path | None = None  # files go to <output_dir>/eval; None: the model dir's parent
    overwrite: bool = False  # replace an existing <output_dir>/eval


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: its suite's summary (as written to `<eval_dir>/summary.json`), where, how long."""

    suite: str
    summary: dict[str, float]
    eval_dir: Path
    seconds: float
    world_size: int


def _remove_old_logs(suite, eval_dir: Path) -> None:
    """--overwrite: drop the files an earlier eval (or a copied log) left, and nothing else."""
    for name in suite.eval_files():
        (eval_dir / name).unlink(missing_ok=True)


def _check_eval_output(eval_dir: Path, model_dir: Path, cfg, inputs: EvalInputs) -> None:
    """The eval files go into none of the inputs (the model, its tokenizer, the data, the retain log)."""
    from dsunlearn.path_guard import check_outputs, check_writable, local_inputs

    check_writable(eval_dir, "--output-dir")
    paths = local_inputs(
        {
            "--model": str(model_dir),
            "model.tokenizer": cfg.model.tokenizer,
            "data.path": cfg.data.path if cfg.data.source == "local" else None,
            "--retain-log": inputs.retain_log or cfg.eval.retain_log,
        }
    )
    check_outputs({"--output-dir (its eval/)": eval_dir}, paths, replaces=bool(inputs.overwrite))


def evaluate_model(inputs: EvalInputs) -> EvalResult:
    """Check every input, evaluate the model on all ranks, write `<out>/eval/`; every rank returns the result."""
    from dsunlearn import dist
    from dsunlearn.config_bounds import check_generation_fits
    from dsunlearn.config_io import load_config
    from dsunlearn.errors import RunError
    from dsunlearn.models.load import check_model_dir, model_positions
    from dsunlearn.run_layout import RunDir
    from dsunlearn.suites import get_suite

    model_dir = check_model_dir(inputs.model_dir)  # a wrong path fails before anything heavy is imported
    cfg = load_config(inputs.config, list(inputs.overrides))
    check_model_dir(model_dir, cfg.model.trust_remote_code)  # remote code needs model.trust_remote_code
    suite = get_suite(cfg.data.suite)
    out = Path(inputs.output_dir) if inputs.output_dir else model_dir.resolve().parent
    eval_dir = RunDir(out).eval
    _check_eval_output(eval_dir, model_dir, cfg, inputs)
    if eval_dir.exists() and (not eval_dir.is_dir() or any(eval_dir.iterdir())) and not inputs.overwrite:
        raise RunError(f"'{eval_dir}' already exists; pass --overwrite to replace it or choose another --output-dir")
    retain_path = inputs.retain_log or cfg.eval.retain_log
    key = "--retain-log" if inputs.retain_log else "eval.retain_log"
    retain = suite.check_retain_log(retain_path, cfg, key) if retain_path else None
    if suite.USES_GENERATION_CAPS:  # WMDP scores choices and never generates: its eval.max_length is unused
        check_generation_fits(cfg.eval, model_positions(model_dir), f"'{model_dir}'")

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under a launcher; one process needs no process group
        dist.init_distributed()
    t0 = time.perf_counter()
    log = suite.evaluate_saved(model_dir, cfg)
    if inputs.overwrite and dist.is_main():
        _remove_old_logs(suite, eval_dir)
    summary = suite.write_eval(out, log, retain)
    return EvalResult(suite.NAME, summary, eval_dir, time.perf_counter() - t0, dist.world_size())


def summarize_log(log_path: str, retain_log: str | None = None, suite: str = DEFAULT_SUITE) -> dict[str, float]:
    """The summary of an existing log (a file or a directory of split files), nothing evaluated; with the
    retain model's log where given."""
    from dsunlearn.suites import get_suite

    s = get_suite(suite)
    log = s.load_log(log_path)
    retain = s.load_log(retain_log, forget_only=True) if retain_log else None
    return s.summarize(log, retain)
