"""Resumable checkpoints of an unlearning run, written so that a crash never costs the last good one, and read
so that a run directory from someone else can never run code or silently load damaged state.

Layout: `<out>/checkpoints/step000012/` = DeepSpeed's own state (module, per-rank optimizer shards, scheduler),
`extra_rank{r}.safetensors` (torch RNG state and GRU's EMA shard of that rank as tensors; step, world size
and GRU's c as JSON metadata), `delta/rank{r}.safetensors` (UIPE deltas) and `MANIFEST.json` (size and
sha256 of every file, `dsunlearn/manifest.py`); `<out>/checkpoints/LATEST` names the newest complete one.

Atomicity: everything is written under `checkpoints/.staging/<tag>`, hashed into the manifest, then rank 0
renames the directory into place (atomic) and rewrites LATEST (atomic). A crash during a save leaves the
previous checkpoint and LATEST untouched; the staging leftovers are cleared by the next save.

Reading (untrusted input): LATEST must name a tag of this run's own form (`step` + 6 or more digits) that is a
directory directly inside `checkpoints/` (no absolute paths, `..` or symlinks out); every file is checked
against the manifest before use; DeepSpeed's pickled state is read with `torch.load(weights_only=True)` only
(`engine/safe_checkpoint.py`); dsunlearn's own state is safetensors + JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dsunlearn import dist
from dsunlearn.engine.delta import save_delta_shard
from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_replace_dir, atomic_write_bytes, atomic_write_text
from dsunlearn.manifest import verify_manifest, write_manifest
from dsunlearn.run_layout import (
    DELTA,
    LATEST,
    TAG_RE,
    RunDir,
    extra_name,
    tag_of,
)

if TYPE_CHECKING:
    from dsunlearn.engine.unlearn_engine import UnlearnEngine
    from dsunlearn.geometry.gru import GRU

EXTRA_KEY = "dsunlearn_resume"


def _maybe_fault(where: str, step: int) -> None:
    """Test-only fault injection: DSUNLEARN_TEST_KILL="<where>:<rank>:<step>" SIGKILLs that rank there."""
    spec = os.environ.get("DSUNLEARN_TEST_KILL", "")
    if spec and spec == f"{where}:{dist.rank()}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class RunState:
    """What a checkpoint of an unlearning run holds, as the run holds it (`UnlearnRun.state`).

    DeepSpeed's engine (module, this rank's optimizer shard, scheduler), GRU's EMA shard of this rank (None
    without GRU) and the UIPE base: this rank's fp32 fragments of theta_o and the hash of the model they came
    from (every checkpoint writes the delta theta_t - theta_o beside DeepSpeed's state)."""

    engine: UnlearnEngine
    gru: GRU | None
    original_fragments: dict  # name -> (fp32 fragment [k], start in the flattened parameter), `snapshot_fragments`
    original_hash: str


@dataclass
class RankState:
    """This rank's resume state beside DeepSpeed's, `extra_rank{r}.safetensors`: tensors in safetensors, the
    rest as JSON metadata under EXTRA_KEY (no pickle)."""

    step: int  # optimizer steps done
    world_size: int
    rng: torch.Tensor  # torch.get_rng_state(), uint8 [n]
    gru_c: float | None = None  # None without GRU
    gru_ema: torch.Tensor | None = None  # [P/N] float32, this rank's EMA shard; None before GRU's first update

    @classmethod
    def capture(cls, gru: GRU | None, step: int) -> RankState:
        """The state of this process now: its torch RNG and GRU."""
        gru_state = gru.state_dict() if gru else None
        ema = None if gru_state is None or gru_state["ema"] is None else gru_state["ema"].contiguous()
        c = None if gru_state is None else gru_state["c"]
        return cls(step=step, world_size=dist.world_size(), rng=torch.get_rng_state(), gru_c=c, gru_ema=ema)

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {"rng": self.rng}
        if self.gru_ema is not None:
            tensors["gru_ema"] = self.gru_ema
        meta = {"step": self.step, "world_size": self.world_size, "gru_c": self.gru_c}
        return save(tensors, metadata={EXTRA_KEY: json.dumps(meta)})

    @classmethod
    def read(cls, path: Path) -> RankState:
        """The state in `path`; RunError if it is not one (untrusted input: safetensors + JSON only)."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})[EXTRA_KEY])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            if not (isinstance(meta.get("step"), int) and isinstance(meta.get("world_size"), int) and "rng" in tensors):
                raise ValueError("incomplete resume state")
            c = None if meta.get("gru_c") is None else float(meta["gru_c"])
        except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise RunError(
                f"cannot read '{path}' ({type(e).__name__}): it is not a dsunlearn resume state or it is damaged; "
                "resume from another checkpoint or start the run again"
            ) from None
        return cls(meta["step"], meta["world_size"], tensors["rng"], c, tensors.get("gru_ema"))

    def restore(self, gru: GRU | None) -> None:
        """Put the RNG and GRU's state back into this process."""
        torch.set_rng_state(self.rng)
        if gru is not None and self.gru_c is not None:
            gru.load_state_dict({"c": self.gru_c, "ema": self.gru_ema})


def save_checkpoint(state: RunState, out: Path, step: int, keep: int = 2) -> Path:
    """Collective: every rank writes its parts; rank 0 publishes. `step` = optimizer steps done."""
    root = RunDir(out).checkpoints
    tag = tag_of(step)
    staging = RunDir(out).staging
    if dist.is_main():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    dist.barrier()
    engine = state.engine.deepspeed
    engine.save_checkpoint(str(staging), tag=tag, client_state={"dsunlearn_step": step}, save_latest=False)
    atomic_write_bytes(staging / tag / extra_name(dist.rank()), RankState.capture(state.gru, step).to_bytes())
    delta_dir = staging / tag / DELTA
    delta_dir.mkdir(parents=True, exist_ok=True)
    save_delta_shard(engine, state.engine.named, state.original_fragments, delta_dir, state.original_hash)
    _maybe_fault("save", step)
    dist.barrier()
    write_manifest(staging / tag)
    if dist.is_main():
        final = root / tag
        if final.exists():
            shutil.rmtree(final)
        atomic_replace_dir(staging / tag, final)
        atomic_write_text(root / LATEST, tag + "\n")
        shutil.rmtree(staging, ignore_errors=True)
        done = sorted(p for p in root.iterdir() if p.is_dir() and TAG_RE.fullmatch(p.name))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return root / tag


def check_resume_state(out: Path) -> tuple[str, RankState]:
    """Collective, before any set-up: (tag, this rank's resume state) of the newest complete
    checkpoint, with LATEST validated, every file checked against the manifest, every DeepSpeed file's pickle
    scanned (nothing outside the allow-list) and every rank's resume state read. Every rank raises the same
    RunError if anything is wrong, so a bad checkpoint costs seconds, not a model load."""
    from dsunlearn.engine.safe_checkpoint import precheck_checkpoint

    problem = None
    try:
        tag = RunDir(out).latest_tag() if dist.is_main() else None
        if dist.is_main() and tag is None:
            raise RunError(f"cannot --resume: '{out}' has no complete checkpoint (checkpoints/{LATEST} missing)")
    except RunError as e:
        problem = f"cannot --resume: {e}" if not str(e).startswith("cannot --resume") else str(e)
    tag, problem = dist.broadcast_object((tag if problem is None else None, problem))
    if problem:
        raise RunError(problem)
    root = RunDir(out).checkpoints
    verify_manifest(root / tag)
    extra_file = root / tag / extra_name(dist.rank())
    rank_state, problem = None, None
    try:  # every rank its own file: agree on the outcome, or one rank would wait in a collective for ever
        if not extra_file.is_file():
            raise RunError(f"cannot --resume: '{extra_file}' is missing: resume with the world size the run used")
        rank_state = RankState.read(extra_file)
        if rank_state.world_size != dist.world_size():
            raise RunError(
                f"cannot --resume '{out}' on {dist.world_size()} processes: it was checkpointed on "
                f"{rank_state.world_size} (optimizer and GRU state are sharded per rank); relaunch with the same "
                "number of processes"
            )
    except RunError as e:
        problem = str(e)
    problem = next((m for m in dist.all_gather_object(problem) if m), None)
    if problem:
        raise RunError(problem)
    precheck_checkpoint(root / tag)
    return tag, rank_state


def load_checkpoint(state: RunState, out: Path, checked: tuple[str, RankState] | None = None) -> int:
    """Restore the newest complete checkpoint into `state`; returns the number of steps already done.

    `checked` is what `check_resume_state(out)` returned when the caller checked before its set-up (the files
    are not hashed twice); None checks now. DeepSpeed's files are read through the safe loader either way."""
    from dsunlearn.engine.safe_checkpoint import install_safe_loader

    tag, rank_state = checked if checked is not None else check_resume_state(out)
    root = RunDir(out).checkpoints
    engine = state.engine.deepspeed
    install_safe_loader(engine)
    path, client = engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None or not isinstance(client, dict) or not isinstance(client.get("dsunlearn_step"), int):
        raise RunError(f"DeepSpeed could not load checkpoint '{root / tag}'; resume from another one or start again")
    rank_state.restore(state.gru)
    return int(client["dsunlearn_step"])
