"""Checksums of what dsunlearn writes and later reads back: one `MANIFEST.json` per directory.

A directory dsunlearn publishes (a checkpoint `checkpoints/stepN/`, the final `delta/`) gets a manifest that
lists every file below it with its size and sha256. Whoever reads the directory back (``--resume``,
``extrapolate``, ``geffect``) verifies the files it is about to use first, so a truncated file, a flipped byte
or a file swapped for another one is reported as "this file is damaged, this is what to do" instead of a
``PytorchStreamReader`` traceback or, worse, silently different weights.

A checksum is an integrity check, not a signature: whoever can write a run directory can rewrite its manifest.
Safety against hostile files comes from how they are read (safetensors, ``torch.load(weights_only=True)``:
`engine/safe_checkpoint.py`), not from this file.

Distributed: the files are dealt round-robin to the ranks, each rank hashes its share, rank 0 writes the
manifest (`write_manifest`); verification deals them the same way and every rank raises the same first
problem (`verify_manifest`). Hashing reads each byte once, at disk speed (sha256 runs at about 1-2 GB/s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dsunlearn import dist
from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_write_json

MANIFEST = "MANIFEST.json"
FORMAT = "dsunlearn-manifest/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files below root (sorted; the manifest itself excluded)."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST:
            out.append(p.relative_to(root).as_posix())
    return out


def _hash_share(root: Path, names: list[str]) -> dict[str, dict]:
    mine = names[dist.rank() :: dist.world_size()]
    return {n: {"size": (root / n).stat().st_size, "sha256": sha256_file(root / n)} for n in mine}


def write_manifest(root: str | Path) -> Path:
    """Collective: hash every file below `root` (each rank a share); rank 0 writes `root/MANIFEST.json`."""
    root = Path(root)
    names = dist.broadcast_object(_files(root) if dist.is_main() else None)
    entries: dict[str, dict] = {}
    for part in dist.all_gather_object(_hash_share(root, names)):
        entries.update(part)
    if dist.is_main():
        atomic_write_json(root / MANIFEST, {"format": FORMAT, "files": {n: entries[n] for n in names}})
    dist.barrier()
    return root / MANIFEST


def read_manifest(root: Path) -> dict[str, dict]:
    """{relative path: {size, sha256}} of `root`'s manifest; RunError if it is missing or not a manifest."""
    f = root / MANIFEST
    if not f.is_file():
        raise RunError(
            f"'{root}' has no {MANIFEST} (the checksums dsunlearn writes with every checkpoint and delta): it was "
            "not written by this dsunlearn version, or its save did not finish; use another checkpoint or rerun"
        )
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        files = data["files"] if isinstance(data, dict) and data.get("format") == FORMAT else None
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
            for v in files.values()
        ):
            raise ValueError("not a dsunlearn manifest")
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RunError(f"'{f}' is damaged ({type(e).__name__}): the checksums cannot be read; {_FIX}") from None
    for name in files:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise RunError(f"'{f}' lists '{name[:80]}', a path outside '{root}'; {_FIX}")
    return files


_FIX = "the directory was damaged or changed after dsunlearn wrote it: use another checkpoint or rerun the step"


def _problem(root: Path, name: str, want: dict) -> str | None:
    p = root / name
    if not p.is_file():
        return f"'{p}' is missing (listed in {root / MANIFEST}); {_FIX}"
    size = p.stat().st_size
    if size != want["size"]:
        return f"'{p}' is damaged: {size} bytes where {want['size']} were written (truncated?); {_FIX}"
    if sha256_file(p) != want["sha256"]:
        return f"'{p}' is damaged: its sha256 differs from the one recorded when it was written; {_FIX}"
    return None


def verify_manifest(root: str | Path, only: list[str] | None = None, collective: bool = True) -> None:
    """Check the files of `root` (or the listed relative paths `only`) against its manifest; RunError if not.

    collective=True: every rank calls it, each checks a share, all raise the same (first) problem.
    collective=False: this process checks everything (offline tools on one process).
    """
    root = Path(root)
    problem = None
    try:
        files = read_manifest(root)
    except RunError as e:
        files, problem = {}, str(e)
    if problem is None and only is not None:
        missing = [n for n in only if n not in files]
        if missing:
            problem = f"'{root / missing[0]}' is not listed in {root / MANIFEST}; {_FIX}"
    names = sorted(files) if only is None else sorted(only)
    if problem is None:
        share = names[dist.rank() :: dist.world_size()] if collective else names
        problem = next((m for n in share if (m := _problem(root, n, files[n]))), None)
    if collective:
        problem = next((m for m in dist.all_gather_object(problem) if m), None)
    if problem:
        raise RunError(problem)
