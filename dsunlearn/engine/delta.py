"""Parameter deltas on shards for UIPE: delta = theta_u - theta_o, each rank its own partition, no gather.

At the start of unlearning every rank snapshots its fp32 master fragments of theta_o (P/N floats, kept on the
CPU). At each checkpoint it writes `delta/rank{r}.safetensors`: one fp32 tensor per parameter fragment it
owns, plus metadata to reassemble full tensors offline with any number of processes (names, shapes, numel,
fragment start and size, world size, dtype, hash of the original model).

Exactness: a plain fp32 difference fl(u - o) can round (when u and o differ in sign or by more than a factor
of 2), and then o + d != u. We store the fp32 d nearest to u - o for which fl32(o + d) == u holds, found by
nudging the rounded difference by single ulps. Where no fp32 d can work (|u| << |o|: o + d only lands on
multiples of ulp(o); measured on 1.8-4.5% of elements after short tiny-model runs, mostly near-zero weights),
the file also keeps the element's index and exact theta_u value (`<name>::fix_idx`, `<name>::fix_u`), and
extrapolation uses the same formula rearranged, theta_u + alpha * d, there. So alpha = 0 reproduces theta_u
bit for bit while the files stay fp32 (float64 deltas would double their size).

Mixed precision: with bf16 training DeepSpeed's fp32 master weights start from the bf16-rounded original, so
the delta is relative to bf16(theta_o); the metadata records `base_dtype` and extrapolation rounds theta_o the
same way before adding the delta (alpha = 0 then gives the fp32 master theta_u exactly).

The files' names, keys and metadata: `uipe/delta_format.py` (shared with the reader, `uipe/extrapolate.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dsunlearn import dist
from dsunlearn.engine.shard import get_local_param_fragment
from dsunlearn.fsutil import atomic_write_bytes
from dsunlearn.uipe.delta_format import (  # the format: its owner is uipe/delta_format.py
    fix_idx_key,
    fix_u_key,
    param_entry,
    shard_metadata,
    shard_name,
)


def snapshot_fragments(engine, named: list[tuple[str, torch.nn.Parameter]]) -> dict[str, tuple[torch.Tensor, int]]:
    """{name: (this rank's fp32 master fragment of theta_o as a CPU copy, start index in the flat param)}."""
    out = {}
    for name, p in named:
        frag = get_local_param_fragment(engine, p)
        if frag is not None and frag[0].numel() > 0:
            out[name] = (frag[0].detach().float().cpu().clone(), int(frag[1]))
    return out


def differs_bitwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise 'not the same fp32 bits' (-0.0 vs +0.0 and NaN payloads count; == would miss them)."""
    return a.view(torch.int32) != b.view(torch.int32)


def exact_delta(u: torch.Tensor, o: torch.Tensor, max_nudges: int = 8) -> tuple[torch.Tensor, int]:
    """(fp32 d with fl32(o + d) bitwise equal to u wherever reachable, number of elements where it was not)."""
    d = (u.double() - o.double()).float()
    for _ in range(max_nudges):
        s = o + d
        bad = differs_bitwise(s, u)
        if not bool(bad.any()):
            return d, 0
        up = torch.nextafter(d, torch.full_like(d, float("inf")))
        down = torch.nextafter(d, torch.full_like(d, float("-inf")))
        d = torch.where(bad & (s != u), torch.where(s < u, up, down), d)  # equal values (signed zeros): fix-up
    return d, int(differs_bitwise(o + d, u).sum())


def save_delta_shard(
    engine, named: list[tuple[str, torch.nn.Parameter]], orig: dict, out_dir: Path, original_hash: str
) -> Path:
    """Write this rank's `rank{r}.safetensors` (every rank calls it; no communication)."""
    from safetensors.torch import save

    tensors, params, inexact = {}, {}, 0
    shapes = {n: list(p.ds_shape if hasattr(p, "ds_shape") else p.shape) for n, p in named}
    for name, p in named:
        if name not in orig:
            continue
        o, start = orig[name]
        frag = get_local_param_fragment(engine, p)
        u = frag[0].detach().float().cpu()
        d, bad = exact_delta(u, o)
        inexact += bad
        tensors[name] = d
        if bad:
            idx = differs_bitwise(o + d, u).nonzero().view(-1)
            tensors[fix_idx_key(name)], tensors[fix_u_key(name)] = idx, u[idx].clone()
        numel = int(p.ds_numel if hasattr(p, "ds_numel") else p.numel())
        params[name] = param_entry(shapes[name], numel, start, int(d.numel()))
    base_dtype = str(named[0][1].dtype).removeprefix("torch.") if named else "float32"
    meta = shard_metadata(dist.world_size(), dist.rank(), base_dtype, original_hash, inexact, params)
    path = Path(out_dir) / shard_name(dist.rank())
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path
