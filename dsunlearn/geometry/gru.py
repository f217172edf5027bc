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

The inner product and the norms are over the whole flattened trainable gradient (global, not per layer). The EMA
lives on this rank's shard (P/N floats). After an unclipped projection <g, G_r> = 0 up to rounding.

Cost (`update`, the step's path): two passes over this rank's P/N elements, whatever the variant.
1. The Gram matrix of the distinct inputs (g_f, g_reg, g_r, G_r(t-1)): at most 4 x 4, `shard.gram`, one pass,
   one all_reduce of 16 numbers. Every needed number is a bilinear form in it: with h = a . x and
   G_r(t) = b . x over the inputs x, <h, G_r(t)> = a^T K b, ||G_r(t)||^2 = b^T K b, ||h||^2 = a^T K a. So no
   vector is formed before the coefficient k is known.
2. One fused pass, piece by piece (`shard.pieces`, in cache): G_r(t) written into the EMA, and
   g = gamma g_f (+ lambda g_reg) - k G_r(t) (+ lambda g_reg) written to `out`, which may be one of the inputs
   (the engine passes DeepSpeed's own buffer holding g_reg or g_r: read in place, overwritten in place).
Memory: the EMA and the one gradient copied out before the next backward: 2 fp32 shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsunlearn.engine.shard import ShardedGrad, axpy_piece, device_of, gram, piece_of, pieces


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
        self._restore_pending(g_r)
        if self.ema is None:
            self.ema = g_r.clone().scale_(self.c)
        else:
            self.ema.scale_(1.0 - self.c).axpy(self.c, g_r)
        return self.ema

    def project(self, g: ShardedGrad, g_r: ShardedGrad) -> GRUInfo:
        """Update the EMA with g_r, then rectify g IN PLACE if it conflicts with the EMA (module docstring)."""
        return self.update(g, None, g_r, 0.0)

    def update(self, g, g_reg, g_r, lambda_: float, gamma: float = 1.0, out=None) -> GRUInfo:
        """The step's update, written to `out` (default: g itself), the EMA fed with g_r:

            forget (combined=False):  out <- GRU(gamma g) + lambda g_reg
            combined:                 out <- GRU(gamma g + lambda g_reg)

        g = grad L_f, g_reg = grad L_reg (None without a retain term: then both are GRU(gamma g)), g_r: what the EMA
        averages (may be g_reg itself). Each is a `ShardedGrad` or a `LiveGrad` of one layout; `out` may be any of
        them (each piece is read before it is written; a `LiveGrad` out is committed by the caller,
        `UnlearnEngine.set_grad`). Two passes (module docstring)."""
        self._restore_pending(g_r)
        u, reg, r, old = g, g_reg, g_r, self.ema
        basis: list = []  # the distinct inputs, by identity

        def at(x) -> int:
            for i, y in enumerate(basis):
                if y is x:
                    return i
            basis.append(x)
            return len(basis) - 1

        iu, ireg, ir = at(u), (at(reg) if reg is not None else None), at(r)
        iold = at(old) if old is not None else None
        K = gram(basis).cpu()  # [n, n] float64, one pass, one all_reduce
        a = torch.zeros(len(basis), dtype=torch.float64)  # h = a . basis (the rectified vector)
        b = torch.zeros(len(basis), dtype=torch.float64)  # G_r(t) = b . basis
        a[iu] += gamma
        if reg is not None and self.combined:
            a[ireg] += lambda_
        b[ir] += self.c
        if iold is not None:
            b[iold] += 1.0 - self.c
        dot, nsq, usq = float(a @ K @ b), float(b @ K @ b), float(a @ K @ a)
        usq, nsq = max(usq, 0.0), max(nsq, 0.0)  # quadratic forms of a PSD matrix: >= 0 up to rounding
        projected = dot < 0.0 and nsq > 0.0
        coef, clipped = (dot / nsq if projected else 0.0), False
        if projected and self.cos_clip is not None:
            # cos(g, G_r) < kappa  <=>  <g, G_r> < kappa ||g|| ||G_r||: remove what a cosine of kappa would
            bound = self.cos_clip * usq**0.5 * nsq**0.5
            if dot < bound:
                coef, clipped = bound / nsq, True
        self._fused_pass(u, reg, r, gamma, lambda_, coef, g if out is None else out)
        return GRUInfo(dot=dot, ema_norm=nsq**0.5, g_u_norm=usq**0.5, projected=projected, coef=coef, clipped=clipped)

    def _fused_pass(self, u, reg, r, gamma: float, lambda_: float, coef: float, out) -> None:
        """Per piece: G_r(t) into the EMA, then out = gamma u (+ lambda reg) - coef G_r(t) (+ lambda reg), in the
        order of the unfused formula (forget: the projection before the retain term). The EMA piece is written
        first (it reads r, which `out` may overwrite)."""
        first = self.ema is None
        if first:
            self.ema = ShardedGrad(torch.empty(u.layout.numel, dtype=torch.float32, device=device_of(u)), u.layout)
        ema = self.ema
        terms = [(gamma, u)]
        if reg is not None and self.combined:
            terms.append((lambda_, reg))
        terms.append((-coef, ema))
        if reg is not None and not self.combined:
            terms.append((lambda_, reg))
        alias = next((i for i, (_, x) in enumerate(terms) if x is out), None)  # out holds one term, or none
        for lo, hi, si, _ in pieces(u.layout, ema.flat.device):
            e, rp = ema.flat[lo:hi], piece_of(r, lo, hi, si)
            if first:
                torch.mul(rp, self.c, out=e)
            else:
                e.mul_(1.0 - self.c).add_(rp, alpha=self.c)
            axpy_piece(piece_of(out, lo, hi, si), [(c, piece_of(x, lo, hi, si)) for c, x in terms], alias)

    def _restore_pending(self, like) -> None:
        """An EMA restored by `load_state_dict` takes the layout of the first gradient it meets."""
        if self.ema is None and self._pending is not None:
            if self._pending.numel() != like.layout.numel:
                n, m = self._pending.numel(), like.layout.numel
                raise RuntimeError(f"restored GRU EMA has {n} elements, this rank's gradient shard {m}")
            flat = torch.zeros(like.layout.numel, dtype=torch.float32, device=device_of(like))
            self.ema = ShardedGrad(flat.copy_(self._pending.to(flat.device, torch.float32)), like.layout)
            self._pending = None

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
