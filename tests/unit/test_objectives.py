"""Objective values: the docstrings' hand-worked examples and independent float64 references.

The references below are written from docs/methods.md with Python floats and ``math``; they never call the
implementation.
"""

import math

import pytest
import torch

from dsunlearn.objectives import ga, graddiff, npo, simnpo, tnpo, wga, wtnpo

LN = math.log
TOL = {"rtol": 0, "atol": 1e-10}


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _close(actual, expected):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), _t(expected), **TOL)


# ---------------------------------------------------------------- hand-worked examples (as in the docstrings)

TOKEN_LOGP = _t([[LN(1 / 2), LN(1 / 4), 0.0]])
TOKEN_MASK = torch.tensor([[True, True, False]])
TOKEN_REF = _t([[LN(1 / 2), LN(1 / 2), 0.0]])


@pytest.mark.parametrize("fn", [ga, graddiff])
def test_ga_and_graddiff_hand_example(fn):
    out = fn(TOKEN_LOGP, TOKEN_MASK)
    _close(out.loss_sum, -3 * LN(2))
    _close(out.loss, -1.5 * LN(2))
    assert out.count == 2 and out.unit == "token"
    _close(out.weights, [[1, 1, 0]])


def test_wga_hand_example():
    out = wga(TOKEN_LOGP, TOKEN_MASK, alpha=1.0)
    _close(out.loss, -LN(2) / 2)
    _close(out.weights, [[1 / 2, 1 / 4, 0]])


def test_tnpo_hand_example():
    out = tnpo(TOKEN_LOGP, TOKEN_MASK, TOKEN_REF, beta=4.0, eps=0.0)
    _close(out.loss, -(21 / 34) * LN(2))
    _close(out.weights, [[1, 2 / 17, 0]])


def test_wtnpo_hand_example():
    out = wtnpo(TOKEN_LOGP, TOKEN_MASK, TOKEN_REF, alpha=1.0, beta=4.0, eps=0.0)
    _close(out.loss, -(19 / 68) * LN(2))
    _close(out.weights, [[1 / 2, 1 / 34, 0]])


SEQ_LOGP = _t([[LN(1 / 2), LN(1 / 2)], [LN(1 / 3), 0.0]])
SEQ_MASK = torch.tensor([[True, True], [True, False]])
SEQ_REF = _t([[LN(1 / 2), LN(1 / 2)], [0.0, 0.0]])


def test_npo_hand_example():
    out = npo(SEQ_LOGP, SEQ_MASK, SEQ_REF, beta=1.0)
    _close(out.per_item, [2 * LN(2), 2 * LN(4 / 3)])
    _close(out.loss, LN(8 / 3))
    _close(out.weights, [1.0, 0.5])
    assert out.count == 2 and out.unit == "sequence"


def test_simnpo_hand_example():
    out = simnpo(SEQ_LOGP, SEQ_MASK, beta=2.0, delta=0.0)
    _close(out.per_item, [LN(5 / 4), LN(10 / 9)])
    _close(out.loss, 0.5 * LN(25 / 18))
    _close(out.weights, [2 / 5, 1 / 5])


# ---------------------------------------------------------------- independent float64 references


def _random_batch(seed=0, b=5, t=8):
    """Random probabilities in (0.02, 0.98), variable-length answers, one sequence with a single token."""
    g = torch.Generator().manual_seed(seed)
    logp = torch.log(0.02 + 0.96 * torch.rand(b, t, generator=g, dtype=torch.float64))
    ref = torch.log(0.02 + 0.96 * torch.rand(b, t, generator=g, dtype=torch.float64))
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, (start, stop) in enumerate([(2, 8), (3, 6), (0, 1), (1, 7), (4, 8)][:b]):
        mask[i, start:stop] = True
    return torch.where(mask, logp, 0.0), mask, torch.where(mask, ref, 0.0)


def _tokens(x, mask):
    """[(b, value)] over answer tokens, as Python floats."""
    return [(b, x[b][t]) for b in range(len(mask)) for t in range(len(mask[0])) if mask[b][t]]


def ref_token_objective(logp, mask, ref, weight):
    """mean over answer tokens of weight(p, p_o) * log p (the minimised weighted-GA form of docs/methods.md)."""
    lp, m, rp = logp.tolist(), mask.tolist(), ref.tolist()
    terms = [
        weight(math.exp(lp[b][t]), math.exp(rp[b][t])) * lp[b][t]
        for b in range(len(m))
        for t in range(len(m[0]))
        if m[b][t]
    ]
    return sum(terms) / len(terms)


def ref_npo(logp, mask, ref, beta):
    lp, m, rp = logp.tolist(), mask.tolist(), ref.tolist()
    losses = []
    for b in range(len(m)):
        l_theta = sum(lp[b][t] for t in range(len(m[0])) if m[b][t])
        l_ref = sum(rp[b][t] for t in range(len(m[0])) if m[b][t])
        sig = 1.0 / (1.0 + math.exp(beta * (l_theta - l_ref)))  # sigmoid(-beta (l_theta - l_ref))
        losses.append(-(2.0 / beta) * math.log(sig))
    return sum(losses) / len(losses)


def ref_simnpo(logp, mask, beta, delta):
    lp, m = logp.tolist(), mask.tolist()
    losses = []
    for b in range(len(m)):
        toks = [lp[b][t] for t in range(len(m[0])) if m[b][t]]
        avg_nll = -sum(toks) / len(toks)
        sig = 1.0 / (1.0 + math.exp(-beta * (avg_nll - delta)))
        losses.append(-(2.0 / beta) * math.log(sig))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ga_reference(seed):
    logp, mask, ref = _random_batch(seed)
    expected = ref_token_objective(logp, mask, ref, lambda p, po: 1.0)
    for fn in (ga, graddiff):
        out = fn(logp, mask)
        _close(out.loss, expected)
        assert out.count == mask.sum().item()
        _close(out.per_item.sum(), out.loss_sum.item())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [1.0, 5.0, 0.3])
def test_wga_reference(seed, alpha):
    logp, mask, ref = _random_batch(seed)
    _close(wga(logp, mask, alpha=alpha).loss, ref_token_objective(logp, mask, ref, lambda p, po: p**alpha))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [4.0, 1.0, 0.5])
@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.01])
def test_tnpo_reference(seed, beta, eps):
    logp, mask, ref = _random_batch(seed)
    expected = ref_token_objective(logp, mask, ref, lambda p, po: 2 * p**beta / (p**beta + po**beta + eps))
    _close(tnpo(logp, mask, ref, beta=beta, eps=eps).loss, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("alpha", "beta"), [(1.5, 4.0), (1.0, 2.0), (0.0, 4.0)])
@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_wtnpo_reference(seed, alpha, beta, eps):
    logp, mask, ref = _random_batch(seed)
    w = lambda p, po: 2 * p ** (beta + alpha) / (p**beta + po**beta + eps)  # noqa: E731
    _close(wtnpo(logp, mask, ref, alpha=alpha, beta=beta, eps=eps).loss, ref_token_objective(logp, mask, ref, w))


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_wtnpo_with_alpha_zero_is_tnpo(eps):
    logp, mask, ref = _random_batch(3)
    expected = tnpo(logp, mask, ref, beta=3.0, eps=eps).loss.item()
    _close(wtnpo(logp, mask, ref, alpha=0.0, beta=3.0, eps=eps).loss, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_npo_reference(seed, beta):
    logp, mask, ref = _random_batch(seed)
    out = npo(logp, mask, ref, beta=beta)
    _close(out.loss, ref_npo(logp, mask, ref, beta))
    assert out.count == 5 and out.per_item.shape == (5,) and out.weights.shape == (5,)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("beta", "delta"), [(4.5, 0.0), (2.0, 0.5), (1.0, 3.0)])
def test_simnpo_reference(seed, beta, delta):
    logp, mask, _ = _random_batch(seed)
    _close(simnpo(logp, mask, beta=beta, delta=delta).loss, ref_simnpo(logp, mask, beta, delta))


def test_default_hyper_parameters_match_methods():
    logp, mask, ref = _random_batch(4)
    _close(npo(logp, mask, ref).loss, ref_npo(logp, mask, ref, 0.1))
    _close(simnpo(logp, mask).loss, ref_simnpo(logp, mask, 4.5, 0.0))
    _close(wga(logp, mask).loss, ref_token_objective(logp, mask, ref, lambda p, po: p))
    w_tnpo = lambda p, po: 2 * p**4 / (p**4 + po**4 + 1e-5)  # noqa: E731
    _close(tnpo(logp, mask, ref).loss, ref_token_objective(logp, mask, ref, w_tnpo))
    w_wtnpo = lambda p, po: 2 * p**5.5 / (p**4 + po**4 + 1e-5)  # noqa: E731
    _close(wtnpo(logp, mask, ref).loss, ref_token_objective(logp, mask, ref, w_wtnpo))


def test_metrics_are_floats():
    logp, mask, ref = _random_batch(0)
    out = tnpo(logp, mask, ref)
    assert set(out.metrics) >= {"weight_mean", "weight_min", "weight_max", "logp_mean", "ref_logp_mean"}
    assert all(isinstance(v, float) for v in out.metrics.values())
    _close(out.metrics["logp_mean"], logp[mask].mean().item())
    assert 0 < out.metrics["weight_min"] <= out.metrics["weight_mean"] <= out.metrics["weight_max"] < 2
    seq = npo(logp, mask, ref)
    assert {"weight_mean", "seq_logp_mean", "seq_ref_logp_mean"} <= set(seq.metrics)


# ---------------------------------------------------------------- sum + count: world-size invariance


@pytest.mark.parametrize("name", ["ga", "wga", "tnpo", "wtnpo", "npo", "simnpo"])
def test_splitting_into_micro_batches_with_global_count_reproduces_the_full_batch(name):
    """What the engine does across ranks/micro-batches: sum(loss_sum_k) / sum(count_k) == full-batch loss."""
    fn = {"ga": ga, "wga": wga, "tnpo": tnpo, "wtnpo": wtnpo, "npo": npo, "simnpo": simnpo}[name]
    logp, mask, ref = _random_batch(5)
    full_x = logp.clone().requires_grad_(True)
    full = fn(full_x, mask, ref)
    full.loss.backward()
    parts = [fn(logp[s], mask[s], ref[s]) for s in (slice(0, 2), slice(2, 3), slice(3, 5))]
    global_count = sum(p.count for p in parts)
    split_x = logp.clone().requires_grad_(True)
    split_loss = sum(
        fn(split_x[s], mask[s], ref[s]).loss_sum / global_count for s in (slice(0, 2), slice(2, 3), slice(3, 5))
    )
    split_loss.backward()
    _close(split_loss, full.loss.item())
    torch.testing.assert_close(split_x.grad, full_x.grad, **TOL)


def test_loss_terms_validation():
    from dsunlearn.objectives import LossTerms

    with pytest.raises(ValueError, match="unit"):
        LossTerms(torch.tensor(0.0), 1.0, "word", torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="0-dim"):
        LossTerms(torch.zeros(2), 1.0, "token", torch.zeros(1), torch.zeros(1))
    assert LossTerms(torch.tensor(0.0), 0.0, "token", torch.zeros(1), torch.zeros(1)).loss.item() == 0.0


def test_missing_reference_and_bad_hyper_parameters_raise():
    logp, mask, ref = _random_batch(0)
    for fn in (npo, tnpo, wtnpo):
        with pytest.raises(ValueError, match="ref_logp"):
            fn(logp, mask, None)
    with pytest.raises(ValueError, match="beta"):
        npo(logp, mask, ref, beta=0.0)
    with pytest.raises(ValueError, match="alpha"):
        wga(logp, mask, alpha=-1.0)
    with pytest.raises(ValueError, match="mask"):
        ga(logp, mask.float())
