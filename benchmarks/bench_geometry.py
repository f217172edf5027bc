"""Cost of gradient geometry on shards, against a plain step and against the floor, interleaved in ONE run.

Variants, all NPO + retain NLL on the same model, data and engine settings, each its own `UnlearnRun`:
  plain      gamma L_f + lambda L_r into the same buffers, one reduction, step (no geometry)
  floor      the plain step with forget and retain reduced separately (two reductions), nothing read or
             written: what any method that needs the two gradients apart must pay at least
  gru        GRU (the forget and retain gradients apart, projection, write-back)
  geff       the G-effect alone, every step (the forget risk's backward, one [G, 3, 3] all_reduce)
  gru+geff   GRU and the G-effect every step
Interleaved: optimizer step i of every variant runs before step i + 1 of any, in an order rotated each step,
so drift of a shared machine lands on all variants alike; each ratio is the median over steps of that step's
time over plain's. Items are TOFU-length (the synthetic TOFU items with answers lengthened to 80-150 tokens).
Peak memory per rank and variant: one more step each under torch.profiler (every CPU/CUDA allocation and free),
its peak above what was allocated before it, plus the geometry's persistent state (GRU's EMA).
Prints a markdown table and one JSON line, writes benchmarks/results/geometry_<device>_z<stage>.md.

    python benchmarks/bench_geometry.py                     # 2 CPU ranks, ZeRO-2, 23M-parameter Llama, batch 32
    python benchmarks/bench_geometry.py --stage 3
    python benchmarks/bench_geometry.py --ranks 1 --hidden 2048 --layers 16 --vocab 8000 --bf16   # one GPU, ~1B
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "plain": [],
    "floor": [],
    "gru": ["geometry.gru=true"],
    "geff": ["geometry.geffect_every=1"],
    "gru+geff": ["geometry.gru=true", "geometry.geffect_every=1"],
}


def _tofu_length_data(path: Path, tok, lo: int, hi: int, seed: int = 0) -> float:
    """forget10.json / retain90.json of the synthetic TOFU items, each answer lengthened with other answers of
    the same split until question + answer is lo..hi tokens (TOFU's Llama-2 lengths). Returns mean tokens."""
    from dsunlearn.config import DataConfig
    from dsunlearn.suites.tofu.data import synthetic_splits

    rng, lengths = random.Random(seed), []
    for split in ("forget10", "retain90"):
        items = [dict(x) for x in synthetic_splits(DataConfig())[split]]
        answers = [x["answer"] for x in items]
        for i, x in enumerate(items):
            target, j = rng.randint(lo, hi), i
            while True:
                n = len(tok(x["question"] + " " + x["answer"])["input_ids"])
                if n >= target:
                    break
                j = (j + 1) % len(answers)
                x["answer"] += " " + answers[j]
            lengths.append(n)
        (path / f"{split}.json").write_text(json.dumps(items))
    return statistics.mean(lengths)


def _build(path: Path, a) -> float:
    from transformers import LlamaConfig, LlamaForCausalLM

    from dsunlearn.config import SyntheticConfig
    from dsunlearn.models.tiny import train_tokenizer
    from dsunlearn.suites.tofu import synthetic

    s = SyntheticConfig()
    tok = train_tokenizer(list(synthetic.corpus(synthetic.generate(seed=s.seed))), a.vocab, a.seq)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, intermediate_size=4 * a.hidden,
                      num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                      max_position_embeddings=a.seq, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    if a.bf16:
        model = model.to(torch.bfloat16)
    model.save_pretrained(path / "model")
    tok.save_pretrained(path / "model")
    (path / "data").mkdir()
    return _tofu_length_data(path / "data", tok, 80, 150)


def _floor_step(run, step: int) -> None:
    """The plain step's losses with forget and retain reduced separately (the buffers reset between the two,
    as the geometry path does); nothing read or written."""
    from dsunlearn.engine.shard import zero_grad_buffers
    from dsunlearn.recipes.step_plan import StepPlan
    from dsunlearn.unlearn_losses import objective_loss

    plan = StepPlan.for_step(step, run.cfg, run.spec, run.regularizer)
    batch = run.step_batch(step, plan)
    cf, cr = plan.loss_coefs
    objective = objective_loss(run.spec, run.params, cf, batch.forget_units, run._ref_logits, run.accum * run.world)
    retain = run._retain_loss(run.regularizer, run.regularizer_params, cr, batch)
    eng = run.engine
    for part in ((batch.objective, objective), (batch.retain, retain)):
        zero_grad_buffers(eng.deepspeed, eng.named)
        eng._backward_all([part])
    eng.step()


def _peak_bytes(fn) -> int:
    """Peak of the bytes allocated and not yet freed while fn() runs (torch.profiler memory events)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    device = DeviceType.CUDA if cuda else DeviceType.CPU
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == device]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def worker(a, root: str) -> dict | None:
    import torch.distributed as tdist

    from dsunlearn import dist
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.unlearn import UnlearnRun

    dist.init_distributed()
    world = dist.world_size()
    common = [f"model.name_or_path={root}/model", f"engine.zero_stage={a.stage}", f"engine.micro_batch_size={a.micro}",
              f"engine.global_batch_size={a.batch}", "eval.at_end=false", f"data.max_length={a.seq}",
              "data.source=local", f"data.path={root}/data", "engine.optimizer=adamw", "engine.lr=1e-5",
              f"model.dtype={'bfloat16' if a.bf16 else 'float32'}"]  # fmt: skip
    names = a.variants.split(",")
    runs = {n: UnlearnRun(load_config("tiny_npo", common + VARIANTS[n])) for n in names}
    do = {n: (lambda i, r=r: _floor_step(r, i)) if n == "floor" else runs[n].step for n, r in runs.items()}
    rounds: list[dict[str, float]] = []
    for i in range(a.warmup + a.steps):
        k = i % len(names)
        t = {}
        for n in names[k:] + names[:k]:  # rotated order
            dist.barrier()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            do[n](i)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            dist.barrier()
            t[n] = time.perf_counter() - t0
        if i >= a.warmup:
            rounds.append(t)
    i = a.warmup + a.steps
    mem = {}
    for n in names:  # one profiled step each (slower: not timed)
        gru = runs[n].gru if n != "floor" else None
        peak = _peak_bytes(lambda n=n: do[n](i))
        persistent = gru.ema.flat.numel() * 4 if gru is not None and gru.ema is not None else 0
        mem[n] = peak + persistent
    params = _param_count(f"{root}/model")
    per_rank = [None] * world
    tdist.all_gather_object(per_rank, mem) if world > 1 else per_rank.__setitem__(0, mem)
    enc = runs[names[0]]
    tokens = sum(len(e.input_ids) for e in enc.forget[: a.batch]) + sum(len(e.input_ids) for e in enc.retain[: a.batch])
    if not dist.is_main():
        return None
    return {"world": world, "params": params, "rounds": rounds, "memory_bytes_per_rank": per_rank,
            "tokens_per_step": tokens}  # fmt: skip


def _param_count(model_dir: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return sum(
            p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).parameters()
        )


def table(res: dict, a, mean_tokens: float) -> tuple[str, dict]:
    rounds = res["rounds"]
    names = [n for n in VARIANTS if n in rounds[0]]  # the table in VARIANTS order (rounds run rotated)
    ratio = {n: statistics.median(r[n] / r["plain"] for r in rounds) for n in names}
    floor = {n: statistics.median(r[n] / r["floor"] for r in rounds) for n in names} if "floor" in names else {}
    sec = {n: statistics.median(r[n] for r in rounds) for n in names}
    shard = 4 * res["params"] / res["world"]  # bytes of one fp32 shard, 4P/N
    mem = {n: max(m[n] for m in res["memory_bytes_per_rank"]) for n in names}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    title = (f"Geometry cost ({device}, {res['world']} rank(s), ZeRO-{a.stage}, {res['params'] / 1e6:.1f}M params"
             f"{', bf16' if a.bf16 else ''}, global batch {a.batch} (micro {a.micro}), {mean_tokens:.0f} tokens/item, "
             f"{res['tokens_per_step']} tokens/step forget+retain, {len(rounds)} interleaved steps)")  # fmt: skip
    base = mem["floor"] if "floor" in mem else float("nan")
    head = ("| variant | s / step (median) | x plain | x floor | peak MiB / rank | extra over plain "
            "| extra over floor |\n|---|---|---|---|---|---|---|\n")  # fmt: skip
    rows = "".join(f"| {n} | {sec[n]:.3f} | {ratio[n]:.3f} | {floor.get(n, float('nan')):.3f} | "
                   f"{mem[n] / 2**20:.0f} | {(mem[n] - mem['plain']) / shard:+.2f} | {(mem[n] - base) / shard:+.2f} |\n"
                   for n in names)  # fmt: skip
    rows += "\nextra memory in fp32 shards of this rank (4P/N bytes)\n"
    out = {"bench": "geometry", "device": device, "stage": a.stage, "world": res["world"], "params": res["params"],
           "tokens_per_step": res["tokens_per_step"], "seconds_median": sec, "ratio_to_plain": ratio,
           "ratio_to_floor": floor, "peak_bytes_per_rank": mem, "fp32_shard_bytes": shard}  # fmt: skip
    return f"# {title}\n\n{head}{rows}", out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)  # not --nproc: torchrun would claim it
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=192)
    p.add_argument("--batch", type=int, default=32, help="global batch (forget and retain each)")
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:  # inside torchrun
        res = worker(a, a.child)
        if res is not None:
            print("RESULT " + json.dumps(res), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        mean_tokens = _build(Path(tmp), a)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.ranks), __file__,
               *sys.argv[1:], "--child", tmp]  # fmt: skip
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(proc.stderr[-4000:])
    md, out = table(json.loads(line[len("RESULT ") :]), a, mean_tokens)
    print(md)
    print(json.dumps(out))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"geometry_{out['device']}_z{a.stage}.md").write_text(md)


if __name__ == "__main__":
    main()
