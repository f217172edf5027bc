"""No command writes inside, or deletes, any of its inputs; no output goes where it cannot be written.

One check for every command: the paths it will write (or replace) against the paths it reads (model,
tokenizer, original model, data, retain log, delta shards), all with symlinks resolved, so that
`eval --model M --output-dir M`, `extrapolate --output-dir ORIG/sub` or an output dir that is a symlink into a
model directory are refused before anything is written. And one check that an output location can be
created at all (not a dangling symlink, not under a read-only or non-directory parent).
"""

from __future__ import annotations

import os
from pathlib import Path

from dsunlearn.errors import RunError


def resolved(p: str | os.PathLike) -> Path:
    """Absolute path with every symlink that exists resolved (the rest of the path kept as written)."""
    return Path(p).expanduser().resolve(strict=False)


def local_inputs(named: dict[str, str | os.PathLike | None]) -> dict[str, Path]:
    """{label: resolved path} of the inputs that are local paths (unset values, `tiny` and hub ids dropped)."""
    out = {}
    for label, v in named.items():
        if not v or v == "tiny":
            continue
        p = Path(v).expanduser()
        if p.exists():
            out[label] = p.resolve()
    return out


def check_outputs(
    outputs: dict[str, str | os.PathLike], inputs: dict[str, str | os.PathLike], replaces: bool = False
) -> None:
    """RunError if an output is an input, lies inside an input directory, or (replaces=True: the output is
    deleted first) contains an input. Labels name where each path came from (a flag or a config key)."""
    ins = {label: resolved(p) for label, p in inputs.items()}
    for olabel, raw in outputs.items():
        o = resolved(raw)
        for ilabel, i in ins.items():
            if o == i or (i.is_dir() and o.is_relative_to(i)):
                raise RunError(
                    f"{olabel} '{raw}' is inside the input {_kind(ilabel, i)} '{i}' ({ilabel}); inputs are only ever "
                    f"read, dsunlearn never writes into them: choose a {olabel} outside it"
                )
            if replaces and i.is_relative_to(o):
                raise RunError(
                    f"refusing --overwrite of '{raw}': it holds the input {ilabel}='{i}', which replacing it would "
                    f"delete; choose another {olabel} (or move the input out first)"
                )


def _kind(label: str, path: Path) -> str:
    if not path.is_dir():
        return "file"
    return "model directory" if any(w in label for w in ("model", "original", "tokenizer")) else "directory"


def check_writable(path: str | os.PathLike, label: str) -> None:
    """RunError if `path` cannot become (or be written as) an output: a dangling symlink, a parent that is a
    file, a location without write permission."""
    p = Path(path).expanduser()
    if p.is_symlink() and not p.exists():
        raise RunError(
            f"{label} '{path}' is a symlink to '{os.readlink(p)}', which does not exist; remove the link or "
            f"point {label} at a real directory"
        )
    probe = p.resolve(strict=False)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RunError(f"{label} '{path}' cannot be created: '{probe}' is a file, not a directory; choose another")
    target = probe  # the output itself when it exists, else its nearest existing ancestor (created from there)
    if not os.access(target, os.W_OK | os.X_OK):
        raise RunError(
            f"{label} '{path}' is not writable ('{target}': permission denied); choose a location you can write"
        )


def check_no_links(root: str | os.PathLike, out: str | os.PathLike, label: str) -> None:
    """RunError if a directory between `root` (a run directory) and the output `out` below it is a symlink:
    a link planted inside a run must not send dsunlearn's writes somewhere else."""
    root, out = Path(root).expanduser().absolute(), Path(out).expanduser().absolute()
    if not out.is_relative_to(root):
        return
    p = root
    for part in out.relative_to(root).parts:
        p = p / part
        if p.is_symlink():
            raise RunError(
                f"{label} '{out}' goes through '{p}', a symlink inside the run directory (to '{os.readlink(p)}'); "
                "dsunlearn writes a run's outputs only into the run itself: remove the link"
            )


def check_new_file(path: str | os.PathLike, label: str, replaceable=None) -> None:
    """RunError if `path` exists and is not a file dsunlearn may replace (`replaceable(path) -> bool`, e.g. its
    own earlier output): an output flag must never overwrite somebody's file."""
    p = Path(path).expanduser()
    if not (p.exists() or p.is_symlink()):
        return
    if p.is_file() and not p.is_symlink() and replaceable is not None and replaceable(p):
        return
    raise RunError(
        f"{label} '{path}' already exists and is not an earlier output of this command; dsunlearn never replaces "
        f"a file it did not write: choose a new {label} path (or remove the file yourself)"
    )
