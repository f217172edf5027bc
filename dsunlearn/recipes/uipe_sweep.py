"""`dsunlearn extrapolate --sweep`: evaluate theta(alpha) for several alphas and choose one.

Selection rule (docs/methods.md#uipe; the paper's own text of the rule was not available, this is the form public
reimplementations use), read from the run suite's headline roles (`Headline.role`): among the swept alphas
(alpha = 0, the unlearned model, is always included) keep those whose UTILITY number is at least
rho x its value at alpha = 0, and take the one with the best FORGET numbers, compared in declaration order
(the first decides, the next breaks its ties, ...); remaining ties go to the smaller alpha.

    TOFU: max forget_quality           s.t. model_utility(alpha) >= rho * model_utility(0)
    MUSE: min (verbmem_f, knowmem_f)   s.t. knowmem_r(alpha)     >= rho * knowmem_r(0)   (lexicographic)

A selection number missing from an alpha's summary (TOFU's forget quality without the retain model's log) or
not finite stops the sweep with one line. Writes `<run>/uipe/sweep.json`, `sweep.md` (table) and `sweep.png`
(curve), and each alpha's model + suite log under `<run>/uipe/alpha_<a>/`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsunlearn import dist
from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_write_json, atomic_write_text
from dsunlearn.run_layout import RunDir
from dsunlearn.suites.base import FORGET, UTILITY, Headline, Suite

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


def selection_numbers(headline: Sequence[Headline]) -> tuple[tuple[Headline, ...], Headline]:
    """(forget numbers in priority order, the utility number) of a suite's `HEADLINE`; ValueError where the
    declaration has no forget number or not exactly one higher-is-better utility (a suite's bug)."""
    forget = tuple(h for h in headline if h.role == FORGET)
    utility = [h for h in headline if h.role == UTILITY]
    if not forget or len(utility) != 1 or not utility[0].higher_is_better:
        raise ValueError(
            f"a suite's HEADLINE needs >= 1 role={FORGET!r} and exactly one higher-is-better role={UTILITY!r} "
            f"number for UIPE's sweep; got {[(h.key, h.role) for h in headline]}"
        )
    return forget, utility[0]


def sweep_row(alpha: float, summary: Mapping[str, float], suite: Suite, model: str) -> dict:
    """One row of `sweep.json`: {alpha, the suite's headline keys, its SWEEP_DETAILS keys (None where the
    summary lacks one), model}. RunError (one line) where a number the rule selects by is missing or not
    finite: every alpha is evaluated alike, so the first alpha already tells."""
    row: dict = {"alpha": alpha}
    for h in suite.HEADLINE:
        v = summary.get(h.key)
        if h.role is not None and v is None:
            fix = (
                "pass --retain-log (the retain model's eval log, from `dsunlearn eval --model <retain model>`) "
                "or set eval.retain_log in the run's config"
                if h.needs_retain_log
                else "its evaluation settings (the run's config.yaml) must produce it"
            )
            raise RunError(
                f"alpha={alpha:g}: the {suite.NAME} summary of '{model}' has no {h.key} ({h.label}), which the "
                f"sweep selects alpha by; {fix}"
            )
        if h.role is not None and not math.isfinite(v):
            raise RunError(
                f"alpha={alpha:g}: {h.label} ({h.key}) of '{model}' is {v}, not a finite number; the "
                "extrapolated model breaks down there: sweep smaller alphas"
            )
        row[h.key] = v
    row.update({key: summary.get(key) for key, _ in suite.SWEEP_DETAILS})
    row["model"] = model
    return row


def select_alpha(rows: list[dict], rho: float, headline: Sequence[Headline]) -> tuple[float, str]:
    """(alpha, reason) by the rule above; `rows` as `sweep_row` makes them, one with alpha 0.

    kept = {r : r[u] >= rho * r0[u]},  best = argmax_{r in kept} (s_1 r[f_1], s_2 r[f_2], ..., -alpha)
    with u the utility key, f_i the forget keys and s_i = +1 (higher is better) or -1 (lower is better).
    """
    forget, util = selection_numbers(headline)
    u0 = next(r[util.key] for r in rows if r["alpha"] == 0.0)
    ok = [r for r in rows if r[util.key] >= rho * u0]
    best = max(ok, key=lambda r: (*(r[h.key] if h.higher_is_better else -r[h.key] for h in forget), -r["alpha"]))

    def way(h: Headline) -> str:
        return f"{'highest' if h.higher_is_better else 'lowest'} {h.label}"

    ties = "".join(f" (ties: {way(h)}, here {best[h.key]:{h.fmt}})" for h in forget[1:])
    why = (
        f"alpha={best['alpha']:g}: {way(forget[0])} {best[forget[0].key]:{forget[0].fmt}}{ties} among alphas with "
        f"{util.label} >= {rho:g} x {u0:{util.fmt}} (alpha=0)"
    )
    return best["alpha"], why


def _table(rows: list[dict], selected: float, suite: Suite) -> str:
    cols = [(h.key, h.label, h.fmt) for h in suite.HEADLINE] + [(k, label, ".4f") for k, label in suite.SWEEP_DETAILS]
    lines = ["| alpha | " + " | ".join(label for _, label, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        mark = " **(selected)**" if r["alpha"] == selected else ""
        cells = ["-" if r.get(k) is None else f"{r[k]:{fmt}}" for k, _, fmt in cols]
        lines.append(f"| {r['alpha']:g}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A sweep's outcome, as `sweep.json` holds it: rows = one `sweep_row` per alpha, in increasing alpha (TOFU:
    {alpha, forget_quality, model_utility, forget_rouge, forget_prob, model}); `suite` names whose keys."""

    rho: float
    selected_alpha: float
    reason: str
    rows: list[dict]
    suite: str = "tofu"

    def table(self) -> str:
        """The markdown table of `sweep.md`, the selected alpha marked."""
        from dsunlearn.suites import get_suite

        return _table(self.rows, self.selected_alpha, get_suite(self.suite))


def sweep_retain_log(run_dir: Path, retain_log: str | None) -> Any:
    """The retain (retrained) model's log the sweep's evaluations compare with, loaded and checked by the run
    suite's `check_retain_log` before anything is extrapolated: `retain_log` (--retain-log), else the run's
    eval.retain_log. None where neither is given and no selection number needs one (MUSE: the log only gives
    PrivLeak's reference); RunError (one line) where one does (TOFU's forget quality)."""
    from dsunlearn.rundir import run_config
    from dsunlearn.suites import get_suite

    cfg = run_config(run_dir)
    suite = get_suite(cfg.data.suite)
    path = retain_log or cfg.eval.retain_log
    if path:
        return suite.check_retain_log(path, cfg, "--retain-log" if retain_log else "eval.retain_log")
    needs = [h for h in suite.HEADLINE if h.role is not None and h.needs_retain_log]
    if needs:
        raise RunError(
            f"the sweep selects alpha by {needs[0].label} ({needs[0].key}), which needs the retain model's "
            f"{suite.NAME} log: pass --retain-log (from `dsunlearn eval --model <retain model>`) or set "
            "eval.retain_log in the run's config"
        )
    return None


def sweep(
    run_dir: Path, original: Path, delta: Path, alphas: list[float], retain_log: Any = None, rho: float = 0.9,
    checkpoint: str | None = None,
) -> SweepResult:  # fmt: skip
    """Evaluate theta(alpha) for each alpha (0 added) with the run's suite (`retain_log`: a log or a path, as the
    suite's `write_eval` takes it; `sweep_retain_log` gives it), select one, write sweep.{json,md,png} into
    `RunDir(run_dir).uipe_root(checkpoint)`. Collective under a launcher."""
    from dsunlearn.plots import plot_uipe_curve
    from dsunlearn.rundir import run_config
    from dsunlearn.suites import get_suite
    from dsunlearn.uipe.extrapolate import extrapolate

    alphas = sorted(set([0.0] + list(alphas)))
    cfg = run_config(run_dir)
    suite = get_suite(cfg.data.suite)
    selection_numbers(suite.HEADLINE)  # a suite without a sweep rule fails before the first model is written
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
        rows.append(sweep_row(a, summary, suite, str(out)))
    selected, why = select_alpha(rows, rho, suite.HEADLINE)
    result = SweepResult(rho=rho, selected_alpha=selected, reason=why, rows=rows, suite=suite.NAME)
    if dist.is_main():
        atomic_write_json(root / "sweep.json", dataclasses.asdict(result))
        atomic_write_text(root / "sweep.md", result.table() + f"\nSelected {why}.\n")
        forget, utility = selection_numbers(suite.HEADLINE)
        plot_uipe_curve(rows, selected, rho, root / "sweep.png", forget, utility)
    return result
