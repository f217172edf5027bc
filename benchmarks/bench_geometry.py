"""Cost of gradient geometry on shards, as ratios to a plain unlearning step, measured in ONE run.

Variants, all NPO + retain NLL on the same model, data and engine settings:
  plain      gamma L_f + lambda L_r into the same buffers, one reduction, step (no geometry)
  gru        forget and retain gradients read as shards, GRU projection, write-back, step
  gru+geff   the same plus the G-effect every step (one more backward for grad R(D_f), one [5, G] all_reduce)
  gather     the naive alternative: GRU computed on full gradients gathered with safe_get_full_grad
Prints one JSON line (ratios, seconds per step) and writes benchmarks/results/geometry_<device>.md.

    python benchmarks/bench_geometry.py --ranks 2            # CPU ranks (gloo)
    python benchmarks/bench_geometry.py --ranks 1 --hidden 1024 --layers 8 --vocab 32000 --seq 512   # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _build_model(path: Path, a) -> None:
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
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def _gather_gru_step(run, step: int) -> None:
    """GRU on full gradients via safe_get_full_grad (what one would do without shards)."""
    import deepspeed.utils

    from dsunlearn.unlearn_losses import global_count, nll_loss, objective_loss

    engine = run.engine
    forget_batches = run._micro(run.forget, run.forget_stream, step, True)
    retain_batches = run._micro(run.retain, run.retain_stream, step, False)
    f_count = global_count(run.forget, run.forget_stream.global_indices(step), run.spec.unit)
    r_count = global_count(run.retain, run.retain_stream.global_indices(step), "token")
    grads = []
    for batches, fn in (
        (forget_batches, objective_loss(run.spec, run.params, 1.0, f_count)),
        (retain_batches, nll_loss(1.0, r_count)),
    ):
        engine.accumulate([(batches, fn)])
        grads.append(torch.cat([deepspeed.utils.safe_get_full_grad(p).reshape(-1).double() for _, p in engine.named]))
    g_u, g_r = grads
    if run._ema is None:
        run._ema = 0.8 * g_r
    else:
        run._ema = 0.8 * g_r + 0.2 * run._ema
    dot = torch.dot(g_u, run._ema)
    if dot < 0:
        g_u = g_u - dot / torch.dot(run._ema, run._ema) * run._ema
    g = g_u + g_r
    off = 0
    for _, p in engine.named:  # write back through the full-gradient setter
        n = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
        deepspeed.utils.safe_set_full_grad(
            p, g[off : off + n].view(p.ds_shape if hasattr(p, "ds_shape") else p.shape).float()
        )
        off += n
    engine.step()


def worker(a, model_dir: str) -> dict | None:
    from dsunlearn import dist
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.unlearn import UnlearnRun

    dist.init_distributed()
    world = dist.world_size()
    common = [f"model.name_or_path={model_dir}", f"engine.zero_stage={a.stage}", f"engine.micro_batch_size={a.micro}",
              f"engine.global_batch_size={a.micro * world}", "engine.grad_accum_steps=1", "eval.at_end=false",
              f"data.max_length={a.seq}", "engine.optimizer=adamw", "engine.lr=1e-5"]  # fmt: skip
    gru = ["geometry.gru=true"]
    variants = {"plain": [], "gru": gru, "gru+geff": gru + ["geometry.geffect_every=1"], "gather": []}
    times: dict[str, float] = {}
    for name, extra in variants.items():
        run = UnlearnRun(load_config("tiny_npo", common + extra))
        run._ema = None
        do = (lambda i, r=run: _gather_gru_step(r, i)) if name == "gather" else run.step
        for i in range(a.warmup):
            do(i)
        dist.barrier()
        t0 = time.perf_counter()
        for i in range(a.warmup, a.warmup + a.steps):
            do(i)
        dist.barrier()
        times[name] = (time.perf_counter() - t0) / a.steps
        del run
    params = sum(p.numel() for p in torch.nn.Module.parameters(_load_meta(model_dir)))
    return {"world": world, "params": params, "seconds_per_step": times} if dist.is_main() else None


def _load_meta(model_dir: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)  # not --nproc: torchrun would claim it
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:  # inside torchrun
        res = worker(a, a.child)
        if res is not None:
            print("RESULT " + json.dumps(res), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        _build_model(model_dir, a)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.ranks), __file__,
               *sys.argv[1:], "--child", str(model_dir)]  # fmt: skip
        import subprocess

        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(proc.stderr[-4000:])
    res = json.loads(line[len("RESULT ") :])
    t = res["seconds_per_step"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"bench": "geometry", "device": device, "stage": a.stage, **res,
           "ratio_to_plain": {k: round(v / t["plain"], 3) for k, v in t.items()}}  # fmt: skip
    print(json.dumps(out))
    rows = "\n".join(f"| {k} | {v * 1000:.1f} | {v / t['plain']:.2f} |" for k, v in t.items())
    title = f"Geometry cost ({device}, {res['world']} process(es), ZeRO-{a.stage}, {res['params'] / 1e6:.1f}M params"
    head = "| variant | ms / step | ratio to plain |\n|---|---|---|\n"
    md = f"# {title}, seq {a.seq}, micro {a.micro})\n\n{head}{rows}\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"geometry_{device}.md").write_text(md)


if __name__ == "__main__":
    main()
