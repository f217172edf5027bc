"""`dsunlearn attack`: quantize or relearn a finished unlearning run's model and evaluate it with the run's
suite, before/after, next to the target (and the retrained model); the job: `recipes/attack.py`.

    dsunlearn attack --run DIR --quantize int4|int8 [--group-size N] [--asym] [--include-embeddings]
    dsunlearn attack --run DIR --relearn [--relearn-fraction F | --relearn-split S] [--relearn-steps K |
                     --relearn-epochs E] [--relearn-lr LR] [--save-model]
    ... [--retain-model DIR] [--name NAME] [--overwrite] [key=value ...]

Writes `<run>/attacks/<name>/` (summary.json, table.md, plot.png, eval/, events.jsonl, references/), never
anything else of the run. Relearning trains on the run's engine (ZeRO stage, N ranks under a launcher:
`torchrun --nproc_per_node 2 -m dsunlearn attack --run-dir DIR --relearn`).
"""

from __future__ import annotations

import argparse
import os

NAME = "attack"
HELP = "does the forgetting survive? quantize (RTN int4/int8) or relearn an unlearning run, then evaluate it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", "--run-dir", dest="run", required=True, metavar="DIR",
                   help="a finished `dsunlearn unlearn` run directory (under torchrun: --run-dir)")  # fmt: skip
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quantize", metavar="int4|int8", help="group-wise round-to-nearest weight quantization")
    g.add_argument("--relearn", action="store_true", help="fine-tune on a relearning set, then evaluate")
    p.add_argument("--group-size", type=int, default=128, help="--quantize: weights per group along the input dim")
    p.add_argument("--asym", action="store_true", help="--quantize: asymmetric (zero point) instead of symmetric")
    p.add_argument("--include-embeddings", action="store_true", help="--quantize: lm_head and embeddings too")
    p.add_argument("--relearn-fraction", type=float, default=0.5, help="--relearn: share of the forget set (seeded)")
    p.add_argument("--relearn-split", default=None, help="--relearn: another forget split of the suite instead")
    p.add_argument("--relearn-steps", type=int, default=None, help="--relearn: optimizer steps (default: epochs)")
    p.add_argument("--relearn-epochs", type=float, default=2.0, help="--relearn: epochs over the relearning set")
    p.add_argument("--relearn-lr", type=float, default=None, help="--relearn: learning rate (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="--relearn: which items the fraction takes")
    p.add_argument("--save-model", action="store_true", help="--relearn: keep the relearned model in <name>/model")
    p.add_argument("--retain-model", metavar="DIR", help="the retrained model: attacked alike, as a reference")
    p.add_argument("--name", default=None, help="the attack's directory name (default from its settings)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier attack of the same name")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="on top of the run config")


def spec_of(args):
    """The `AttackSpec` of the command line; RunError for a --quantize that is not int4/int8."""
    from dsunlearn.errors import RunError
    from dsunlearn.recipes.attack_spec import BITS, QUANTIZE, RELEARN, AttackSpec

    if args.quantize is not None and args.quantize not in BITS:
        raise RunError(f"--quantize {args.quantize[:20]!r}: give int4 or int8")
    return AttackSpec(
        kind=RELEARN if args.relearn else QUANTIZE, bits=BITS.get(args.quantize, 4), group_size=args.group_size,
        symmetric=not args.asym, include_embeddings=args.include_embeddings, fraction=args.relearn_fraction,
        split=args.relearn_split, steps=args.relearn_steps, epochs=args.relearn_epochs, lr=args.relearn_lr,
        seed=args.seed, retain_model=args.retain_model, save_model=args.save_model, name=args.name,
    )  # fmt: skip


def run(args) -> int:
    from dsunlearn.recipes.attack_spec import check_spec, check_target

    spec = spec_of(args)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # refused in a second, before torch is imported
        check_spec(spec)
        check_target(args.run, spec, args.overwrite)
    from dsunlearn import dist
    from dsunlearn.recipes.attack import run_attack

    result = run_attack(args.run, spec, args.overwrite, list(args.overrides or []))
    if dist.is_main():
        print(result.table())
        print(f"-> {result.out} ({result.seconds:.1f} s, {dist.world_size()} rank(s))")
    return 0
