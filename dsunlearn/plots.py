"""PNG plots that read without explanation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from dsunlearn.suites.base import Headline


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (legends placed outside the axes included) and close a figure; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_uipe_curve(
    rows: list[dict], selected: float | None, rho: float, path: str | Path, forget: Sequence[Headline],
    utility: Headline,
) -> Path:  # fmt: skip
    """A UIPE sweep (`sweep.json` rows) against alpha: the suite's forget numbers on the left axis (a log axis
    where one spans decades: TOFU's forget quality), its utility number on the right with the rho floor; the
    chosen alpha marked."""
    rows = sorted(rows, key=lambda r: r["alpha"])
    alphas = [r["alpha"] for r in rows]
    log = any(h.log_scale for h in forget)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for h, color, marker in zip(forget, cycle(("tab:red", "tab:orange", "tab:purple")), cycle("o^v")):
        ys = [max(r[h.key], 1e-300) if log else r[h.key] for r in rows]
        way = "higher" if h.higher_is_better else "lower"
        ax.plot(alphas, ys, f"{marker}-", color=color, label=f"{h.label} ({way} is better)")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("UIPE alpha  (theta_o + (1 + alpha) * delta)")
    ax.set_ylabel(", ".join(h.label for h in forget), color="tab:red")
    ax2 = ax.twinx()
    ax2.plot(alphas, [r[utility.key] for r in rows], "s--", color="tab:blue", label=utility.label)
    u0 = next((r[utility.key] for r in rows if r["alpha"] == 0.0), None)
    if u0 is not None:
        ax2.axhline(rho * u0, color="tab:blue", alpha=0.35, lw=1, label=f"utility floor ({rho:g} x alpha=0)")
    ax2.set_ylabel(utility.label, color="tab:blue")
    if selected is not None:
        ax.axvline(selected, color="black", ls=":", lw=1.5, label=f"selected alpha = {selected:g}")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best", fontsize=8)
    ax.set_title("UIPE alpha sweep")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_geffect(result: dict, path: str | Path) -> Path:
    """Offline G-effect of a run (`dsunlearn geffect`): top, e_u and e_r against the checkpoint step; bottom,
    a layer-group x step heatmap of the unlearning G-effect e_u (diverging colormap centred at 0)."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    recs = sorted(result["checkpoints"], key=lambda r: r["step"])
    steps = [r["step"] for r in recs]
    groups = list(result["groups"])
    grid = np.array([r["geffect_u_groups"] for r in recs], dtype=float).T  # [G, S]
    probe = result.get("probe", {})
    fig_h = 3.2 + max(2.2, 0.28 * len(groups))
    fig, (ax, hm) = plt.subplots(
        2, 1, figsize=(max(7.0, 0.45 * len(steps) + 3.0), fig_h), dpi=120,
        gridspec_kw={"height_ratios": [3.0, max(2.2, 0.28 * len(groups))]},
    )  # fmt: skip
    e_u, e_r = [r["geffect_u"] for r in recs], [r["geffect_r"] for r in recs]
    ax.plot(steps, e_u, "o-", color="tab:red", label="e_u: <grad R(D_f), grad L_u>  (forget)")
    ax.plot(steps, e_r, "s-", color="tab:blue", label="e_r: <grad R(D_r), grad L_u>  (retain)")
    ax.axhline(0.0, color="black", lw=0.8, alpha=0.6)
    ax.set_xlabel("unlearning step (checkpoint)")
    ax.set_ylabel("G-effect (raw inner product)")
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(
        f"G-effect of {result.get('objective', '?')} on a fixed probe "
        f"({probe.get('n_forget', '?')} forget + {probe.get('n_retain', '?')} retain items)\n"
        "removal wants e_u < 0, retention wants e_r >= 0",
        fontsize=10,
    )
    lim = float(np.nanmax(np.abs(grid))) if grid.size else 0.0
    lim = lim if lim > 0 else 1.0
    im = hm.imshow(grid, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
    hm.set_xticks(range(len(steps)), [str(s) for s in steps])
    hm.set_yticks(range(len(groups)), groups, fontsize=8 if len(groups) <= 24 else 6)
    hm.set_xlabel("unlearning step (checkpoint)")
    hm.set_ylabel("layer group")
    hm.set_title("unlearning G-effect e_u per layer group (blue < 0: that group's update removes)", fontsize=10)
    if grid.size <= 240:  # small grids: write the values in the cells
        for (g, s), v in np.ndenumerate(grid):
            hm.text(s, g, f"{v:.2g}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * lim else "black")  # fmt: skip
    cb = fig.colorbar(im, ax=hm, pad=0.02)
    cb.set_label("e_u of the group")
    return save_figure(fig, path)


def plot_attack(bars: dict[str, tuple[float | None, float | None]], headline: Headline, title: str,
                path: str | Path) -> Path:  # fmt: skip
    """A headline number before (light) and after (dark) an attack, one pair of bars per model (or run):
    `bars` = {label: (before, after)}, None drawn as no bar; a log axis for a p-value (TOFU's forget quality)."""
    labels = list(bars)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 2), 4.2), dpi=120)
    floor = 1e-300 if headline.log_scale else 0.0
    for i, (b, a) in enumerate(bars.values()):
        for dx, v, alpha, name in ((-0.2, b, 0.45, "before"), (0.2, a, 1.0, "after")):
            if v is not None:
                ax.bar(i + dx, max(v, floor), width=0.38, color="tab:red", alpha=alpha,
                       label=name if i == 0 or name not in ax.get_legend_handles_labels()[1] else None)  # fmt: skip
    if headline.log_scale:
        ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4
                  else "center")  # fmt: skip
    way = "higher" if headline.higher_is_better else "lower"
    ax.set_ylabel(f"{headline.label} ({way} is better)")
    ax.set_title(f"{title}: {headline.label} before and after the attack")
    if ax.get_legend_handles_labels()[0]:  # nothing drawn where the number is missing everywhere
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
