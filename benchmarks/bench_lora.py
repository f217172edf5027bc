"""Memory per rank and step time of LoRA vs full unlearning on the same model, as ratios measured in ONE run.

Both variants: NPO + retain NLL (+ GRU with --gru), AdamW, the same model, data and engine settings; `lora`
adds `model.adapter` (rank --rank on every linear layer but the head). Each variant runs in its own
`torch.distributed.run` child, so its peak memory is its own. Per rank:
  params      bytes of the parameters this rank holds (its ZeRO-3 partitions, or every parameter below ZeRO-3)
  grads       bytes of this rank's gradient shard (fp32: what GRU / the G-effect read) = trainable elements / N
  optimizer   bytes of the optimizer's tensors on this rank (AdamW moments + the fp32 master partitions)
  measured    peak process memory (CPU: max RSS) or peak CUDA memory allocated
Prints one JSON line and writes benchmarks/results/lora_<device>.md.

    python benchmarks/bench_lora.py --ranks 2                                  # CPU ranks (gloo)
    python benchmarks/bench_lora.py --ranks 1 --hidden 2048 --layers 8 --vocab 32000 --seq 512   # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_geometry import _build_model  # noqa: E402  (the same synthetic Llama and tokenizer)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def _optimizer_bytes(engine) -> int:
    """AdamW moments and fp32 master weights held by this rank's (inner) torch optimizer."""
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    state = _tensor_bytes(v for s in inner.state.values() for v in s.values())
    master = _tensor_bytes(p for g in inner.param_groups for p in g["params"])
    return state + master


def worker(a, model_dir: str, variant: str) -> dict | None:
    from dsunlearn import dist
    from dsunlearn.config_io import load_config
    from dsunlearn.engine.partitioning import is_partitioned
    from dsunlearn.recipes.step_plan import StepPlan
    from dsunlearn.recipes.unlearn import UnlearnRun
    from dsunlearn.unlearn_losses import nll_loss

    dist.init_distributed()
    world = dist.world_size()
    dtype = "bfloat16" if a.precision == "bf16" else "float32"
    ov = [f"model.name_or_path={model_dir}", f"engine.zero_stage={a.stage}", f"engine.micro_batch_size={a.micro}",
          f"engine.global_batch_size={a.micro * world}", "engine.grad_accum_steps=1", "eval.at_end=false",
          f"data.max_length={a.seq}", "engine.optimizer=adamw", "engine.lr=1e-5", f"engine.precision={a.precision}",
          f"model.dtype={dtype}", f"geometry.gru={str(a.gru).lower()}"]  # fmt: skip
    if variant == "lora":
        ov += ["model.adapter.type=lora", f"model.adapter.r={a.rank}", "model.adapter.alpha=32",
               "model.adapter.target_modules=[all-linear]"]  # fmt: skip
    run = UnlearnRun(load_config("tiny_npo", ov))
    for i in range(a.warmup):
        run.step(i)
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(a.warmup, a.warmup + a.steps):
        run.step(i)
    dist.barrier()
    seconds = (time.perf_counter() - t0) / a.steps
    module = run.engine.module
    local = [p.ds_tensor if is_partitioned(p) else p for p in module.parameters()]
    plan = StepPlan.for_step(0, run.cfg, run.spec, run.regularizer)
    batch = run.step_batch(0, plan)
    shard, _ = run.engine.grad_of(batch.retain, nll_loss(1.0, batch.retain_tokens))
    if torch.cuda.is_available():
        measured = torch.cuda.max_memory_allocated()
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    res = {
        "params": _tensor_bytes(local),
        "grads": shard.layout.numel * 4,
        "optimizer": _optimizer_bytes(run.engine.deepspeed),
        "measured": measured,
        "seconds_per_step": seconds,
        "trainable": sum(p.numel() if not is_partitioned(p) else p.ds_numel for _, p in run.engine.named),
        "total": sum(p.ds_numel if is_partitioned(p) else p.numel() for p in module.parameters()),
        "world": world,
    }
    return res if dist.is_main() else None


def _child(a, model_dir: Path, variant: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.ranks), __file__, *sys.argv[1:],
           "--child", str(model_dir), "--variant", variant]  # fmt: skip
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(HERE.parent))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(proc.stderr[-4000:])
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--rank", type=int, default=32, help="LoRA rank r")
    p.add_argument("--gru", action="store_true")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:  # inside torchrun
        res = worker(a, a.child, a.variant)
        if res is not None:
            print("RESULT " + json.dumps(res), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        _build_model(model_dir, a)
        res = {v: _child(a, model_dir, v) for v in ("full", "lora")}
    keys = ("params", "grads", "optimizer", "measured", "seconds_per_step")
    ratio = {k: round(res["lora"][k] / res["full"][k], 4) if res["full"][k] else None for k in keys}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"bench": "lora", "device": device, "stage": a.stage, "precision": a.precision, "rank": a.rank,
           "gru": a.gru, **res, "ratio_lora_to_full": ratio}  # fmt: skip
    print(json.dumps(out))
    mib = 1 << 20
    rows = []
    for k in keys:
        f, lo = res["full"][k], res["lora"][k]
        fmt = (lambda x: f"{x * 1000:.1f} ms") if k == "seconds_per_step" else (lambda x: f"{x / mib:.1f} MiB")
        rows.append(f"| {k} | {fmt(f)} | {fmt(lo)} | {ratio[k]} |")
    full = res["full"]
    title = (f"LoRA (r {a.rank}, all-linear) vs full ({device}, {full['world']} process(es), ZeRO-{a.stage}, "
             f"{a.precision}, {full['total'] / 1e6:.1f}M params, {res['lora']['trainable'] / 1e6:.2f}M trainable with "
             f"LoRA, seq {a.seq}, micro {a.micro}{', GRU' if a.gru else ''})")  # fmt: skip
    md = f"# {title}\n\n| per rank | full | LoRA | LoRA / full |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"lora_{device}.md").write_text(md)


if __name__ == "__main__":
    main()
