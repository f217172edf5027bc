"""Memory and time of the membership-inference token statistics: dsunlearn's chunked `vocab_stats` vs the
full-softmax computation (log_softmax of a float32 copy, then p, mu, var, gather, argmax over [B, T, V]).

Memory is the peak of the bytes allocated beyond the logits themselves while one call runs, counted from every
allocation and free the allocator reports to `torch.profiler` (profile_memory=True: CPU tensors and the
temporaries inside ops are seen, not only op outputs), in units of one [B, T, V] float32 tensor as well. Time:
median of repeats, outside the profiler; reported as ratios measured in one run, for float32 and bfloat16
logits. Prints one JSON line, writes benchmarks/results/token_stats_<device>.md.

    python benchmarks/bench_token_stats.py                                   # CPU, B=2, T=256, V=32000
    python benchmarks/bench_token_stats.py --batch 4 --seq 1024 --vocab 128256 --chunk-size 64   # GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from dsunlearn.eval.token_stats import vocab_stats
from dsunlearn.objectives._common import chunk_len
from dsunlearn.objectives.logprobs import IGNORE_INDEX

HERE = Path(__file__).resolve().parent
DTYPES = ("float32", "bfloat16")


def naive(logits, labels):
    """The same outputs as `vocab_stats` from a full float32 log-softmax [B, T-1, V] (the causal shift applied)."""
    y = labels[:, 1:]
    mask = y != IGNORE_INDEX
    x = logits[:, :-1]
    lv = torch.log_softmax(x.float(), dim=-1)
    p = lv.exp()
    mu = (p * lv).sum(-1)
    var = (p * lv * lv).sum(-1) - mu.square()
    logp = lv.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return {"logp": logp, "mu": mu, "var": var, "pred": x.argmax(-1), "mask": mask}


def peak_extra_bytes(fn) -> int:
    """Peak of the bytes allocated and not yet freed while `fn()` runs, on the device of the run.

    The profiler's memory events carry +nbytes per allocation and -nbytes per free; their running sum in time
    order starts at 0 (tensors that existed before, such as the logits, are not counted) and its maximum is the
    peak. This sees every allocation of the CPU allocator, temporaries inside an op (logsumexp's) included.
    """
    device = DeviceType.CUDA if torch.cuda.is_available() else DeviceType.CPU
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == DeviceType.CUDA else [])
    with profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    mem = sorted(
        (e for e in events if e.name() == "[memory]" and e.device_type() == device), key=lambda e: e.start_ns()
    )
    running = peak = 0
    for e in mem:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` (synchronised on CUDA)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_abs_diffs(ours: dict, ref: dict) -> dict:
    """max |ours - ref| of logp, mu, var over the scored positions, and how many argmaxes differ."""
    m = ref["mask"]
    out = {k: (ours[k][m].double() - ref[k][m].double()).abs().max().item() for k in ("logp", "mu", "var")}
    out["pred_mismatches"] = int((ours["pred"][m] != ref["pred"][m]).sum())
    return out


def bench_dtype(logits, labels, chunk_sizes: list[int | None], repeats: int) -> dict:
    """One dtype: the naive row, then one `vocab_stats` row per chunk size (None = the default).

    Expected peaks, in float32 [B, positions, V] tensors: the full path holds log p, p, p * log p and
    p * log p * log p over all T-1 positions (4; the bf16 upcast is freed before p exists); `vocab_stats` holds
    log p, p, log p^2 and p * log p^2 of one chunk (4), plus the chunk's float32 copy for bf16 logits (5).
    """
    b, t, v = logits.shape
    unit = b * t * v * 4  # one [B, T, V] float32 tensor
    upcast = int(logits.dtype != torch.float32)
    rows = {}
    fns = {"full_log_softmax": (lambda: naive(logits, labels), 4 * b * (t - 1) * v * 4)}
    for c in chunk_sizes:
        positions = chunk_len(logits, c)
        chunks = -(-(t - 1) // positions)
        name = f"vocab_stats, {'default ' if c is None else ''}chunk {positions} positions ({chunks} chunk"
        name += ")" if chunks == 1 else "s)"
        expected = (4 + upcast) * b * min(positions, t - 1) * v * 4
        fns[name] = (lambda c=c: vocab_stats(logits, labels, chunk_size=c), expected)
    for name, (fn, expected) in fns.items():
        fn()  # warm-up: one-off allocations (thread pools, kernels) are not the op's
        peak = peak_extra_bytes(fn)
        rows[name] = {"peak_extra_MiB": peak / 2**20, "expected_MiB": expected / 2**20,
                      "peak_extra_over_BTV_fp32": peak / unit, "seconds": seconds(fn, repeats)}  # fmt: skip
    ref = rows["full_log_softmax"]
    for row in rows.values():
        row["memory_ratio"] = row["peak_extra_MiB"] / ref["peak_extra_MiB"]
        row["time_ratio"] = row["seconds"] / ref["seconds"]
    default = vocab_stats(logits, labels)
    return {"rows": rows, "max_abs_diff_default": max_abs_diffs(default, naive(logits, labels))}


def markdown(res: dict) -> list[str]:
    b, t, v = res["shape"]
    md = [f"# Token statistics for Min-K%++ ({res['device']}, B x T x V = {b} x {t} x {v})", "",
          f"Peak extra memory = bytes allocated beyond the logits during one call; one [B, T, V] float32 tensor = "
          f"{res['BTV_fp32_MiB']:.1f} MiB ({res['BTV_fp32_MiB'] * 2**20 / 1e6:.1f} MB).", "",
          "| logits dtype | implementation | peak extra (MiB) | expected (MiB) | x [B,T,V] fp32 | memory ratio | ms "
          "| time ratio |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for dtype in DTYPES:
        for name, r in res[dtype]["rows"].items():
            md.append(f"| {dtype} | {name} | {r['peak_extra_MiB']:.1f} | {r['expected_MiB']:.1f} | "
                      f"{r['peak_extra_over_BTV_fp32']:.2f} | "
                      f"{r['memory_ratio']:.2f} | {r['seconds'] * 1000:.1f} | {r['time_ratio']:.2f} |")  # fmt: skip
    md += ["", "Max |vocab_stats (default) - full log_softmax| over the scored positions:", ""]
    for dtype in DTYPES:
        d = res[dtype]["max_abs_diff_default"]
        md.append(f"- {dtype}: logp {d['logp']:.2e}, mu {d['mu']:.2e}, var {d['var']:.2e}, "
                  f"argmax mismatches {d['pred_mismatches']}")  # fmt: skip
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--chunk-size", type=int, action="append", default=None,
                   help="positions per chunk, besides the default (repeatable; default: 32)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=device).manual_seed(0)
    logits32 = torch.randn(a.batch, a.seq, a.vocab, generator=g, device=device)
    labels = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g, device=device)
    labels[:, : a.seq // 4] = IGNORE_INDEX  # a prompt
    res = {"bench": "token_stats", "device": device, "shape": [a.batch, a.seq, a.vocab],
           "BTV_fp32_MiB": a.batch * a.seq * a.vocab * 4 / 2**20}  # fmt: skip
    chunk_sizes = [None, *(a.chunk_size or [32])]
    for dtype in DTYPES:
        res[dtype] = bench_dtype(logits32.to(getattr(torch, dtype)), labels, chunk_sizes, a.repeats)
    print(json.dumps(res))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"token_stats_{device}.md").write_text("\n".join(markdown(res)) + "\n")


if __name__ == "__main__":
    main()
