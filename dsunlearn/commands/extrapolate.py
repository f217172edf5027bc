"""`dsunlearn extrapolate`: UIPE, theta_o + (1 + alpha) * delta from a run's delta shards (offline, 1 process)."""

from __future__ import annotations

import math
from pathlib import Path

from dsunlearn.errors import RunError
from dsunlearn.run_layout import DELTA, RunDir

NAME = "extrapolate"
HELP = "UIPE: write theta_o + (1+alpha)*delta from a run's delta shards (and sweep alpha with --sweep)"


def add_arguments(p) -> None:
    # --run-dir: torchrun's parser claims a bare --run (prefix of its --run-path) when launched under it.
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="an unlearning run dir (delta/, config.yaml)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--alpha", type=float, help="extrapolation coefficient (0 = the unlearned model)")
    g.add_argument("--sweep", help="comma-separated alphas to evaluate with the TOFU runner, e.g. 0,0.5,1,2")
    p.add_argument("--output-dir", default=None, help="where to write (default <run>/uipe/alpha_<a>)")
    p.add_argument("--original", default=None, help="the model the run started from (default: from config.yaml)")
    p.add_argument("--checkpoint", default=None, help="use checkpoints/<tag>/delta instead of the final delta/")
    p.add_argument("--retain-log", default=None, help="--sweep: the retain model's TOFU log (for forget quality)")
    p.add_argument("--rho", type=float, default=0.9, help="--sweep: keep alphas with MU >= rho x MU(alpha=0)")


def _run_info(run: RunDir, original: str | None, checkpoint: str | None) -> tuple[Path, Path]:
    """(theta_o's model dir, the delta dir) of the run; one-line RunErrors for what is not there."""
    from dsunlearn.rundir import run_config

    cfg = run_config(run.root)  # also refuses a missing/damaged config.yaml in one line
    delta = run.checkpoint_dir(checkpoint, "--checkpoint") / DELTA if checkpoint else run.delta
    if not delta.is_dir() or delta.is_symlink():
        raise RunError(f"'{run.root}' has no delta shards at '{delta}': it is not a finished dsunlearn unlearn run")
    if original is None:
        from dsunlearn.models.load import local_model_dir

        original = str(local_model_dir(cfg.model.name_or_path))
    return Path(original), delta


def _check_rho(rho: float) -> None:
    if not (math.isfinite(rho) and 0.0 <= rho <= 1.0):
        raise RunError(
            f"--rho {rho} is out of range: it is the share of the unlearned model's utility an alpha must keep, "
            "a number in [0, 1] (e.g. --rho 0.9)"
        )


def run(args) -> int:
    from dsunlearn.path_guard import check_no_links, check_outputs, check_writable

    run_dir = Path(args.run)
    run = RunDir(run_dir)
    if args.sweep is not None:
        _check_rho(args.rho)
    original, delta = _run_info(run, args.original, args.checkpoint)
    inputs = {"--original": original, "the run's delta shards": delta}
    if args.sweep is not None:
        if args.output_dir:
            raise RunError(
                "--output-dir applies to --alpha; a sweep writes into the run (<run>/uipe, <run>/uipe/<checkpoint> "
                "with --checkpoint): drop --output-dir, or extrapolate single alphas with --alpha ... --output-dir"
            )
        root = run.uipe_root(args.checkpoint)
        check_writable(root, "the sweep's output")
        check_no_links(run_dir, root, "the sweep's output")
        check_outputs({"the sweep's output": root}, inputs)
        return _sweep(args, run_dir, original, delta, root)
    out = Path(args.output_dir) if args.output_dir else run.uipe_alpha(args.alpha)
    check_writable(out, "--output-dir")
    check_no_links(run_dir, out, "--output-dir")
    check_outputs({"--output-dir": out}, inputs)
    from dsunlearn.uipe.extrapolate import extrapolate  # torch: after the checks, so a refusal is quick

    extrapolate(original, delta, args.alpha, out)
    print(f"theta_o + (1 + {args.alpha:g}) * delta -> {out}")
    return 0


def _sweep(args, run_dir: Path, original: Path, delta: Path, root: Path) -> int:
    """`--sweep`: the retain log and the alphas, the sweep, then its table and choice."""
    from dsunlearn import dist
    from dsunlearn.recipes.uipe_sweep import parse_alphas, sweep, sweep_retain_log

    retain_log = sweep_retain_log(run_dir, args.retain_log)
    result = sweep(run_dir, original, delta, parse_alphas(args.sweep), retain_log, args.rho, args.checkpoint)
    if dist.is_main():
        print(result.table())
        print(f"selected {result.reason}\n-> {root / 'sweep.md'}, {root / 'sweep.png'}")
    return 0
