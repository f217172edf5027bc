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
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

from dsunlearn import dist
from dsunlearn.engine.shard import get_local_param_fragment
from dsunlearn.fsutil import atomic_write_bytes

META_KEY = "dsunlearn_delta"


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


def model_hash(path: str | Path) -> str:
    """sha256 over the model dir's config.json and weight files (sorted): identifies theta_o.

    Cached per process by (file, size, mtime): a sweep or an offline G-effect over many checkpoints reads a
    multi-GB model once, not once per call.
    """
    p = Path(path).resolve()
    files = sorted(f for f in p.iterdir() if f.name == "config.json" or f.suffix == ".safetensors")
    return _hash_files(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=8)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in files:
        f = Path(name)
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


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
            tensors[f"{name}::fix_idx"], tensors[f"{name}::fix_u"] = idx, u[idx].clone()
        numel = int(p.ds_numel if hasattr(p, "ds_numel") else p.numel())
        params[name] = {"shape": shapes[name], "numel": numel, "start": start, "fragment_numel": int(d.numel())}
    meta = {
        "world_size": dist.world_size(),
        "rank": dist.rank(),
        "dtype": "float32",
        # The dtype the engine's module trained in. With bf16, DeepSpeed's fp32 master starts from the
        # bf16-rounded original, so deltas are relative to theta_o rounded to this dtype.
        "base_dtype": str(named[0][1].dtype).removeprefix("torch.") if named else "float32",
        "original_hash": original_hash,
        "inexact": inexact,
        "params": params,
    }
    path = Path(out_dir) / f"rank{dist.rank()}.safetensors"
    atomic_write_bytes(path, save(tensors, metadata={META_KEY: json.dumps(meta)}))
    return path


def verify_delta_dir(delta_dir: Path, collective: bool = False) -> None:
    """Check the rank files against the manifest dsunlearn wrote with them (`dsunlearn/manifest.py`): the
    final `delta/` has its own, a checkpoint's `delta/` is listed in the checkpoint's. A directory without one
    is refused: deleting the manifest must not be a way around the checksums."""
    from dsunlearn.errors import RunError
    from dsunlearn.manifest import MANIFEST, read_manifest, verify_manifest

    delta_dir = Path(delta_dir)
    if (delta_dir / MANIFEST).is_file():
        return verify_manifest(delta_dir, collective=collective)
    parent = delta_dir.parent
    if (parent / MANIFEST).is_file():
        listed = [n for n in read_manifest(parent) if n.startswith(f"{delta_dir.name}/")]
        if listed:
            return verify_manifest(parent, only=listed, collective=collective)
    raise RunError(
        f"'{delta_dir}' has no {MANIFEST} (the checksums dsunlearn writes with every delta): its shards cannot be "
        "verified; use the delta/ of a run made by this dsunlearn version (runs made before 0.2: rerun them)"
    )


def read_delta_meta(delta_dir: str | Path, collective: bool = False) -> list[dict]:
    """Metadata of every rank file in `delta_dir` (sorted by rank); checks the checksums and that the set is
    complete. collective=True when every rank of a process group calls it (they share the hashing)."""
    from safetensors import SafetensorError, safe_open

    from dsunlearn.errors import RunError

    files = sorted(Path(delta_dir).glob("rank*.safetensors"))
    if not files:
        raise RunError(f"no delta shards (rank*.safetensors) in '{delta_dir}': was the run saved by dsunlearn unlearn?")
    metas = []
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                raw = (fh.metadata() or {}).get(META_KEY)
            meta = None if raw is None else json.loads(raw)
        except (SafetensorError, OSError, ValueError, RecursionError) as e:
            raise RunError(f"cannot read delta shard '{f}' ({type(e).__name__}): it is damaged; {_DELTA_FIX}") from None
        if not isinstance(meta, dict):
            raise RunError(f"'{f}' is not a dsunlearn delta shard (no '{META_KEY}' metadata); {_DELTA_FIX}")
        if not _meta_ok(meta):
            raise RunError(f"'{f}' has malformed '{META_KEY}' metadata; {_DELTA_FIX}")
        metas.append({**meta, "file": str(f)})
    metas.sort(key=lambda m: m["rank"])
    world = metas[0]["world_size"]
    if sorted(m["rank"] for m in metas) != list(range(world)):
        have = [m["rank"] for m in metas]
        raise RunError(f"delta shards in '{delta_dir}' are incomplete: ranks {have} of world size {world}")
    verify_delta_dir(Path(delta_dir), collective=collective)
    return metas


_DELTA_FIX = "use the delta/ of a finished dsunlearn unlearn run (or another checkpoint's)"


def _meta_ok(m: dict) -> bool:
    """The fields extrapolation relies on, with the types it relies on (untrusted input)."""
    ints = all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) for k in ("world_size", "rank"))
    if not (ints and 0 <= m["rank"] < m["world_size"] <= 1 << 20 and isinstance(m.get("original_hash"), str)):
        return False
    params = m.get("params")
    if not isinstance(params, dict):
        return False
    for pm in params.values():
        if not isinstance(pm, dict) or not all(
            isinstance(pm.get(k), int) and pm[k] >= 0 for k in ("numel", "start", "fragment_numel")
        ):
            return False
        if pm["start"] + pm["fragment_numel"] > pm["numel"]:
            return False
    return True
