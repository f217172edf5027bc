"""`StepPlan`: which gradients and coefficients each configuration's unlearning step needs.

Plain runs back-propagate L_f (+ L_reg) once, with gamma and lambda inside the losses; GRU and the G-effect read
each gradient as a shard, unscaled, and reuse what they can: the retain NLL when it is the regulariser, and
grad R(D_f) = -grad L_f when the objective's loss is the negated risk (GA), so those take no backward. GRU's EMA
reads the retain NLL's gradient or, with geometry.gru_ema_from=kl, the KL's: reused when it is the retain term.
"""

from __future__ import annotations

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.recipes.step_plan import FORGET_RISK, OBJECTIVE, REGULARIZER, RETAIN_KL, RETAIN_NLL, StepPlan
from dsunlearn.recipes.unlearn import forget_objective, retain_regularizer


def plan(config: str, step: int = 0, *overrides: str) -> StepPlan:
    cfg = load_config(config, ["objective.gamma=2.0", "objective.lambda_=0.5", *overrides])
    spec, _ = forget_objective(cfg)
    reg, _ = retain_regularizer(cfg)
    return StepPlan.for_step(step, cfg, spec, reg)


def test_plain_without_retain_term_is_one_backward_with_gamma_inside():
    p = plan("tiny_npo", 0, "objective.retain_loss=none")
    assert not p.sharded and not p.regularizer and not p.needs_retain_batches
    assert p.gradients == (OBJECTIVE,)
    assert p.loss_coefs == (2.0, 0.5)


@pytest.mark.parametrize("config", ["tiny_npo", "tiny_graddiff"])
def test_plain_with_retain_term_combines_objective_and_regularizer(config):
    p = plan(config)
    assert not p.sharded and p.regularizer and p.needs_retain_batches
    assert p.gradients == (OBJECTIVE, REGULARIZER)  # one backward of gamma L_f + lambda L_reg
    assert p.loss_coefs == (2.0, 0.5)


def test_gru_reads_the_retain_nll_unscaled():
    p = plan("tiny_npo_gru", 0, "objective.retain_loss=none")
    assert p.sharded and p.gru and not p.geffect and p.needs_retain_batches
    assert p.gradients == (OBJECTIVE, RETAIN_NLL)
    assert p.loss_coefs == (1.0, 1.0)  # gamma and lambda act on the shards
    assert (p.gamma, p.lambda_) == (2.0, 0.5)


@pytest.mark.parametrize("config", ["tiny_npo_gru", "tiny_graddiff_gru"])
def test_gru_with_nll_regularizer_reuses_its_gradient(config):
    p = plan(config)
    assert p.retain_nll_is_regularizer and p.loss_coefs == (1.0, 1.0)
    assert p.gradients == (OBJECTIVE, REGULARIZER)


def test_gru_with_kl_regularizer_needs_its_own_retain_nll():
    p = plan("tiny_npo_gru", 0, "objective.retain_loss=kl")
    assert p.regularizer and not p.retain_nll_is_regularizer
    assert p.gradients == (OBJECTIVE, REGULARIZER, RETAIN_NLL)


@pytest.mark.parametrize("step, measured", [(0, True), (1, False), (2, False), (3, True)])
def test_geffect_only_on_its_steps(step, measured):
    p = plan("tiny_npo", step, "geometry.geffect_every=3", "objective.retain_loss=none")
    assert p.geffect is measured and p.sharded is measured
    want = (OBJECTIVE, RETAIN_NLL, FORGET_RISK) if measured else (OBJECTIVE,)
    assert p.gradients == want
    assert p.loss_coefs == ((1.0, 1.0) if measured else (2.0, 0.5))


def test_geffect_every_zero_never_measures():
    assert not any(plan("tiny_npo", s, "geometry.geffect_every=0").geffect for s in range(5))


@pytest.mark.parametrize(
    "config, reuses", [("tiny_ga", True), ("tiny_npo", False), ("tiny_simnpo", False), ("tiny_wga", False)]
)
def test_ga_reuses_the_objective_gradient_as_the_forget_risk(config, reuses):
    """GA's loss is -R(D_f): grad R(D_f) = -grad L_f needs no backward; NPO-like objectives need their own."""
    p = plan(config, 0, "geometry.geffect_every=1")
    assert p.risk_is_negative_loss is reuses
    assert (FORGET_RISK in p.gradients) is not reuses


def test_graddiff_geffect_reuses_both():
    p = plan("tiny_graddiff", 0, "geometry.geffect_every=1")
    assert p.risk_is_negative_loss and p.retain_nll_is_regularizer
    assert p.gradients == (OBJECTIVE, REGULARIZER)


def test_gru_and_geffect_together():
    p = plan("tiny_npo_gru", 0, "geometry.geffect_every=1")
    assert p.gru and p.geffect and p.retain_nll_is_regularizer
    assert p.gradients == (OBJECTIVE, REGULARIZER, FORGET_RISK)


@pytest.mark.parametrize(
    "overrides, want",
    [
        # the GRU code's ga_grukl: no retain term, the EMA of the KL's gradient (the retain NLL is not read)
        (("objective.retain_loss=none",), (OBJECTIVE, RETAIN_KL)),
        # L_reg = NLL added after (or inside the projection), the EMA of the KL: a third backward
        ((), (OBJECTIVE, REGULARIZER, RETAIN_KL)),
        (("geometry.gru_project=combined",), (OBJECTIVE, REGULARIZER, RETAIN_KL)),
        # L_reg = KL: its gradient is the EMA's
        (("objective.retain_loss=kl",), (OBJECTIVE, REGULARIZER)),
        # the G-effect still reads the retain NLL (reused from L_reg here) beside the KL for the EMA
        (("geometry.geffect_every=1",), (OBJECTIVE, REGULARIZER, RETAIN_KL, FORGET_RISK)),
        (("objective.retain_loss=kl", "geometry.geffect_every=1"), (OBJECTIVE, REGULARIZER, RETAIN_NLL, FORGET_RISK)),
    ],
)
def test_gru_ema_from_kl_reads_the_kl_gradient(overrides, want):
    p = plan("tiny_npo_gru", 0, "geometry.gru_ema_from=kl", *overrides)
    assert p.needs_retain_kl and p.gradients == want
    assert p.needs_retain_nll is p.geffect
    assert p.ema_is_regularizer is ("objective.retain_loss=kl" in overrides)


def test_gru_project_does_not_change_the_backwards():
    """Combined or not, the same gradients are read; only how they are summed differs (GRU.update)."""
    for reg in ("none", "nll", "kl"):
        a = plan("tiny_npo_gru", 0, f"objective.retain_loss={reg}")
        b = plan("tiny_npo_gru", 0, f"objective.retain_loss={reg}", "geometry.gru_project=combined")
        assert a.gradients == b.gradients and a.loss_coefs == b.loss_coefs == (1.0, 1.0)
