"""`StepPlan`: which gradients and coefficients each configuration's unlearning step needs.

Plain runs back-propagate L_f (+ L_reg) once, with gamma and lambda inside the losses; GRU and the G-effect read
each gradient as a shard, unscaled, and reuse what they can: the retain NLL when it is the regulariser, and
grad R(D_f) = -grad L_f when the objective's loss is the negated risk (GA), so those take no backward.
"""

from __future__ import annotations

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.recipes.step_plan import FORGET_RISK, OBJECTIVE, REGULARIZER, RETAIN_NLL, StepPlan
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
