"""GRU: gradient rectified unlearning (arXiv 2503.09117), on gradient shards.

Once per optimizer step, after accumulation, with g the gradient to rectify and g_r the gradient that feeds the
EMA (both chosen by the step's plan: `geometry.gru_project`, `geometry.gru_ema_from`, docs/methods.md):

    G_r(t) = c * g_r(t) + (1 - c) * G_r(t-1),   G_r(0) = 0,  c = 0.8 (the code's `moving_avg`)
    if <g, G_r> < 0:  g <- g - k * G_r,  k = <g, G_r> / ||G_r||^2                     (else unchanged)

With a cosine clip kappa in [-1, 0) (`geometry.gru_cos_clip`; the GRU code's `cos_clip`, kappa = -0.5), the
cosine in k = cos(g, G_r) ||g|| / ||G_r|| is raised to kappa when it is below:

    k = max(<g, G_r>, kappa ||g|| ||G_r||) / ||G_r||^2

so a conflict with cos >= kappa is removed exactly as above, and a sharper one only in part: g loses at most
|kappa| ||g|| along G_r's direction and keeps <g, G_r> = (cos - kappa) ||g|| ||G_r|| < 0.

The inner product and the norms are over the whole flattened trainable gradient (global, not per layer): each
is a sum of shard-local float64 partial sums, and all three travel in ONE all_reduce of 3 numbers. The EMA lives
on this rank's shard (P/N floats). After an unclipped projection <g, G_r> = 0 up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsunlearn.engine.shard import ShardedGrad


@dataclass
class GRUInfo:
    """What one projection did, for the event log."""

    dot: float  # <g, G_r> before projection
    ema_norm: float  # ||G_r||
    g_u_norm: float  # ||g|| before projection (g: the rectified gradient, forget part or combined)
    projected: bool
    coef: float  # k, the multiple of G_r removed (0 when not projected)
    clipped: bool = False  # the cosine clip limited k (cos(g, G_r) < kappa)

    @property
    def cosine(self) -> float:
        den = self.ema_norm * self.g_u_norm
        return self.dot / den if den > 0 else 0.0


class GRU:
    """Stateful projector: keeps the EMA of the retain gradient on this rank's shard.

    c: the EMA coefficient in (0, 1]. cos_clip: kappa in [-1, 0), or None for the plain projection.
    combined: `update` rectifies the retain term together with the forget one (the GRU code's gd_gru) instead
    of adding it after (its *_gru+ce)."""

    def __init__(self, c: float = 0.8, cos_clip: float | None = None, combined: bool = False):
        if not 0.0 < c <= 1.0:
            raise ValueError(f"GRU EMA coefficient must be in (0, 1], got {c}")
        if cos_clip is not None and not -1.0 <= cos_clip < 0.0:
            raise ValueError(f"GRU cosine clip must be in [-1, 0) or None, got {cos_clip}")
        self.c = c
        self.cos_clip = cos_clip
        self.combined = combined
        self.ema: ShardedGrad | None = None
        self._pending: torch.Tensor | None = None  # EMA restored by load_state_dict, placed at the next update

    def update_ema(self, g_r: ShardedGrad) -> ShardedGrad:
        """G_r <- c g_r + (1 - c) G_r (G_r(0) = 0, so the first value is c g_r)."""
        if self.ema is None and self._pending is not None:  # first update after a resume
            if self._pending.numel() != g_r.flat.numel():
                n, m = self._pending.numel(), g_r.flat.numel()
                raise RuntimeError(f"restored GRU EMA has {n} elements, this rank's gradient shard {m}")
            self.ema = g_r.zeros_like()
            self.ema.flat.copy_(self._pending.to(self.ema.flat.device, torch.float32))
            self._pending = None
        if self.ema is None:
            self.ema = g_r.clone().scale_(self.c)
        else:
            self.ema.scale_(1.0 - self.c).axpy(self.c, g_r)
        return self.ema

    def project(self, g: ShardedGrad, g_r: ShardedGrad) -> GRUInfo:
        """Update the EMA with g_r, then rectify g IN PLACE if it conflicts with the EMA (module docstring)."""
        ema = self.update_ema(g_r)
        sums = ShardedGrad.dots([(g, ema), (ema, ema), (g, g)])  # totals only: GRU is global, not per layer
        dot, nsq, usq = (float(x) for x in sums)
        projected = dot < 0.0 and nsq > 0.0
        coef, clipped = (dot / nsq if projected else 0.0), False
        if projected and self.cos_clip is not None:
            # cos(g, G_r) < kappa  <=>  <g, G_r> < kappa ||g|| ||G_r||: remove what a cosine of kappa would
            bound = self.cos_clip * usq**0.5 * nsq**0.5
            if dot < bound:
                coef, clipped = bound / nsq, True
        if projected:
            g.axpy(-coef, ema)
        return GRUInfo(dot=dot, ema_norm=nsq**0.5, g_u_norm=usq**0.5, projected=projected, coef=coef, clipped=clipped)

    def update(self, g: ShardedGrad, g_reg: ShardedGrad | None, g_r: ShardedGrad, lambda_: float) -> GRUInfo:
        """The step's update, IN PLACE in g (gamma grad L_f on entry), the EMA fed with g_r:

            forget (combined=False):  g <- GRU(gamma grad L_f) + lambda grad L_reg
            combined:                 g <- GRU(gamma grad L_f + lambda grad L_reg)

        g_reg = grad L_reg, None without a retain term (then both are GRU(gamma grad L_f))."""
        if self.combined and g_reg is not None:
            g.axpy(lambda_, g_reg)
        info = self.project(g, g_r)
        if g_reg is not None and not self.combined:
            g.axpy(lambda_, g_reg)
        return info

    def state_dict(self) -> dict:
        """This rank's EMA shard, for resume (each rank saves its own)."""
        if self.ema is None:
            return {"c": self.c, "ema": None if self._pending is None else self._pending.clone()}
        return {"c": self.c, "ema": self.ema.flat.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore this rank's EMA shard. It takes the layout of the first retain gradient it meets: right after
        a checkpoint load there is no gradient to copy a layout from (ZeRO-1/2 refuse to read one before a backward)."""
        self.c = state["c"]
        self.ema = None
        self._pending = None if state["ema"] is None else state["ema"].detach().cpu().clone()
