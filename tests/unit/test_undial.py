"""UNDIAL: the docstring's hand-worked example, an independent float64 reference of the loss and of its gradient
(written from the formula, docs/methods.md), open-unlearning's computation for positions="all", memory, errors.

    q_t = softmax(z_o,t - beta onehot(y_t)),   L = mean_{t in set} -sum_v q_t(v) log softmax(z_t)(v)
"""

import math

import pytest
import torch
import torch.nn.functional as F

from dsunlearn.objectives import kl, undial
from helpers.saved_tensors import saved_large

LN = math.log
TOL = {"rtol": 0, "atol": 1e-12}


def test_hand_example():
    # theta = theta_o: logits (0, ln 3) -> p = (1/4, 3/4); teacher (0, ln 3 - ln 3) -> q = (1/2, 1/2)
    # loss = -(1/2 ln 1/4 + 1/2 ln 3/4) = 1/2 ln 16/3, gradient p - q = (-1/4, 1/4); the last position predicts nothing
    logits = torch.tensor([[[0.0, LN(3)], [7.0, -2.0]]], dtype=torch.float64)
    labels = torch.tensor([[-100, 1]])
    x = logits.clone().requires_grad_(True)
    out = undial(x, logits, labels, beta=LN(3))
    assert out.loss.item() == pytest.approx(0.5 * LN(16 / 3), rel=1e-14)
    assert out.loss.item() == pytest.approx(0.836988, abs=5e-7)
    assert out.count == 1 and out.unit == "token" and out.per_item.shape == (1, 1)
    (g,) = torch.autograd.grad(out.loss, x)
    torch.testing.assert_close(g, torch.tensor([[[-0.25, 0.25], [0.0, 0.0]]], dtype=torch.float64), **TOL)


def _batch(seed, b=3, t=8, v=13, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)).to(dtype)
    ref = (2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :3] = -100  # prompt
    labels[1, -2:] = -100  # right padding
    return logits, ref, labels


def _reference(logits, ref, labels, beta):
    """From the formula, position by position in float64: the teacher is softmax of the reference's logits with
    beta subtracted at the label, the loss its cross-entropy with the policy, averaged over answer positions."""
    total, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            z_teacher = ref[b, t].double().clone()
            z_teacher[y] -= beta
            q = torch.softmax(z_teacher, dim=-1)
            total = total - (q * torch.log_softmax(logits[b, t].double(), dim=-1)).sum()
            n += 1
    return total / n


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [10.0, 1.0, 0.3])
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_loss_and_gradient_match_the_float64_reference(seed, beta, chunk, monkeypatch):
    import dsunlearn.objectives._common as common

    logits, ref, labels = _batch(seed)
    if chunk is not None:  # positions per chunk (the default holds the whole tiny batch in one)
        monkeypatch.setattr(common, "CHUNK_ELEMENTS", chunk * logits.shape[0] * logits.shape[-1])
    x = logits.clone().requires_grad_(True)
    out = undial(x, ref, labels, beta=beta)
    y = logits.clone().requires_grad_(True)
    expected = _reference(y, ref, labels, beta)
    torch.testing.assert_close(out.loss, expected, **TOL)
    assert out.count == (labels[:, 1:] != -100).sum().item()
    (g,) = torch.autograd.grad(out.loss, x)
    (g_ref,) = torch.autograd.grad(expected, y)
    torch.testing.assert_close(g, g_ref, **TOL)
    assert g.abs().max() > 1e-3


def test_default_beta_is_the_papers():
    logits, ref, labels = _batch(2)
    torch.testing.assert_close(undial(logits, ref, labels).loss, _reference(logits, ref, labels, 10.0), **TOL)


def test_positions_all_equals_open_unlearnings_computation():
    """open-unlearning's compute_undial_loss on one micro-batch: a one-hot mask scattered at the shifted labels
    (-100 indexes vocabulary entry V - 100, so V >= 100 here), teacher softmax(ref - beta mask), soft-label
    cross-entropy at every shifted position, .mean()."""
    logits, ref, labels = _batch(4, v=128)
    beta = 3.0
    x = logits.clone().requires_grad_(True)
    shift_labels, shift_ref = labels[:, 1:], ref[:, :-1]
    onehot = torch.zeros_like(shift_ref)
    b_idx = torch.arange(onehot.shape[0]).view(-1, 1, 1)
    t_idx = torch.arange(onehot.shape[1]).view(1, -1, 1)
    onehot[b_idx, t_idx, shift_labels.unsqueeze(-1)] = 1.0
    soft = F.softmax(shift_ref - onehot * beta, dim=-1)
    v = logits.shape[-1]
    official = F.cross_entropy(x[:, :-1].reshape(-1, v), soft.reshape(-1, v), reduction="none").mean()
    y = logits.clone().requires_grad_(True)
    out = undial(y, ref, labels, beta=beta, positions="all")
    torch.testing.assert_close(out.loss, official, **TOL)
    assert out.count == 3 * 7 and out.per_item.shape == (3, 7)
    (g_official,) = torch.autograd.grad(official, x)
    (g_ours,) = torch.autograd.grad(out.loss, y)
    torch.testing.assert_close(g_ours, g_official, **TOL)
    # "answer" is a different mean (prompt and padding positions left out)
    assert abs(undial(logits, ref, labels, beta=beta).loss.item() - out.loss.item()) > 1e-3


def test_cross_entropy_is_kl_plus_the_teachers_entropy():
    """With the teacher itself as the KL's reference (its logits: ref - beta at the label), UNDIAL's value is
    KL(q || p) + H(q) position by position and its gradient is the KL's."""
    logits, ref, labels = _batch(5)
    beta = 2.0
    teacher = ref.clone()
    shifted = labels[:, 1:]
    for b in range(3):
        for t in range(7):
            if shifted[b, t] != -100:
                teacher[b, t, shifted[b, t]] -= beta
    x1, x2 = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ce = undial(x1, ref, labels, beta=beta)
    div = kl(x2, teacher, labels, positions="answer")
    q = torch.softmax(teacher[:, :-1], -1)
    entropy = torch.where(shifted != -100, -(q * torch.log(q)).sum(-1), 0.0)
    torch.testing.assert_close(ce.per_item, div.per_item + entropy, **TOL)
    (g1,) = torch.autograd.grad(ce.loss, x1)
    (g2,) = torch.autograd.grad(div.loss, x2)
    torch.testing.assert_close(g1, g2, **TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_low_precision_inputs_and_no_float32_vocab_sized_copy(dtype, monkeypatch):
    import dsunlearn.objectives._common as common

    logits, ref, labels = _batch(6, b=2, t=16, v=64, dtype=dtype)
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 4 * 2 * 64)  # 4 positions per chunk
    x = logits.clone().requires_grad_(True)
    out, big = saved_large(lambda: undial(x, ref, labels), 2 * 15 * 64)
    if dtype == torch.bfloat16:
        assert not {torch.float32, torch.float64} & {d for d, _ in big}
    assert out.loss.dtype == torch.float32
    expected = _reference(logits, ref, labels, 10.0)
    torch.testing.assert_close(out.loss.double(), expected, rtol=0, atol=1e-5)
    out.loss.backward()
    assert x.grad.dtype == dtype


def test_errors():
    logits, ref, labels = _batch(7)
    with pytest.raises(ValueError, match="positions"):
        undial(logits, ref, labels, positions="prompt")
    with pytest.raises(ValueError, match="beta"):
        undial(logits, ref, labels, beta=0.0)
    with pytest.raises(ValueError, match="undial"):
        undial(logits, ref[:, :-1], labels)
    with pytest.raises(ValueError, match="labels"):
        undial(logits, ref, labels[:, :-1])
