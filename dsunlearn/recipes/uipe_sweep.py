"""`dsunlearn extrapolate --sweep`: evaluate theta(alpha) for several alphas and choose one.

Selection rule (docs/methods.md#uipe; the paper's own text of the rule was not available, this is the form public
reimplementations use): among the swept alphas (alpha = 0, the unlearned model, is always included), the one
with the best forget quality whose model utility is at least rho x MU(theta_u); ties go to the smaller alpha.
Writes `<run>/uipe/sweep.json`, `sweep.md` (table) and `sweep.png` (curve), and each alpha's model + TOFU log
under `<run>/uipe/alpha_<a>/`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

from dsunlearn import dist
from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_write_json, atomic_write_text
from dsunlearn.run_layout import RunDir

MAX_ALPHAS = 32  # each alpha is a full model on disk plus an evaluation


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise RunError(f"--sweep '{text}' is not a comma-separated list of numbers, e.g. --sweep 0,0.5,1,2") from None
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise RunError(f"--sweep '{text[:80]}' needs finite numbers, e.g. --sweep 0,0.5,1,2")
    from dsunlearn.uipe.extrapolate import ALPHA_MAX

    if any(abs(a) > ALPHA_MAX for a in alphas):
        raise RunError(f"--sweep '{text[:80]}': every alpha must lie in [-{ALPHA_MAX:g}, {ALPHA_MAX:g}]")
    if len(set(alphas)) > MAX_ALPHAS:
        raise RunError(
            f"--sweep lists {len(set(alphas))} alphas; each one writes and evaluates a whole model: give at most "
            f"{MAX_ALPHAS} (e.g. --sweep 0.25,0.5,1,2)"
        )
    return sorted(set([0.0] + alphas))


def select_alpha(rows: list[dict], rho: float) -> tuple[float, str]:
    """(alpha, reason) by the rule above."""
    mu0 = next(r["model_utility"] for r in rows if r["alpha"] == 0.0)
    ok = [r for r in rows if r["model_utility"] >= rho * mu0]
    best = max(ok, key=lambda r: (r["forget_quality"], -r["alpha"]))
    why = (
        f"alpha={best['alpha']:g}: best forget quality {best['forget_quality']:.3g} among alphas with model "
        f"utility >= {rho:g} x {mu0:.4f} (alpha=0)"
    )
    return best["alpha"], why


def _table(rows: list[dict], selected: float) -> str:
    lines = ["| alpha | forget quality | model utility | forget ROUGE-L | forget prob |", "|---|---|---|---|---|"]
    for r in rows:
        mark = " **(selected)**" if r["alpha"] == selected else ""
        lines.append(
            f"| {r['alpha']:g}{mark} | {r['forget_quality']:.3g} | {r['model_utility']:.4f} | "
            f"{r['forget_rouge']:.4f} | {r['forget_prob']:.4f} |"
        )
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A sweep's outcome, as `sweep.json` holds it: rows = one {alpha, forget_quality, model_utility,
    forget_rouge, forget_prob, model} per alpha, in increasing alpha."""

    rho: float
    selected_alpha: float
    reason: str
    rows: list[dict]

    def table(self) -> str:
        """The markdown table of `sweep.md`, the selected alpha marked."""
        return _table(self.rows, self.selected_alpha)


def sweep_retain_log(run_dir: Path, retain_log: str | None) -> str:
    """The retain model's TOFU log the sweep compares with: `retain_log`, else the run's eval.retain_log."""
    from dsunlearn.rundir import run_config

    retain_log = retain_log or run_config(run_dir).eval.retain_log
    if not retain_log:
        raise RunError("the sweep selects alpha by forget quality: pass --retain-log (the retain model's TOFU log)")
    return retain_log


def sweep(
    run_dir: Path, original: Path, delta: Path, alphas: list[float], retain_log: str, rho: float = 0.9,
    checkpoint: str | None = None,
) -> SweepResult:  # fmt: skip
    """Evaluate theta(alpha) for each alpha (0 added), select one, write sweep.{json,md,png} into
    `RunDir(run_dir).uipe_root(checkpoint)`. Collective under a launcher."""
    from dsunlearn.plots import plot_uipe_curve
    from dsunlearn.rundir import run_config
    from dsunlearn.suites import get_suite
    from dsunlearn.uipe.extrapolate import extrapolate

    alphas = sorted(set([0.0] + list(alphas)))
    cfg = run_config(run_dir)
    suite = get_suite(cfg.data.suite)
    dist.init_distributed()
    rows = []
    root = RunDir(run_dir).uipe_root(checkpoint)
    for a in alphas:
        out = RunDir(run_dir).uipe_alpha(a, checkpoint)
        if dist.is_main():
            # Always rebuilt from this sweep's delta: a directory left by an earlier (or interrupted) sweep, of
            # another checkpoint, or planted in the run, is never evaluated in its place.
            if out.is_symlink() or out.is_file():
                raise RunError(f"'{out}' is not a directory this sweep wrote; remove it and sweep again")
            if out.is_dir():
                shutil.rmtree(out)
            extrapolate(original, delta, a, out)
        dist.barrier()
        # The eval of a derived model is recomputed on every sweep (files replaced atomically).
        summary = suite.write_eval(out, suite.evaluate_saved(out, cfg), retain_log)
        rows.append(
            {
                "alpha": a,
                "forget_quality": summary["forget_quality"],
                "model_utility": summary["model_utility"],
                "forget_rouge": summary["forget_rouge"],
                "forget_prob": summary["forget_prob"],
                "model": str(out),
            }
        )
    selected, why = select_alpha(rows, rho)
    result = SweepResult(rho=rho, selected_alpha=selected, reason=why, rows=rows)
    if dist.is_main():
        atomic_write_json(root / "sweep.json", dataclasses.asdict(result))
        atomic_write_text(root / "sweep.md", result.table() + f"\nSelected {why}.\n")
        plot_uipe_curve(rows, selected, rho, root / "sweep.png")
    return result
