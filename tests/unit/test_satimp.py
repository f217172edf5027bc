"""SatImp: the docstring's hand-worked example, an independent float64 reference of the loss and of its gradient
wrt the logits (written from the formula, docs/methods.md), open-unlearning's computation, and edge cases.

    L = mean over answer tokens of sg(w_i) log p_i,   w_i = p_i^beta1 (1 - p_i)^beta2
"""

import math

import pytest
import torch
import torch.nn.functional as F

from dsunlearn.objectives import satimp, token_logprobs, wga
from dsunlearn.objectives.satimp import satimp_weights

LN = math.log
TOL = {"rtol": 0, "atol": 1e-12}


def test_hand_example_with_the_defaults():
    # p = 1/2: w = (1/2)^5 (1/2) = 1/64;  p = 1/4: w = (1/4)^5 (3/4) = 3/4096
    # loss = (1/64 ln 1/2 + 3/4096 ln 1/4) / 2 = -(35/4096) ln 2
    logp = torch.tensor([[LN(1 / 2), LN(1 / 4), 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    out = satimp(logp, mask)
    assert out.loss.item() == pytest.approx(-(35 / 4096) * LN(2), rel=1e-14)
    assert out.loss.item() == pytest.approx(-0.00592289, abs=5e-9)
    assert out.count == 2 and out.unit == "token"
    torch.testing.assert_close(out.weights, torch.tensor([[1 / 64, 3 / 4096, 0.0]], dtype=torch.float64), **TOL)
    # d loss / d log p_i = w_i / count: a weighted gradient ascent
    x = logp.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(satimp(x, mask).loss, x)
    torch.testing.assert_close(g, torch.tensor([[1 / 128, 3 / 8192, 0.0]], dtype=torch.float64), **TOL)


def _batch(seed, b=4, t=9, v=11):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :3] = -100  # prompt
    labels[1, -3:] = -100  # right padding
    labels[2, :6] = -100  # a short answer
    return logits, labels


def _reference(logits, labels, beta1, beta2):
    """Written from the formula in float64: per answer token p = softmax(logits[t])[labels[t+1]],
    w = p^beta1 (1 - p)^beta2 held constant, loss = sum(w log p) / (number of answer tokens)."""
    logp_all = torch.log_softmax(logits, dim=-1)
    total, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            lp = logp_all[b, t, y]
            p = math.exp(lp.item())
            total = total + (p**beta1) * ((1 - p) ** beta2) * lp
            n += 1
    return total / n


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("beta1", "beta2"), [(5.0, 1.0), (1.0, 2.0), (0.5, 0.0), (0.0, 3.0)])
def test_loss_and_gradient_match_the_float64_reference(seed, beta1, beta2):
    logits, labels = _batch(seed)
    x = logits.clone().requires_grad_(True)
    logp, mask = token_logprobs(x, labels)
    out = satimp(logp, mask, beta1=beta1, beta2=beta2)
    y = logits.clone().requires_grad_(True)
    expected = _reference(y, labels, beta1, beta2)
    torch.testing.assert_close(out.loss, expected, **TOL)
    (g,) = torch.autograd.grad(out.loss, x)
    (g_ref,) = torch.autograd.grad(expected, y)
    torch.testing.assert_close(g, g_ref, **TOL)
    assert g.abs().max() > 1e-6  # a real gradient, not two zeros


def test_equals_open_unlearnings_computation():
    """open-unlearning's compute_satimp_loss: token cross-entropy of the shifted logits, weights from exp(-CE)
    detached, -(weight * CE) averaged over the tokens whose label is not -100 (one micro-batch)."""
    logits, labels = _batch(3)
    x = logits.clone().requires_grad_(True)
    v = logits.shape[-1]
    ce = F.cross_entropy(x[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none")
    p = torch.exp(-ce).detach()
    official = -((p**5.0) * ((1 - p) ** 1.0) * ce)[labels[:, 1:].reshape(-1) != -100].mean()
    y = logits.clone().requires_grad_(True)
    ours = satimp(*token_logprobs(y, labels))
    torch.testing.assert_close(ours.loss, official, **TOL)
    (g_official,) = torch.autograd.grad(official, x)
    (g_ours,) = torch.autograd.grad(ours.loss, y)
    torch.testing.assert_close(g_ours, g_official, **TOL)


def test_beta2_zero_is_wga():
    logits, labels = _batch(4)
    logp, mask = token_logprobs(logits, labels)
    torch.testing.assert_close(satimp(logp, mask, beta1=2.0, beta2=0.0).loss, wga(logp, mask, alpha=2.0).loss, **TOL)


def test_weights_at_the_ends_of_the_probability_range():
    # p = 1 (log p = 0, and a hair above 0 from rounding): importance (1 - p)^beta2 = 0, also 1 for beta2 = 0
    lp = torch.tensor([[0.0, 1e-7, LN(1e-30)]], dtype=torch.float64)
    w = satimp_weights(lp, 5.0, 1.0)
    assert w[0, 0] == 0 and w[0, 1] == 0 and 0 <= w[0, 2] < 1e-140
    torch.testing.assert_close(satimp_weights(lp, 5.0, 0.0), torch.exp(5.0 * lp), **TOL)  # (1 - p)^0 = 1
    # 1 - p from expm1: p = 1 - 1e-12 keeps its 1e-12 (1 - exp(log p) would keep only a few digits of it in fp32)
    near_one = torch.tensor([[math.log1p(-1e-12)]], dtype=torch.float64)
    assert satimp_weights(near_one, 0.0, 1.0).item() == pytest.approx(1e-12, rel=1e-9)
    assert torch.isfinite(satimp_weights(torch.tensor([[-1e4]], dtype=torch.float32), 5.0, 1.0)).all()


def test_bad_exponents_raise():
    logp = torch.zeros(1, 2, dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="beta1 and beta2"):
        satimp(logp, mask, beta1=-1.0)
