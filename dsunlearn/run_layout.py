"""Where each file of a run directory lives: the one place that names them.

    <run>/run.json            the marker dsunlearn wrote (rundir.py: what a run is)
    <run>/.dsunlearn.lock     held by the process using the run (runlock.py)
    <run>/config.yaml         the config the run was started with
    <run>/events.jsonl        the event log (tracking.py)
    <run>/model/              unlearn: the unlearned model (consolidated safetensors + tokenizer)
    <run>/adapter/            unlearn with model.adapter: the trained adapter in peft's format
    <run>/delta/              unlearn: the final UIPE delta shards (uipe/delta_format.py)
    <run>/eval/               TOFU logs and summary of the run's model
    <run>/checkpoints/LATEST  names the newest complete checkpoint
    <run>/checkpoints/stepNNNNNN/   one checkpoint (engine/checkpoint.py), with its own delta/
    <run>/uipe/, geffect/, plots/   the offline tools' outputs
    <run>/attacks/<name>/     `dsunlearn attack`: one attack on the run's model (recipes/attack.py)
    <run>/{base,full,retain}/model/, finetune.json      finetune
    <run>/finetune/, runs/<name>/, summary.json, report.md, attacks.md   demo (its runs are runs themselves)

Nothing here imports torch: the refusals that read a run directory (`--resume`, `extrapolate`, `geffect`) run
before the heavy imports. Checkpoint tags read from disk are untrusted: `checkpoint_dir` validates them.
"""

from __future__ import annotations

import re
from pathlib import Path

from dsunlearn.errors import RunError
from dsunlearn.runlock import LOCK_FILE

RUN_MARKER = "run.json"
CONFIG = "config.yaml"
EVENTS = "events.jsonl"
MODEL = "model"
ADAPTER = "adapter"
DELTA = "delta"
EVAL = "eval"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
STAGING = ".staging"
UIPE = "uipe"
GEFFECT = "geffect"
PLOTS = "plots"
ATTACKS = "attacks"
WANDB = "wandb"
FINETUNE_BASE = "base"
FINETUNE_TARGETS = ("full", "retain")  # config.run.finetune_targets' choices, each <target>/model
FINETUNE_SUMMARY = "finetune.json"
DEMO_FINETUNE, DEMO_RUNS, DEMO_SUMMARY, DEMO_REPORT = "finetune", "runs", "summary.json", "report.md"
DEMO_ATTACKS = "attacks.md"  # demo: the robustness section's recovery table (recipes/demo_attacks.py)

_COMMON = {RUN_MARKER, LOCK_FILE, CONFIG, EVENTS, WANDB}
# The top-level entries each kind of run writes (rundir.py: --overwrite removes these and nothing else).
OWNED = {
    "unlearn": _COMMON | {CHECKPOINTS, MODEL, ADAPTER, DELTA, EVAL, UIPE, GEFFECT, PLOTS, ATTACKS},
    "finetune": _COMMON | {FINETUNE_BASE, *FINETUNE_TARGETS, FINETUNE_SUMMARY},
    "demo": _COMMON | {DEMO_FINETUNE, DEMO_RUNS, PLOTS, DEMO_SUMMARY, DEMO_REPORT, DEMO_ATTACKS},
}

TAG_RE = re.compile(r"step(\d{6}|[1-9]\d{6,11})")  # exactly what tag_of writes: one tag per step


def tag_of(step: int) -> str:
    """The checkpoint tag of `step` optimizer steps done: `step000012`."""
    return f"step{step:06d}"


def extra_name(rank: int) -> str:
    """A checkpoint's resume state file of one rank."""
    return f"extra_rank{rank}.safetensors"


class RunDir:
    """The layout of one run directory `root` (paths only: nothing is read or created here)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    marker = property(lambda self: self.root / RUN_MARKER)
    lock = property(lambda self: self.root / LOCK_FILE)
    config = property(lambda self: self.root / CONFIG)
    events = property(lambda self: self.root / EVENTS)
    model = property(lambda self: self.root / MODEL)
    adapter = property(lambda self: self.root / ADAPTER)
    delta = property(lambda self: self.root / DELTA)
    delta_staging = property(lambda self: self.root / f".{DELTA}.tmp")
    eval = property(lambda self: self.root / EVAL)
    checkpoints = property(lambda self: self.root / CHECKPOINTS)
    latest_file = property(lambda self: self.root / CHECKPOINTS / LATEST)
    staging = property(lambda self: self.root / CHECKPOINTS / STAGING)
    uipe = property(lambda self: self.root / UIPE)
    geffect = property(lambda self: self.root / GEFFECT)
    plots = property(lambda self: self.root / PLOTS)
    attacks = property(lambda self: self.root / ATTACKS)
    finetune_summary = property(lambda self: self.root / FINETUNE_SUMMARY)
    demo_finetune = property(lambda self: RunDir(self.root / DEMO_FINETUNE))
    demo_summary = property(lambda self: self.root / DEMO_SUMMARY)
    demo_report = property(lambda self: self.root / DEMO_REPORT)

    def checkpoint(self, tag: str) -> Path:
        """`checkpoints/<tag>` (not validated: for tags this process made; `checkpoint_dir` for read ones)."""
        return self.checkpoints / tag

    def checkpoint_delta(self, tag: str) -> Path:
        return self.checkpoints / tag / DELTA

    def finetuned_model(self, target: str) -> Path:
        """finetune: `<target>/model` (target = base, full or retain)."""
        return self.root / target / MODEL

    def demo_run(self, name: str) -> RunDir:
        """demo: the unlearning run `runs/<name>`."""
        return RunDir(self.root / DEMO_RUNS / name)

    def uipe_alpha(self, alpha: float, checkpoint: str | None = None) -> Path:
        """`uipe/[<checkpoint>/]alpha_<a>`: theta(alpha) written by `extrapolate`."""
        return self.uipe_root(checkpoint) / f"alpha_{alpha:g}"

    def uipe_root(self, checkpoint: str | None = None) -> Path:
        """Where a sweep writes: `uipe/` for the final delta, `uipe/<tag>/` for a checkpoint's."""
        return self.uipe / checkpoint if checkpoint else self.uipe

    def attack(self, name: str) -> Path:
        """`attacks/<name>`: one attack's outputs (names checked by recipes/attack_spec.py)."""
        return self.attacks / name

    def require_config(self) -> Path:
        """`config.yaml`, or the one-line RunError that `root` is not a run directory."""
        if not self.config.is_file():
            raise RunError(f"'{self.root}' is not a dsunlearn run directory (no {CONFIG}); pass a run directory")
        return self.config

    def checkpoint_dir(self, tag: str, where: str) -> Path:
        """`checkpoints/<tag>` if `tag` is one of this run's tags and resolves inside checkpoints/; else
        RunError naming `where` the tag came from."""
        root = self.checkpoints.resolve()
        shown = tag[:40] + ("..." if len(tag) > 40 else "")
        if not TAG_RE.fullmatch(tag):
            raise RunError(
                f"{where} names checkpoint {shown!r}, which is not a dsunlearn checkpoint tag (step + digits, e.g. "
                f"step000012); dsunlearn only loads its own checkpoints inside '{root}': fix or delete {where}"
            )
        path = root / tag
        if path.is_symlink() or not path.resolve().is_relative_to(root) or not path.is_dir():
            raise RunError(f"{where} names checkpoint '{tag}', which is not a directory inside '{root}'; fix {where}")
        return path

    def latest_tag(self) -> str | None:
        """The tag in checkpoints/LATEST (validated), or None when there is no LATEST."""
        f = self.latest_file
        if not f.is_file():
            return None
        try:
            tag = f.read_bytes()[:64].decode("ascii").strip()
        except UnicodeDecodeError:
            tag = "<not text>"
        self.checkpoint_dir(tag, f"'{f}'")
        return tag

    def saved_tags(self) -> list[str]:
        """This run's checkpoint tags on disk, oldest first (directories inside checkpoints/, no links)."""
        root = self.checkpoints
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if TAG_RE.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
