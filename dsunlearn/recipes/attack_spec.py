"""What `dsunlearn attack` does to a finished unlearning run, and where it may write: the spec and its checks.

Torch-free, so a refused attack (not a run, bad bits, an existing attack directory) answers in a second with one
line (exit 2), before any model is loaded. The attacks themselves: `attack.py` (quantization, evaluation,
table, recovery) and `relearn.py` (fine-tuning on a relearning set).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from dsunlearn.errors import RunError
from dsunlearn.path_guard import check_no_links, check_outputs, check_writable, local_inputs
from dsunlearn.run_layout import RunDir

QUANTIZE, RELEARN = "quantize", "relearn"
BITS = {"int4": 4, "int8": 8}
DEFAULT_FRACTION, DEFAULT_EPOCHS = 0.5, 2.0
MAX_RELEARN_STEPS = 100_000
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One attack. quantize: `bits`, `group_size`, `symmetric`, `include_embeddings`. relearn: `fraction` of the
    forget set (seeded by `seed`) or another forget split `split`, for `steps` optimizer steps (else `epochs`
    over the relearning set) at `lr` (None: the run's engine.lr). `retain_model`: the retrained model, attacked
    alike as a reference (the target, the run's model.name_or_path, always is)."""

    kind: str
    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    include_embeddings: bool = False
    fraction: float = DEFAULT_FRACTION
    split: str | None = None
    steps: int | None = None
    epochs: float = DEFAULT_EPOCHS
    lr: float | None = None
    seed: int = 0
    retain_model: str | None = None
    save_model: bool = False
    name: str | None = None

    def default_name(self) -> str:
        """`int4_g128_sym` / `relearn_f0.5_e2` / `relearn_forget05_s10`: what `attacks/<name>/` is called."""
        if self.kind == QUANTIZE:
            return f"int{self.bits}_g{self.group_size}_{'sym' if self.symmetric else 'asym'}" + (
                "_emb" if self.include_embeddings else ""
            )
        what = self.split if self.split else f"f{self.fraction:g}"
        return f"relearn_{what}_" + (f"s{self.steps}" if self.steps else f"e{self.epochs:g}")

    @property
    def dir_name(self) -> str:
        return self.name or self.default_name()


def check_spec(spec: AttackSpec) -> None:
    """RunError (one line, the flag named) for a setting out of bounds."""
    from dsunlearn.models.quantize import GROUP_SIZE_MAX

    if spec.kind not in (QUANTIZE, RELEARN):
        raise RunError(f"unknown attack {spec.kind!r}: --quantize int4|int8 or --relearn")
    if spec.kind == QUANTIZE and spec.bits not in BITS.values():
        raise RunError(f"--quantize {spec.bits}: give int4 or int8")
    if not 1 <= spec.group_size <= GROUP_SIZE_MAX:
        raise RunError(f"--group-size {spec.group_size} is out of bounds: give 1..{GROUP_SIZE_MAX} (default 128)")
    if not (math.isfinite(spec.fraction) and 0.0 < spec.fraction <= 1.0):
        raise RunError(f"--relearn-fraction {spec.fraction} is out of bounds: the share of the forget set, in (0, 1]")
    if spec.steps is not None and not 1 <= spec.steps <= MAX_RELEARN_STEPS:
        raise RunError(f"--relearn-steps {spec.steps} is out of bounds: give 1..{MAX_RELEARN_STEPS}")
    if not (math.isfinite(spec.epochs) and 0.0 < spec.epochs <= 100.0):
        raise RunError(f"--relearn-epochs {spec.epochs} is out of bounds: give a number in (0, 100]")
    if spec.lr is not None and not (math.isfinite(spec.lr) and 0.0 < spec.lr <= 1.0):
        raise RunError(f"--relearn-lr {spec.lr} is out of bounds: give a learning rate in (0, 1]")
    if not 0 <= spec.seed < 2**32:
        raise RunError(f"--seed {spec.seed} is out of bounds: give 0..{2**32 - 1}")
    name = spec.dir_name
    if not (0 < len(name) <= 80 and set(name) <= NAME_CHARS and not name.startswith(".")):
        raise RunError(
            f"--name {name[:40]!r}: an attack's directory name is 1-80 of a-z 0-9 _ . - (not starting with '.')"
        )


@dataclasses.dataclass(frozen=True)
class AttackTarget:
    """The run an attack reads and where it writes: the run's model, its references, `attacks/<name>/`."""

    run: RunDir
    model: Path
    target_model: str  # the run's model.name_or_path (the model unlearning started from)
    out: Path

    @property
    def staging(self) -> Path:
        return self.out.parent / f".{self.out.name}.tmp"


def check_target(run_dir: str | Path, spec: AttackSpec, overwrite: bool) -> AttackTarget:
    """RunError (one line) unless `run_dir` is a finished unlearning run with a model, the attack directory is
    new (or `overwrite`), writable, reached through no link and inside no input."""
    from dsunlearn.rundir import read_marker, run_config

    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise RunError(f"--run '{run.root}' does not exist; pass the directory of a finished `dsunlearn unlearn` run")
    marker = read_marker(run.root)
    if marker is None or marker["kind"] != "unlearn":
        what = "no dsunlearn run marker" if marker is None else f"a '{marker['kind']}' run"
        raise RunError(
            f"--run '{run.root}' is not an unlearning run ({what}); attacks read the output of `dsunlearn unlearn`"
        )
    cfg = run_config(run.root)
    model = run.model
    if not model.is_dir() or model.is_symlink():
        if cfg.model.adapter.type != "none" and not cfg.model.adapter.save_merged:
            raise RunError(
                f"--run '{run.root}' is a {cfg.model.adapter.type} adapter run saved as the adapter alone "
                "(model.adapter.save_merged=false) and attacks read the merged model/: rerun it with "
                "model.adapter.save_merged=true"
            )
        raise RunError(f"--run '{run.root}' has no model/ (a real directory): the run did not finish; rerun it")
    out = run.attack(spec.dir_name)
    for p, label in ((run.attacks, "the attacks directory"), (out, "the attack's output")):
        check_writable(p, label)
        check_no_links(run.root, p, label)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise RunError(f"'{out}' already holds this attack; pass --overwrite to replace it, or --name another")
        if out.is_symlink() or not (out / "attack.json").is_file():
            raise RunError(f"'{out}' is not a directory `dsunlearn attack` wrote; dsunlearn never deletes it")
    inputs = local_inputs({"the run's model/": str(model), "model.name_or_path": cfg.model.name_or_path,
                           "--retain-model": spec.retain_model, "eval.retain_log": cfg.eval.retain_log})  # fmt: skip
    check_outputs({"the attack's output": out}, {k: v for k, v in inputs.items() if k != "the run's model/"})
    if spec.retain_model is not None and not Path(spec.retain_model).is_dir():
        raise RunError(f"--retain-model '{spec.retain_model}' is not a directory; pass the retrained model's dir")
    return AttackTarget(run, model, cfg.model.name_or_path, out)
