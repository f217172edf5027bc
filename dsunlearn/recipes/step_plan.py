"""What one unlearning step computes: which gradients, back-propagated how, with which coefficients.

Two ways through a step (`UnlearnRun.step`):
- combined: gamma L_f (+ lambda L_reg) back-propagated into the same gradient buffers, one reduction; nobody
  reads a gradient, so gamma and lambda go into the losses.
- sharded (GRU and/or the G-effect this step): each needed loss's gradient is read on its own as this rank's
  shard; the losses are unscaled and gamma / lambda combine the shards: g = GRU(gamma grad L_f) + lambda grad L_reg
  (`geometry.gru_project: forget`) or g = GRU(gamma grad L_f + lambda grad L_reg) (`combined`), GRU's EMA fed by
  the retain NLL's gradient or the KL-to-theta_o's (`geometry.gru_ema_from`), each reused when it is L_reg's.

The plan depends only on the configuration and the step number, never on the data, so every rank makes the
same one (the backwards are collectives: the ranks must run the same ones in the same order).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsunlearn.config import RunConfig
from dsunlearn.objectives import ObjectiveSpec, RegularizerSpec

OBJECTIVE, REGULARIZER, RETAIN_NLL, FORGET_RISK = "objective", "regularizer", "retain_nll", "forget_risk"
RETAIN_KL = "retain_kl"  # KL(p_o || p_theta) on the retain batch, for GRU's EMA when L_reg is not that KL


@dataclass(frozen=True)
class StepPlan:
    gru: bool  # GRU rectifies the update against the EMA of a retain-batch gradient this step
    gru_ema_from: str  # the retain-batch loss whose gradient feeds GRU's EMA: "nll" or "kl"
    geffect: bool  # the G-effect is measured this step (geometry.geffect_every)
    regularizer: bool  # the run has a retain term L_reg
    retain_nll_is_regularizer: bool  # L_reg is the retain NLL itself: its gradient serves GRU and the G-effect
    ema_is_regularizer: bool  # L_reg is the loss GRU's EMA reads (gru_ema_from): its gradient is reused
    risk_is_negative_loss: bool  # grad R(D_f) = -grad L_f (GA): the forget risk needs no backward of its own
    gamma: float  # weight of the forget objective
    lambda_: float  # weight of the retain term

    @classmethod
    def for_step(cls, step: int, cfg: RunConfig, spec: ObjectiveSpec, reg: RegularizerSpec | None) -> StepPlan:
        every = cfg.geometry.geffect_every
        return cls(
            gru=bool(cfg.geometry.gru),
            gru_ema_from=cfg.geometry.gru_ema_from,
            geffect=every > 0 and step % every == 0,
            regularizer=reg is not None,
            retain_nll_is_regularizer=reg is not None and reg.name == "nll",
            ema_is_regularizer=reg is not None and reg.name == cfg.geometry.gru_ema_from,
            risk_is_negative_loss=spec.risk_is_negative_loss,
            gamma=cfg.objective.gamma,
            lambda_=cfg.objective.lambda_,
        )

    @property
    def sharded(self) -> bool:
        """Gradients are read one by one as shards this step (else: one combined backward)."""
        return self.gru or self.geffect

    @property
    def needs_retain_nll(self) -> bool:
        """grad(retain NLL) is read this step: for the G-effect's e_r, or for GRU's EMA (gru_ema_from nll)."""
        return self.geffect or (self.gru and self.gru_ema_from == "nll")

    @property
    def needs_retain_kl(self) -> bool:
        """GRU's EMA reads grad KL(p_o || p_theta) on the retain batch this step."""
        return self.gru and self.gru_ema_from == "kl"

    @property
    def needs_retain_batches(self) -> bool:
        """The retain batch is forwarded: for L_reg, or for the retain NLL that GRU / the G-effect read."""
        return self.regularizer or self.sharded

    @property
    def loss_coefs(self) -> tuple[float, float]:
        """(coefficient of L_f, of L_reg) inside the back-propagated losses: gamma and lambda on the combined
        path; 1 and 1 on the sharded one (the gradients are read unscaled and combined on the shards)."""
        return (1.0, 1.0) if self.sharded else (self.gamma, self.lambda_)

    @property
    def gradients(self) -> tuple[str, ...]:
        """The losses back-propagated this step, in order. Combined path: one backward of their sum; sharded:
        one backward each (a reused gradient is not listed)."""
        out = [OBJECTIVE] + ([REGULARIZER] if self.regularizer else [])
        if self.needs_retain_nll and not self.retain_nll_is_regularizer:
            out.append(RETAIN_NLL)
        if self.needs_retain_kl and not self.ema_is_regularizer:
            out.append(RETAIN_KL)
        if self.geffect and not self.risk_is_negative_loss:
            out.append(FORGET_RISK)
        return tuple(out)
