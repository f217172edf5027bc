"""The UIPE delta format: one owner for its file names, metadata keys and fix-up keys.

A delta directory (`<run>/delta/`, `<run>/checkpoints/<tag>/delta/`) holds one safetensors file per rank of the
run that wrote it, `rank{r}.safetensors`, and the `MANIFEST.json` (`manifest.py`) of the directory or of the
checkpoint around it. Each file holds, for every parameter fragment that rank owned in the ZeRO partition:

- `<name>`: fp32 [fragment_numel], d = theta_u - theta_o of the fragment (exact: `engine/delta.exact_delta`);
- `<name>::fix_idx` (int64 [k]) and `<name>::fix_u` (fp32 [k]), only where some element has no fp32 d with
  fl32(o + d) == u: those elements' indices in the fragment and their exact theta_u values;
- metadata `META_KEY` = JSON {world_size, rank, dtype ("float32"), base_dtype (the dtype the run trained in:
  deltas are relative to theta_o rounded to it), original_hash (`model_hash` of theta_o), inexact (number of
  fix-up elements), params: {name: {shape, numel, start, fragment_numel}}} (start: the fragment's offset in
  the flat parameter of `numel` elements).

The writer is `engine/delta.save_delta_shard` (it reads DeepSpeed's shards); the reader is
`uipe/extrapolate.py`. A delta directory is untrusted input: `read_delta_meta` checks the checksums, the
metadata's fields and types and that every rank's file is there.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

META_KEY = "dsunlearn_delta"
SHARD_GLOB = "rank*.safetensors"


def shard_name(rank: int) -> str:
    """The file of one rank's fragments."""
    return f"rank{rank}.safetensors"


def fix_idx_key(name: str) -> str:
    """The tensor of fix-up indices (in the fragment) of parameter `name`."""
    return f"{name}::fix_idx"


def fix_u_key(name: str) -> str:
    """The tensor of exact theta_u values at `name`'s fix-up indices."""
    return f"{name}::fix_u"


def param_entry(shape: list[int], numel: int, start: int, fragment_numel: int) -> dict:
    """The metadata of one parameter's fragment: full shape and numel, the fragment's offset and size."""
    return {"shape": shape, "numel": numel, "start": start, "fragment_numel": fragment_numel}


def shard_metadata(
    world_size: int, rank: int, base_dtype: str, original_hash: str, inexact: int, params: dict
) -> dict[str, str]:
    """The safetensors metadata of one rank's file (`params`: {name: param_entry(...)})."""
    meta = {
        "world_size": world_size,
        "rank": rank,
        "dtype": "float32",
        # The dtype the engine's module trained in. With bf16, DeepSpeed's fp32 master starts from the
        # bf16-rounded original, so deltas are relative to theta_o rounded to this dtype.
        "base_dtype": base_dtype,
        "original_hash": original_hash,
        "inexact": inexact,
        "params": params,
    }
    return {META_KEY: json.dumps(meta)}


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

    files = sorted(Path(delta_dir).glob(SHARD_GLOB))
    if not files:
        raise RunError(f"no delta shards ({SHARD_GLOB}) in '{delta_dir}': was the run saved by dsunlearn unlearn?")
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
