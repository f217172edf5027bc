"""`dsunlearn geffect`: the offline G-effect of a finished unlearning run, per saved checkpoint, on a fixed probe.

    dsunlearn geffect --run DIR [--probe-size N] [--per-instance K] [--output FILE] [--original DIR] [--ema C]

Writes `<run>/geffect/geffect.json` (or FILE) and a PNG next to it, prints a table. Runs on one process or
under a launcher (`deepspeed --num_gpus 8 --module dsunlearn geffect --run DIR`, `torchrun --nproc_per_node 2
-m dsunlearn geffect --run-dir DIR`: torchrun's parser takes `--run` for a prefix of its own --run-path):
every rank takes a share of the probe's micro-batches. See `dsunlearn.recipes.geffect`.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME = "geffect"
HELP = "offline G-effect (e_u, e_r per layer group, per instance) of a run's checkpoints on a fixed probe set"


def add_arguments(p) -> None:
    # torchrun's own parser rejects `--run` as an ambiguous prefix of its --run-path: say --run-dir there.
    p.add_argument("--run", "--run-dir", dest="run", required=True, metavar="DIR",
                   help="a finished `dsunlearn unlearn` run directory (under torchrun: --run-dir)")  # fmt: skip
    p.add_argument("--probe-size", type=int, default=32, help="first N items of the forget and of the retain split")
    p.add_argument("--per-instance", type=int, default=0, help="also e_u per sample for the first K forget items")
    p.add_argument("--output", default=None, help="JSON to write (default <run>/geffect/geffect.json; PNG beside)")
    p.add_argument("--original", default=None, help="the model the run started from (default: from config.yaml)")
    p.add_argument("--ema", type=float, default=None, metavar="C",
                   help="the G-effect code's average: gradients of each micro-batch of the probe into moving averages "
                        "with weight C for the new one (its code: 0.4); default: one mean over the probe")  # fmt: skip


def run(args) -> int:
    # Deterministic cuBLAS on GPUs (must be set before CUDA starts); a no-op on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from dsunlearn import dist
    from dsunlearn.recipes.geffect import default_output, format_table, run_geffect

    if torch.cuda.is_available() and not dist.on_cpu():
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Not NaN-filling every torch.empty: DeepSpeed allocates GB-sized reduction buckets per backward.
        torch.utils.deterministic.fill_uninitialized_memory = False
    result = run_geffect(args.run, args.probe_size, args.per_instance, args.output, args.original, args.ema)
    if dist.is_main():
        out = Path(args.output) if args.output else default_output(args.run)
        print(format_table(result))
        print(f"G-effect of {len(result['steps'])} states -> {out} and {out.with_suffix('.png')}")
    return 0
