"""The G-effect (Wang et al., ICLR 2025, arXiv 2502.19301), total and per layer group, on gradient shards.

For an unlearning objective L_u and the risk R = mean-token NLL:

    e(D) = < grad R(D; theta_t), grad L_u(D_f; theta_t) >

a raw inner product over all trainable parameters. The unlearning G-effect e_u takes D = the forget batch,
the retaining G-effect e_r the retain batch. A step theta <- theta - eta grad L_u changes R(D) by -eta e(D)
to first order: removal wants e_u strongly negative, retention wants e_r >= 0. Per layer group (`embed`,
`layers.i`, `norm`, `lm_head`) the same sum restricted to that group's parameters; groups sum to the total.

All five needed inner products (e_u, e_r and three squared norms for the cosines) are entries of the per-group
Gram matrix of (grad L_u, grad R(D_f), grad R(D_r)): ONE pass over the three shards (`shard.gram`, float64
products per cached piece) and ONE all_reduce of a [groups, 3, 3] tensor. When
grad R(D_f) = -grad L_u (GA, GradDiff) the Gram of (grad L_u, grad R(D_r)) suffices: e_u = -||grad L_u||^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsunlearn.engine.shard import gram


@dataclass
class GEffect:
    groups: tuple[str, ...]
    e_u_groups: torch.Tensor  # [G] float64
    e_r_groups: torch.Tensor  # [G]
    norms_sq: torch.Tensor  # [3] ||grad L_u||^2, ||grad R(D_f)||^2, ||grad R(D_r)||^2

    @property
    def e_u(self) -> float:
        return float(self.e_u_groups.sum())

    @property
    def e_r(self) -> float:
        return float(self.e_r_groups.sum())

    def _cos(self, e: float, i: int) -> float:
        den = math.sqrt(float(self.norms_sq[0]) * float(self.norms_sq[i]))
        return e / den if den > 0 else 0.0

    @property
    def cos_u(self) -> float:
        return self._cos(self.e_u, 1)

    @property
    def cos_r(self) -> float:
        return self._cos(self.e_r, 2)

    def as_dict(self) -> dict:
        """Flat record for events.jsonl: totals, cosines, and per-group lists in `groups` order."""
        return {
            "geffect_u": self.e_u,
            "geffect_r": self.e_r,
            "geffect_cos_u": self.cos_u,
            "geffect_cos_r": self.cos_r,
            "grad_norm_objective": math.sqrt(float(self.norms_sq[0])),
            "geffect_groups": list(self.groups),
            "geffect_u_groups": self.e_u_groups.tolist(),
            "geffect_r_groups": self.e_r_groups.tolist(),
        }


def g_effect(grad_obj, grad_risk_forget, grad_risk_retain) -> GEffect:
    """e_u and e_r per group from the gradients' shards (`ShardedGrad` or `LiveGrad`; one pass, one all_reduce).

    grad_risk_forget None: grad R(D_f) = -grad L_u (the objective is the negative risk), read from grad_obj."""
    negative = grad_risk_forget is None
    vectors = [grad_obj, grad_risk_retain] if negative else [grad_obj, grad_risk_forget, grad_risk_retain]
    K = gram(vectors, per_group=True)  # [G, k, k]
    if negative:
        e_u, e_r = -K[:, 0, 0], K[:, 1, 0]
        per_norm = torch.stack([K[:, 0, 0], K[:, 0, 0], K[:, 1, 1]])
    else:
        e_u, e_r = K[:, 1, 0], K[:, 2, 0]
        per_norm = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 2, 2]])
    return GEffect(tuple(grad_obj.layout.groups), e_u.clone(), e_r.clone(), per_norm.sum(dim=1))
