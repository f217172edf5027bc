"""`dsunlearn extrapolate`: UIPE's theta_o + (1 + alpha) * delta from a finished unlearning run, one alpha at a time
(the sweep over alphas is `uipe_sweep.py`).

A run directory is untrusted input: its config names theta_o (unless the caller passes it), its delta is the
final `delta/` or a validated checkpoint's; the outputs go into no input and through no link out of the run.
Everything here is checked before torch is imported, so a refused extrapolation answers in a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dsunlearn.errors import RunError
from dsunlearn.path_guard import check_no_links, check_outputs, check_writable
from dsunlearn.run_layout import DELTA, RunDir


@dataclasses.dataclass(frozen=True)
class RunDelta:
    """What an extrapolation reads: the run, theta_o's model directory and one delta directory of the run."""

    run: RunDir
    original: Path
    delta: Path

    def inputs(self) -> dict[str, Path]:
        """The inputs no output may go into, named as the user gave them."""
        return {"--original": self.original, "the run's delta shards": self.delta}


def run_delta(run_dir: Path, original: str | Path | None = None, checkpoint: str | None = None) -> RunDelta:
    """The run's theta_o (`original`, else its config's model.name_or_path) and delta (`checkpoint`'s, else the
    final one); one-line RunErrors for what is not there."""
    from dsunlearn.rundir import run_config

    run = RunDir(run_dir)
    cfg = run_config(run.root)  # also refuses a missing/damaged config.yaml in one line
    delta = run.checkpoint_dir(checkpoint, "--checkpoint") / DELTA if checkpoint else run.delta
    if not delta.is_dir() or delta.is_symlink():
        raise RunError(f"'{run.root}' has no delta shards at '{delta}': it is not a finished dsunlearn unlearn run")
    if original is None:
        from dsunlearn.models.load import local_model_dir

        original = str(local_model_dir(cfg.model.name_or_path))
    return RunDelta(run, Path(original), delta)


def extrapolate_one(src: RunDelta, alpha: float, output_dir: Path | None = None) -> Path:
    """Write theta(alpha) to `output_dir` (default `<run>/uipe/alpha_<a>`); returns where it went."""
    out = output_dir if output_dir is not None else src.run.uipe_alpha(alpha)
    check_writable(out, "--output-dir")
    check_no_links(src.run.root, out, "--output-dir")
    check_outputs({"--output-dir": out}, src.inputs())
    from dsunlearn.uipe.extrapolate import extrapolate  # torch: after the checks

    extrapolate(src.original, src.delta, alpha, out)
    return out


def sweep_output(src: RunDelta, checkpoint: str | None = None) -> Path:
    """Where a sweep of `src` writes (`<run>/uipe`, `<run>/uipe/<checkpoint>`), checked like any output."""
    root = src.run.uipe_root(checkpoint)
    check_writable(root, "the sweep's output")
    check_no_links(src.run.root, root, "the sweep's output")
    check_outputs({"the sweep's output": root}, src.inputs())
    return root
