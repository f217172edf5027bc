"""`dsunlearn extrapolate`: UIPE, theta_o + (1 + alpha) * delta from a run's delta shards (offline, 1 process)."""

from __future__ import annotations

import math
from pathlib import Path

from dsunlearn.errors import RunError

NAME = "extrapolate"
HELP = "UIPE: write theta_o + (1+alpha)*delta from a run's delta shards (and sweep alpha with --sweep)"

RETAIN_HELP = (
    "--sweep: the retain model's eval log (default: the run's eval.retain_log); TOFU needs it (forget quality), "
    "MUSE takes PrivLeak's reference from it"
)
RHO_HELP = "--sweep: keep alphas whose utility (TOFU model_utility, MUSE knowmem_r) is >= rho x its alpha=0 value"


def add_arguments(p) -> None:
    # --run-dir: torchrun's parser claims a bare --run (prefix of its --run-path) when launched under it.
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="an unlearning run dir (delta/, config.yaml)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--alpha", type=float, help="extrapolation coefficient (0 = the unlearned model)")
    g.add_argument("--sweep", help="comma-separated alphas to evaluate with the run's suite, e.g. 0,0.5,1,2")
    p.add_argument("--output-dir", default=None, help="where to write (default <run>/uipe/alpha_<a>)")
    p.add_argument("--original", default=None, help="the model the run started from (default: from config.yaml)")
    p.add_argument("--checkpoint", default=None, help="use checkpoints/<tag>/delta instead of the final delta/")
    p.add_argument("--retain-log", default=None, help=RETAIN_HELP)
    p.add_argument("--rho", type=float, default=0.9, help=RHO_HELP)


def _check_rho(rho: float) -> None:
    if not (math.isfinite(rho) and 0.0 <= rho <= 1.0):
        raise RunError(
            f"--rho {rho} is out of range: it is the share of the unlearned model's utility an alpha must keep, "
            "a number in [0, 1] (e.g. --rho 0.9)"
        )


def run(args) -> int:
    from dsunlearn.recipes.extrapolate import extrapolate_one, run_delta, sweep_output

    if args.sweep is not None:
        _check_rho(args.rho)
    src = run_delta(Path(args.run), args.original, args.checkpoint)
    if args.sweep is None:
        out = extrapolate_one(src, args.alpha, Path(args.output_dir) if args.output_dir else None)
        print(f"theta_o + (1 + {args.alpha:g}) * delta -> {out}")
        return 0
    if args.output_dir:
        raise RunError(
            "--output-dir applies to --alpha; a sweep writes into the run (<run>/uipe, <run>/uipe/<checkpoint> "
            "with --checkpoint): drop --output-dir, or extrapolate single alphas with --alpha ... --output-dir"
        )
    root = sweep_output(src, args.checkpoint)
    from dsunlearn import dist
    from dsunlearn.recipes.uipe_sweep import parse_alphas, sweep, sweep_retain_log

    retain_log = sweep_retain_log(src.run.root, args.retain_log)
    result = sweep(src.run.root, src.original, src.delta, parse_alphas(args.sweep), retain_log, args.rho,
                   args.checkpoint)  # fmt: skip
    if dist.is_main():
        print(result.table())
        print(f"selected {result.reason}\n-> {root / 'sweep.md'}, {root / 'sweep.png'}")
    return 0
