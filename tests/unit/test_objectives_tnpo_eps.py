"""TNPO / WTNPO's denominator constant eps: the authors' code weighs a token by 2 p^b / (p^b + p_o^b + 1e-5).

The references here are written from that formula (float64, with the weight detached as in the paper and the
authors' code), never from the implementation, which computes the weight in log space.
"""

import math

import pytest
import torch

from dsunlearn.config_io import load_config
from dsunlearn.errors import ConfigError
from dsunlearn.objectives import tnpo, wtnpo

LN = math.log
TOL = {"rtol": 0, "atol": 1e-12}


def _t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def _authors(logp, mask, ref, beta, eps, alpha=0.0):
    """(loss, d loss / d logp) of the authors' TNPO (alpha = 0) / WTNPO: -mean over answer tokens of w * CE,
    w = 2 p^(beta + alpha) / (p^beta + p_o^beta + eps) without gradient, by autograd in float64."""
    x = logp.detach().to(torch.float64).clone().requires_grad_(True)
    p, p_o = x.exp().detach(), ref.to(torch.float64).exp()
    w = 2 * p ** (beta + alpha) / (p**beta + p_o**beta + eps)
    ce = -x
    loss = -(w * ce)[mask].mean()
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _ours(fn, logp, mask, ref, **kw):
    x = logp.clone().requires_grad_(True)
    out = fn(x, mask, ref, **kw)
    (grad,) = torch.autograd.grad(out.loss, x)
    return out, grad


def _batch(seed=0, dtype=torch.float64):
    """Probabilities in (0.02, 0.98) plus crafted tokens the reference finds unlikely (p_o = 0.01 .. 0.1)."""
    g = torch.Generator().manual_seed(seed)
    p = 0.02 + 0.96 * torch.rand(4, 6, generator=g, dtype=torch.float64)
    p_o = 0.02 + 0.96 * torch.rand(4, 6, generator=g, dtype=torch.float64)
    p_o[1, :5] = torch.tensor([0.01, 0.03, 0.05, 0.07, 0.1], dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, :2] = False  # prompt
    mask[3, 4:] = False  # padding
    logp, ref = torch.where(mask, p.log(), 0.0), torch.where(mask, p_o.log(), 0.0)
    return logp.to(dtype), mask, ref.to(dtype)


def test_hand_worked_unlikely_token():
    """p = p_o = 1/10, beta = 4: p^4 = p_o^4 = 1e-4, w = 2e-4 / (2e-4 + 1e-5) = 20/21 (the paper's: 1)."""
    logp = ref = _t([[LN(1 / 10), 0.0]])
    mask = torch.tensor([[True, False]])
    out, grad = _ours(tnpo, logp, mask, ref, beta=4.0, eps=1e-5)
    torch.testing.assert_close(out.weights, _t([[20 / 21, 0.0]]), **TOL)
    torch.testing.assert_close(out.loss, _t(-(20 / 21) * LN(10)), **TOL)  # the docstring's -2.192938
    torch.testing.assert_close(grad, _t([[20 / 21, 0.0]]), **TOL)  # d loss / d log p = w / count, count = 1
    paper = tnpo(logp, mask, ref, beta=4.0, eps=0.0)
    torch.testing.assert_close(paper.loss, _t(-LN(10)), **TOL)
    # WTNPO (alpha = 1): p^alpha = 1/10 times the same weight
    torch.testing.assert_close(wtnpo(logp, mask, ref, alpha=1.0, beta=4.0).weights, _t([[2 / 21, 0.0]]), **TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [4.0, 1.0, 10.0])
@pytest.mark.parametrize("eps", [1e-5, 0.0, 0.3])
def test_tnpo_equals_the_authors_formula_loss_and_gradient(seed, beta, eps):
    logp, mask, ref = _batch(seed)
    out, grad = _ours(tnpo, logp, mask, ref, beta=beta, eps=eps)
    loss, expected_grad = _authors(logp, mask, ref, beta, eps)
    torch.testing.assert_close(out.loss, loss, **TOL)
    torch.testing.assert_close(grad, expected_grad, **TOL)


@pytest.mark.parametrize(("alpha", "beta"), [(1.5, 4.0), (5.0, 2.0)])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_wtnpo_equals_the_authors_formula_loss_and_gradient(alpha, beta, eps):
    logp, mask, ref = _batch(2)
    out, grad = _ours(wtnpo, logp, mask, ref, alpha=alpha, beta=beta, eps=eps)
    loss, expected_grad = _authors(logp, mask, ref, beta, eps, alpha=alpha)
    torch.testing.assert_close(out.loss, loss, **TOL)
    torch.testing.assert_close(grad, expected_grad, **TOL)


def test_default_is_the_authors_constant():
    logp, mask, ref = _batch(3)
    torch.testing.assert_close(tnpo(logp, mask, ref).loss, _authors(logp, mask, ref, 4.0, 1e-5)[0], **TOL)
    torch.testing.assert_close(wtnpo(logp, mask, ref).loss, _authors(logp, mask, ref, 4.0, 1e-5, 1.5)[0], **TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eps_zero_is_the_paper_weight_bit_for_bit(dtype):
    """eps = 0 gives exactly what dsunlearn computed before eps existed: 2 sigmoid(beta (log p - log p_o))."""
    logp, mask, ref = _batch(4, dtype)
    beta, alpha = 4.0, 1.5
    before = torch.where(mask, 2.0 * torch.sigmoid(beta * (logp - ref)), 0.0)
    out = tnpo(logp, mask, ref, beta=beta, eps=0.0)
    assert torch.equal(out.weights, before)
    assert torch.equal(out.loss_sum, torch.where(mask, before * logp, 0.0).sum())
    w_before = torch.where(mask, torch.exp(alpha * logp) * 2.0 * torch.sigmoid(beta * (logp - ref)), 0.0)
    out = wtnpo(logp, mask, ref, alpha=alpha, beta=beta, eps=0.0)
    assert torch.equal(out.weights, w_before)
    assert torch.equal(out.loss_sum, torch.where(mask, w_before * logp, 0.0).sum())


@pytest.mark.parametrize(
    ("p_o", "low", "high"),
    [(0.1, 0.04, 0.05), (0.07, 0.17, 0.18), (0.5, 0.0, 1e-4)],
)
def test_the_effect_falls_on_tokens_the_reference_found_unlikely(p_o, low, high):
    """At the first step (p = p_o) each weight drops from 1 to 2S / (2S + eps), S = p_o^4: the loss of a batch
    of such tokens changes by eps / (2S + eps): 4.8% at p_o = 0.1, 17% at p_o = 0.07, < 1e-4 at p_o = 0.5."""
    logp = ref = torch.full((2, 3), LN(p_o), dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    change = 1 - tnpo(logp, mask, ref).loss.item() / tnpo(logp, mask, ref, eps=0.0).loss.item()
    s = p_o**4
    assert math.isclose(change, 1e-5 / (2 * s + 1e-5), rel_tol=1e-12)
    assert low < change < high


def test_the_gradient_turns_on_a_batch_with_unlikely_tokens():
    """p = p_o in {0.9, 0.5, 0.1, 0.07, 0.05}: the paper's gradient is uniform (w = 1), the authors' drops the
    unlikely tokens' weights; the cosine between them is sum(w) / (sqrt(n) |w|), w_i = 2 S_i / (2 S_i + eps):
    0.982, about 11 degrees."""
    probs = [0.9, 0.5, 0.1, 0.07, 0.05]
    logp = ref = _t([[LN(p) for p in probs]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    _, g_authors = _ours(tnpo, logp, mask, ref)
    _, g_paper = _ours(tnpo, logp, mask, ref, eps=0.0)
    w = [2 * p**4 / (2 * p**4 + 1e-5) for p in probs]
    expected = sum(w) / (math.sqrt(len(w)) * math.sqrt(sum(x * x for x in w)))
    cos = torch.nn.functional.cosine_similarity(g_authors.flatten(), g_paper.flatten(), dim=0).item()
    assert math.isclose(cos, expected, rel_tol=1e-12) and 0.98 < cos < 0.985


def test_float32_stays_finite_where_p_to_the_beta_underflows():
    """log p = -40: p^4 = e^-160 underflows float32 (the formula would read 0 / (0 + 0 + eps)); the log-space
    weight is the float64 formula's value, here both ~0, and e.g. p = p_o = 0.05 matches to float32 precision."""
    logp = _t([[-40.0, LN(0.05), LN(0.5)]], torch.float32)
    ref = _t([[-38.0, LN(0.05), LN(0.9)]], torch.float32)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = tnpo(logp, mask, ref)
    p, p_o = logp.double().exp(), ref.double().exp()
    expected = 2 * p**4 / (p**4 + p_o**4 + 1e-5)
    assert torch.isfinite(out.weights).all()
    torch.testing.assert_close(out.weights.double(), expected, rtol=1e-6, atol=1e-30)


def test_config_key_bounds_and_objectives_that_take_it():
    assert load_config("tiny_tnpo").objective.params == {"beta": 4.0, "eps": 1e-5}
    assert load_config("tiny_tnpo", ["objective.eps=0"]).objective.params["eps"] == 0.0
    for overrides, words in [
        (["objective.name=tnpo", "objective.eps=-1e-5"], "objective.eps=-1e-05 is out of range: must be a finite"),
        (["objective.name=wtnpo", "objective.eps=2"], "objective.eps=2.0 is out of range: must be in [0, 1]"),
        (["objective.name=npo", "objective.eps=0"], "objective.eps: not a hyper-parameter of 'npo'"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="eps >= 0"):
        tnpo(*_batch()[:3], eps=-1.0)
