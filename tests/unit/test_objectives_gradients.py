"""Gradient mechanics of the objectives, derived by hand and checked with autograd (float64).

Every forget objective is a weighted gradient ascent: d loss / d log p_i = w_i / count with w_i > 0,
so one descent step on the loss lowers the forget log-likelihood. The weights are:
    GA: 1    WGA: p_i^alpha    TNPO: 2 p^beta / (p^beta + p_o^beta + eps)    WTNPO: p^alpha * TNPO weight
    NPO (per sequence s, pi = exp(l_theta(s))): d loss / d l_theta(s) = 2 pi^beta / (pi^beta + pi_ref^beta) / count
    SimNPO: d loss / d log p_i = 2 sigmoid(-beta (avgNLL(s) - delta)) / (T_s * count).
"""

import math

import pytest
import torch

from dsunlearn.objectives import ga, graddiff, npo, simnpo, tnpo, token_logprobs, wga, wtnpo

TOL = {"rtol": 0, "atol": 1e-10}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    b, t = 4, 7
    logp = torch.log(0.02 + 0.96 * torch.rand(b, t, generator=g, dtype=torch.float64))
    ref = torch.log(0.02 + 0.96 * torch.rand(b, t, generator=g, dtype=torch.float64))
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, (start, stop) in enumerate([(1, 7), (2, 4), (0, 1), (3, 7)]):
        mask[i, start:stop] = True
    return torch.where(mask, logp, 0.0), mask, torch.where(mask, ref, 0.0)


def _grad(fn, logp, mask, ref, **kw):
    x = logp.clone().requires_grad_(True)
    out = fn(x, mask, ref, **kw)
    (g,) = torch.autograd.grad(out.loss, x)
    return g, out


@pytest.mark.parametrize("fn", [ga, graddiff])
def test_ga_gradient_is_one_over_count(fn):
    logp, mask, ref = _batch()
    g, out = _grad(fn, logp, mask, ref)
    n = mask.sum().item()
    torch.testing.assert_close(g, mask.double() / n, **TOL)
    # In terms of NLL_i = -log p_i: d loss / d NLL_i = -1 / count (ascent on the NLL).


@pytest.mark.parametrize("alpha", [1.0, 5.0, 0.5])
def test_wga_gradient_is_minus_sg_p_alpha_times_dnll(alpha):
    logp, mask, ref = _batch(1)
    g, out = _grad(wga, logp, mask, ref, alpha=alpha)
    n = mask.sum().item()
    p_alpha = torch.where(mask, logp.exp() ** alpha, 0.0)
    # loss = (1/n) sum sg(p^alpha) log p = -(1/n) sum sg(p^alpha) NLL  => d loss / d log p_i = p_i^alpha / n.
    torch.testing.assert_close(g, p_alpha / n, **TOL)
    # Same statement through NLL as the variable: d loss / d NLL_i = -sg(p_i^alpha) / n.
    nll = (-logp).clone().requires_grad_(True)
    (g_nll,) = torch.autograd.grad(wga(-nll, mask, alpha=alpha).loss, nll)
    torch.testing.assert_close(g_nll, -p_alpha / n, **TOL)
    torch.testing.assert_close(out.weights, p_alpha, **TOL)


@pytest.mark.parametrize("beta", [4.0, 1.0])
@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_tnpo_weight_and_gradient(beta, eps):
    logp, mask, ref = _batch(2)
    g, out = _grad(tnpo, logp, mask, ref, beta=beta, eps=eps)
    n = mask.sum().item()
    p, po = logp.exp(), ref.exp()
    w = torch.where(mask, 2 * p**beta / (p**beta + po**beta + eps), 0.0)
    torch.testing.assert_close(out.weights, w, **TOL)
    torch.testing.assert_close(g, w / n, **TOL)  # = -w * dNLL / n
    assert not out.weights.requires_grad


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_wtnpo_weight_and_gradient(eps):
    logp, mask, ref = _batch(3)
    alpha, beta = 1.5, 4.0
    g, out = _grad(wtnpo, logp, mask, ref, alpha=alpha, beta=beta, eps=eps)
    n = mask.sum().item()
    p, po = logp.exp(), ref.exp()
    w = torch.where(mask, 2 * p ** (beta + alpha) / (p**beta + po**beta + eps), 0.0)
    torch.testing.assert_close(out.weights, w, **TOL)
    torch.testing.assert_close(g, w / n, **TOL)


@pytest.mark.parametrize("beta", [0.1, 0.7, 2.0])
def test_npo_sequence_weight_and_gradient(beta):
    """loss = (1/S) sum_s -(2/beta) log sigmoid(-beta (l_s - r_s)).

    d/dl_s [-(2/beta) log sigmoid(-beta x)] = -(2/beta) (1 - sigmoid(-beta x)) (-beta) = 2 sigmoid(beta x)
    = 2 pi^beta / (pi^beta + pi_ref^beta) =: w_s, so d loss / d l_s = w_s / S and, as l_s = sum_i log p_i,
    every answer token of s gets d loss / d log p_i = w_s / S (and d loss / d NLL(s) = -w_s / S).
    """
    logp, mask, ref = _batch(4)
    # Sequence log-likelihood as the leaf: one token per "sequence" carrying l_theta(s).
    l_theta = torch.where(mask, logp, 0.0).sum(-1)
    l_ref = torch.where(mask, ref, 0.0).sum(-1)
    pi_b, pi_ref_b = torch.exp(beta * l_theta), torch.exp(beta * l_ref)
    w = 2 * pi_b / (pi_b + pi_ref_b)
    n_seq = 4

    g, out = _grad(npo, logp, mask, ref, beta=beta)
    torch.testing.assert_close(out.weights, w, **TOL)
    torch.testing.assert_close(g, torch.where(mask, (w / n_seq)[:, None], 0.0), **TOL)

    leaf = l_theta.clone().requires_grad_(True)
    seq_mask = torch.ones(4, 1, dtype=torch.bool)
    (g_l,) = torch.autograd.grad(npo(leaf[:, None], seq_mask, l_ref[:, None], beta=beta).loss, leaf)
    torch.testing.assert_close(g_l, w / n_seq, **TOL)


@pytest.mark.parametrize(("beta", "delta"), [(4.5, 0.0), (2.0, 0.3)])
def test_simnpo_sequence_weight_and_gradient(beta, delta):
    logp, mask, ref = _batch(5)
    g, out = _grad(simnpo, logp, mask, ref, beta=beta, delta=delta)
    lengths = mask.sum(-1).double()
    avg_nll = -torch.where(mask, logp, 0.0).sum(-1) / lengths
    w = 2 / (1 + torch.exp(beta * (avg_nll - delta)))  # 2 sigmoid(-beta (avgNLL - delta))
    torch.testing.assert_close(out.weights, w, **TOL)
    torch.testing.assert_close(g, torch.where(mask, (w / lengths / 4)[:, None], 0.0), **TOL)


class _TinyLM(torch.nn.Module):
    def __init__(self, vocab=13, dim=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.head(torch.tanh(self.proj(self.emb(ids))))


def _forget_batch(vocab=13):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (3, 9), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100  # prompt
    labels[2, -2:] = -100  # padding
    return ids, labels


def _mean_nll(logits, labels):
    logp, mask = token_logprobs(logits, labels)
    return -(logp[mask]).mean().item()


def test_ga_step_on_a_real_model_raises_the_forget_nll():
    torch.manual_seed(0)
    model = _TinyLM().double()
    ids, labels = _forget_batch()
    before = _mean_nll(model(ids), labels)
    loss = ga(*token_logprobs(model(ids), labels)).loss
    loss.backward()
    with torch.no_grad():
        for prm in model.parameters():
            prm -= 1e-2 * prm.grad
    after = _mean_nll(model(ids), labels)
    assert after > before
    # First order: the NLL rises by lr * ||grad||^2 (GA's loss is exactly -NLL).
    sq = sum((prm.grad**2).sum().item() for prm in model.parameters())
    assert math.isclose(after - before, 1e-2 * sq, rel_tol=0.05)


@pytest.mark.parametrize("name", ["ga", "graddiff", "npo", "simnpo", "wga", "tnpo", "wtnpo"])
def test_a_descent_step_on_leaf_logits_raises_every_forget_token_nll(name):
    """Logits as leaf parameters: each position's logits only move its own token, and w_i > 0."""
    fns = {"ga": ga, "graddiff": graddiff, "npo": npo, "simnpo": simnpo, "wga": wga, "tnpo": tnpo, "wtnpo": wtnpo}
    ids, labels = _forget_batch()
    logits = torch.randn(3, 9, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits.requires_grad_(True)
    logp, mask = token_logprobs(logits, labels)
    noise = torch.randn(logp.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = (logp.detach() + 0.3 * noise).clamp(max=0)
    fns[name](logp, mask, ref).loss.backward()
    with torch.no_grad():
        new_logp, _ = token_logprobs(logits - 0.5 * logits.grad, labels)
    assert torch.all(new_logp[mask] < logp.detach()[mask])
