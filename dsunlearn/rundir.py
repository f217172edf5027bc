"""Run directories: what a run is, who may use it, what `--overwrite` may remove, what `--resume` continues.

- **What a run is**: a directory whose `run.json` is a marker dsunlearn wrote (`schema`, `kind`, a random
  `id`, the config hash). Any other `run.json` (garbage, another tool's) does not make a directory a run.
- **What `--overwrite` removes**: only the entries that this kind of run writes at its top level (`OWNED`),
  and only when nothing else is there: a directory holding a file dsunlearn did not write is never replaced.
  A demo's nested runs are checked the same way. Inputs inside the directory refuse the overwrite.
- **Who may use it**: one process at a time. Rank 0 holds an exclusive lock (`runlock.py`) on the directory
  from the moment it is prepared until the run ends (any exit: the kernel drops it when the process dies).
  A second run, an `--overwrite` or a `--resume` of a directory in use is refused, naming the holder.
- **What `--resume` continues**: the same kind of run with the same config; paths in the config are compared
  resolved (run from another working directory, or after moving the run, is the same run) and
  `run.output_dir` itself is not part of the identity.

Rank 0 decides and every rank raises the same error (decided once, broadcast), so a refused start exits on all
ranks at once with nothing written.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
import uuid
from pathlib import Path

import yaml

from dsunlearn import __version__, dist
from dsunlearn import run_layout as layout
from dsunlearn.config import DEFAULT_SUITE, AdapterConfig, RunConfig
from dsunlearn.config_io import config_hash, config_to_dict, dump_config
from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_write_json
from dsunlearn.path_guard import check_outputs, check_writable, local_inputs
from dsunlearn.run_layout import OWNED, RUN_MARKER, RunDir
from dsunlearn.runlock import LOCK_FILE, RunLock, lock_problem

SCHEMA = "dsunlearn-run/1"
TRAIN_COMMANDS = ("finetune", "unlearn")
_TMP = re.compile(r"\..+\.tmp")  # staging names of dsunlearn's atomic writers (.model.tmp, .x.json.ab12.tmp)
_HELD: dict[Path, RunLock] = {}
# geometry keys added after runs existed, with the value that reproduces those runs (left out of their identity)
_GRU_VARIANT_DEFAULTS = {"gru_project": "forget", "gru_ema_from": "nll", "gru_cos_clip": None}
# other keys added after runs existed ("section.key": the value that reproduces those runs), likewise left out
_LATER_DEFAULTS = {"eval.length_batches": False, "model.adapter": AdapterConfig(), "objective.loss_mean": "global"}
# each suite's own data section: part of the identity of that suite's runs only
_SUITE_SECTIONS = {"muse": "data.muse", "wmdp": "data.wmdp"}


def _identity(cfg: RunConfig) -> str:
    """The config hash that says "same run": input paths resolved (`run_inputs`), run.output_dir and
    run.overwrite left out."""
    c = copy.deepcopy(cfg)
    for dotted, path in run_inputs(cfg).items():
        section, key = dotted.split(".")
        setattr(getattr(c, section), key, str(path))
    # Runs from before `data.suite` existed were TOFU runs: the default suite leaves their identity unchanged, and
    # so do the sections of the suites a run does not use (a MUSE run from before WMDP had no data.wmdp).
    default_suite = ("data.suite",) if cfg.data.suite == DEFAULT_SUITE else ()
    default_suite += tuple(key for suite, key in _SUITE_SECTIONS.items() if suite != cfg.data.suite)
    # GRU's variant keys came later too: at their defaults (the only behaviour before them) they are left out.
    default_gru = tuple(f"geometry.{k}" for k, v in _GRU_VARIANT_DEFAULTS.items() if getattr(cfg.geometry, k) == v)
    later = tuple(k for k, v in _LATER_DEFAULTS.items() if getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) == v)
    return config_hash(c, ignore=("run.overwrite", "run.output_dir", *default_suite, *default_gru, *later))


def new_marker(cfg: RunConfig | None, kind: str) -> dict:
    return {
        "schema": SCHEMA,
        "kind": kind,
        "id": uuid.uuid4().hex,
        "config_hash": _identity(cfg) if cfg is not None else None,
        "version": __version__,
        "started": time.time(),
    }


def read_marker(out: Path) -> dict | None:
    """The run marker of `out`, or None if `out/run.json` is missing or is not one dsunlearn wrote."""
    f = out / RUN_MARKER
    if not f.is_file() or f.is_symlink() or f.stat().st_size > 1 << 16:
        return None
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    ok = (
        isinstance(m, dict)
        and m.get("schema") == SCHEMA
        and m.get("kind") in OWNED
        and isinstance(m.get("id"), str)
        and re.fullmatch(r"[0-9a-f]{32}", m["id"]) is not None
    )
    return m if ok else None


def _not_a_run(out: Path) -> str:
    what = "holds a run.json that dsunlearn did not write" if (out / RUN_MARKER).exists() else "is not a dsunlearn run"
    return (
        f"run.output_dir '{out}' exists, is not empty and {what}; dsunlearn never deletes it, even with "
        "--overwrite: choose another run.output_dir"
    )


def record_files(out: Path, names: list[str]) -> None:
    """Rank 0: note the sha256 of top-level files this run just wrote in its marker, so that `--overwrite` can
    tell them from a file someone put (or changed) there afterwards (`foreign_entry`)."""
    from dsunlearn.manifest import sha256_file

    marker = read_marker(out)
    if marker is None:
        return
    files = marker.get("files") if isinstance(marker.get("files"), dict) else {}
    files.update({n: sha256_file(out / n) for n in names if (out / n).is_file()})
    atomic_write_json(out / RUN_MARKER, {**marker, "files": files})


def foreign_entry(out: Path, kind: str) -> str | None:
    """The first entry under `out` that a run of `kind` does not write, or a recorded file that changed since
    (nested demo runs checked too); None if everything there is dsunlearn's."""
    from dsunlearn.manifest import sha256_file

    marker = read_marker(out) or {}
    recorded = marker.get("files") if isinstance(marker.get("files"), dict) else {}
    for p in sorted(out.iterdir()):
        if p.name in recorded and (not p.is_file() or sha256_file(p) != recorded[p.name]):
            return f"{p} (changed since dsunlearn wrote it)"
        if p.name in OWNED[kind] or _TMP.fullmatch(p.name):
            nested = p.name in (layout.DEMO_FINETUNE, layout.DEMO_RUNS)  # a demo's runs: runs themselves
            if kind == "demo" and nested and p.is_dir() and not p.is_symlink():
                children = [p] if p.name == layout.DEMO_FINETUNE else sorted(c for c in p.iterdir())
                for child in children:
                    m = read_marker(child) if child.is_dir() and not child.is_symlink() else None
                    if m is None:
                        return str(child)
                    inner = foreign_entry(child, m["kind"])
                    if inner:
                        return inner
            continue
        return str(p)
    return None


def _config_diff(out: Path, cfg: RunConfig) -> str:
    """'engine.lr: 1e-05 -> 0.001, ...' between the run's saved config.yaml and cfg (up to 3 keys), or ''."""
    try:
        old = yaml.safe_load(RunDir(out).config.read_text()[: 1 << 20])
    except (OSError, yaml.YAMLError, ValueError):
        return ""

    def flat(d, prefix=""):
        items = {}
        for k, v in (d if isinstance(d, dict) else {}).items():
            items.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return items

    a, b = flat(old), flat(config_to_dict(cfg))
    skip = ("run.overwrite", "run.output_dir")
    keys = [k for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]
    shown = ", ".join(f"{k}: {_short(a.get(k))} -> {_short(b.get(k))}" for k in keys[:3])
    return shown + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def _short(v, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _resume_problem(out: Path, command: str, cfg: RunConfig) -> str | None:
    from dsunlearn.run_layout import extra_name

    run = RunDir(out)
    info = read_marker(out)
    if info is None:
        why = "missing" if not (out / RUN_MARKER).exists() else "not a marker dsunlearn wrote (damaged or foreign)"
        return f"cannot --resume: '{out}' holds no dsunlearn run ({RUN_MARKER} {why}); start a new run instead"
    if info["kind"] != command or info.get("config_hash") != _identity(cfg):
        diff = _config_diff(out, cfg) if info["kind"] == command else ""
        return (
            f"cannot --resume '{out}': it was started by '{info['kind']}' with a different config"
            f"{' (' + diff + ')' if diff else ''}; resume with the same config and overrides, or start a new run "
            "with another run.output_dir"
        )
    if command != "unlearn":  # finetune resumes by skipping the models already saved
        return None
    try:
        tag = run.latest_tag()
    except RunError as e:
        return f"cannot --resume: {e}"
    if tag is None:
        tags = run.saved_tags()
        if tags:
            return (
                f"cannot --resume: '{out}/checkpoints/LATEST' is missing although checkpoints {', '.join(tags[-2:])} "
                f"exist; write the newest one's name into it (echo {tags[-1]} > {out}/checkpoints/LATEST) and "
                "resume again"
            )
        why = "its model/ is saved: the run reached its end" if run.model.is_dir() else (
            "the run stopped before its first save (run.save_every)")  # fmt: skip
        return (
            f"cannot --resume: '{out}' has no complete checkpoint (checkpoints/LATEST missing; {why}); start it "
            "again with --overwrite or choose another run.output_dir"
        )
    tag_dir = run.checkpoint(tag)
    if not (tag_dir / extra_name(0)).is_file() and list(tag_dir.glob("extra_rank*.pt")):
        return (
            f"cannot --resume '{out}': its checkpoint {tag} was written by dsunlearn 0.1 (pickled resume state, "
            "which this version never loads); start the run again"
        )
    return None  # the checkpoint's files themselves: engine/checkpoint.check_resume_state (every rank)


def run_inputs(cfg: RunConfig) -> dict[str, Path]:
    """{config key: resolved local path} of what a run reads (unset values, `tiny` and hub ids left out)."""
    m = cfg.model
    return local_inputs(
        {
            "model.name_or_path": m.name_or_path,
            "model.tokenizer": m.tokenizer,
            "data.path": cfg.data.path if cfg.data.source == "local" else None,
            "eval.retain_log": cfg.eval.retain_log,
        }
    )


def _decide(out: Path, command: str, cfg: RunConfig, resume: bool) -> str | None:
    """None if the directory may be used; else the error message."""
    check_writable(out, "run.output_dir")
    replaces = cfg.run.overwrite and not resume and read_marker(out) is not None
    check_outputs({"run.output_dir": out}, run_inputs(cfg), replaces=replaces)
    if not out.exists():
        return "resume-missing" if resume else None
    if not out.is_dir():
        return f"run.output_dir '{out}' exists and is a file; choose another run.output_dir"
    busy = lock_problem(out)
    if busy:
        return busy
    if not any(p.name != LOCK_FILE for p in out.iterdir()):
        return None
    if resume:
        return _resume_problem(out, command, cfg)
    marker = read_marker(out)
    if marker is None:
        return _not_a_run(out)
    if not cfg.run.overwrite:
        return (
            f"run.output_dir '{out}' already holds a run; pass --overwrite to replace it, --resume to continue it, "
            "or set run.output_dir=<new dir>"
        )
    foreign = foreign_entry(out, marker["kind"])
    if foreign:
        return (
            f"refusing --overwrite of '{out}': '{foreign}' is not something dsunlearn writes there, and dsunlearn "
            "never deletes what it did not write; move it out, or choose another run.output_dir"
        )
    return None


def on_main(fn) -> None:
    """Run `fn()` on rank 0 (it returns an error message or None, or raises RunError); every rank then raises
    the same RunError, or none does. Then barrier: rank 0's writes are done before anyone goes on."""
    msg = None
    if dist.is_main():
        try:
            msg = fn()
        except RunError as e:
            msg = str(e)
    msg = dist.broadcast_object(msg)
    if msg:
        raise RunError(msg)
    dist.barrier()


def decide(out: Path, command: str, cfg: RunConfig, resume: bool) -> None:
    """Rank 0 decides whether `out` may be used; every rank raises the same RunError if not."""

    def why_not():
        msg = _decide(out, command, cfg, resume)
        return (
            f"cannot --resume: '{out}' does not exist; start the run without --resume"
            if msg == "resume-missing"
            else msg
        )

    on_main(why_not)


def check_output_dir(cfg: RunConfig, command: str, resume: bool = False) -> Path:
    """Refuse (RunError / ConfigError, all ranks) what can be refused before any set-up; writes nothing.

    That is the output dir (another run's, not a run, in use, inside an input, a --resume that cannot
    continue) and, for the training commands, the batch arithmetic (micro x world x accum == global), which
    needs nothing but the config and the world size. Call it before the expensive set-up (data, model), then
    `prepare_output_dir` once that set-up worked, so a bad input never leaves a half-created run directory.
    """
    if command in TRAIN_COMMANDS:
        from dsunlearn.batch_size import resolve_batch

        resolve_batch(cfg.engine, dist.world_size())
    out = Path(cfg.run.output_dir)
    decide(out, command, cfg, resume)
    return out


def clear_owned(out: Path, kind: str) -> None:
    """Remove what a run of `kind` wrote in `out` (callers checked that nothing else is there); keep the lock."""
    for p in out.iterdir():
        if p.name == LOCK_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def claim(out: Path, kind: str, cfg: RunConfig | None, overwrite: bool, resume: bool) -> Path:
    """Rank 0: lock `out` (created if needed), clear an old run on --overwrite, write a fresh marker.

    The lock is taken before anything is removed, so two processes never both replace one directory; the
    decision is re-checked under the lock (the state may have changed since `decide`)."""
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out, kind)
    lock.acquire()  # RunError naming the holder if another process has it
    try:
        old = read_marker(out)
        if overwrite and not resume and old is not None:
            foreign = foreign_entry(out, old["kind"])
            if foreign:
                raise RunError(f"refusing --overwrite of '{out}': '{foreign}' is not something dsunlearn writes there")
            clear_owned(out, old["kind"])
        if not resume:
            atomic_write_json(out / RUN_MARKER, new_marker(cfg, kind))
    except BaseException:
        lock.release()
        raise
    _HELD[out.resolve()] = lock
    return out


def release_output_dir(out: Path) -> None:
    """Drop this process's lock on `out` (end of a run). Safe to call on every rank and more than once."""
    lock = _HELD.pop(Path(out).resolve(), None)
    if lock is not None:
        lock.release()


def prepare_output_dir(cfg: RunConfig, command: str, resume: bool = False) -> Path:
    """Create (or reuse for --resume) the run directory, locked, and write config.yaml + run.json into it.
    Call `check_output_dir` first (before the set-up); the decision is re-made here, then under the lock."""
    out = Path(cfg.run.output_dir)
    decide(out, command, cfg, resume)

    def create():
        claim(out, command, cfg, overwrite=cfg.run.overwrite, resume=resume)
        if not resume:  # a resumed run keeps the record of how it was started (same identity, checked)
            dump_config(cfg, RunDir(out).config)

    on_main(create)
    return out


def run_config(run_dir: str | Path, trust_remote_code: bool = False, overrides: list[str] | None = None) -> RunConfig:
    """The config a finished run was started with (`<run>/config.yaml`), for the offline tools (extrapolate,
    sweep, geffect, attack; `overrides`: the command line's key=value on top). A run directory is untrusted
    input: its config may not switch on remote code (only the command line may: `trust_remote_code`); a missing
    or damaged file is a one-line RunError."""
    from dsunlearn.config_io import load_config
    from dsunlearn.errors import DsUnlearnError

    f = RunDir(run_dir).require_config()
    try:
        cfg = load_config(str(f), overrides)
    except DsUnlearnError as e:
        raise RunError(f"the run's config '{f}' cannot be used: {e}") from None
    if cfg.model.trust_remote_code and not trust_remote_code:
        raise RunError(
            f"the run's config '{f}' sets model.trust_remote_code=true; dsunlearn never runs code named by a run "
            "directory someone else may have written: check the model, then load it with remote code yourself"
        )
    cfg.model.trust_remote_code = trust_remote_code
    return cfg
