"""Retain regularisers: nll and kl (KL(p_ref || p_theta)) against hand-worked and float64 references."""

import math

import pytest
import torch
import torch.nn.functional as F

from dsunlearn.objectives import ga, kl, nll
from helpers.saved_tensors import saved_large

TOL = {"rtol": 0, "atol": 1e-10}


def test_nll_hand_example_and_relation_to_ga():
    logp = torch.tensor([[math.log(0.5), math.log(0.25), 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    out = nll(logp, mask)
    torch.testing.assert_close(out.loss, torch.tensor(1.5 * math.log(2), dtype=torch.float64), **TOL)
    assert out.count == 2 and out.unit == "token"
    torch.testing.assert_close(out.weights, torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(out.loss, -ga(logp, mask).loss, **TOL)


def test_nll_reference():
    g = torch.Generator().manual_seed(0)
    logp = torch.log(torch.rand(4, 6, generator=g, dtype=torch.float64))
    mask = torch.rand(4, 6, generator=g) < 0.5
    mask[0, 0] = True
    toks = [-logp[b, t].item() for b in range(4) for t in range(6) if mask[b, t]]
    torch.testing.assert_close(nll(logp, mask).loss.item(), sum(toks) / len(toks), **TOL)


def test_kl_hand_example():
    # One answer position (position 0 predicts labels[1]); position 1 predicts nothing.
    policy = torch.tensor([[[0.0, math.log(3)], [5.0, -5.0]]], dtype=torch.float64)
    ref = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]], dtype=torch.float64)
    labels = torch.tensor([[-100, 1]])
    out = kl(policy, ref, labels)
    torch.testing.assert_close(out.loss.item(), 0.5 * math.log(4 / 3), **TOL)
    assert out.count == 1 and out.per_item.shape == (1, 1)


def _batch(dtype=torch.float64, b=3, t=8, v=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    policy = (2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)).to(dtype)
    ref = (2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :3] = -100
    labels[1, -2:] = -100
    return policy, ref, labels


def _kl_reference(policy, ref):
    """[B, T] sum_v p_ref (log p_ref - log p_theta) in float64, written out directly."""
    p_ref = torch.softmax(ref.double(), -1)
    return (p_ref * (torch.log(p_ref) - torch.log(torch.softmax(policy.double(), -1)))).sum(-1)


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_kl_answer_positions_match_reference_values_and_gradient(chunk_size):
    policy, ref, labels = _batch()
    x = policy.clone().requires_grad_(True)
    out = kl(x, ref, labels, positions="answer", chunk_size=chunk_size)
    mask = labels[:, 1:] != -100
    per_pos = _kl_reference(x, ref)[:, :-1]
    expected = per_pos[mask].sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected, **TOL)
    torch.testing.assert_close(out.per_item, torch.where(mask, per_pos, 0.0), **TOL)
    assert out.count == mask.sum().item() and out.per_item.shape == (3, 7)
    (g,) = torch.autograd.grad(out.loss, x)
    (g_ref,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(g, g_ref, **TOL)


def test_kl_all_positions_reproduces_the_anchor_code():
    """TOFU's KL retain loss: kl_div(log_softmax(current).view(-1, V), log_softmax(oracle).view(-1, V),
    reduction="batchmean", log_target=True): every position, prompt and padding included, / (B * T)."""
    policy, ref, labels = _batch()
    x = policy.clone().requires_grad_(True)
    out = kl(x, ref, labels, positions="all")
    v = policy.shape[-1]
    anchor = F.kl_div(
        F.log_softmax(x, -1).view(-1, v), F.log_softmax(ref, -1).view(-1, v), reduction="batchmean", log_target=True
    )
    torch.testing.assert_close(out.loss, anchor, **TOL)
    assert out.count == 3 * 8 and out.per_item.shape == (3, 8)
    (g,) = torch.autograd.grad(out.loss, x)
    (g_ref,) = torch.autograd.grad(anchor, x)
    torch.testing.assert_close(g, g_ref, **TOL)


def test_kl_gradcheck():
    policy, ref, labels = _batch(b=2, t=4, v=5)
    x = policy.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: kl(p, ref, labels, chunk_size=2).loss_sum, (x,))
    assert torch.autograd.gradcheck(lambda p: kl(p, ref, labels, positions="all").loss_sum, (x,))


def test_kl_is_zero_with_zero_gradient_at_the_reference():
    policy, _, labels = _batch()
    x = policy.clone().requires_grad_(True)
    out = kl(x, policy, labels)
    assert abs(out.loss.item()) < 1e-12
    (g,) = torch.autograd.grad(out.loss, x)
    assert g.abs().max().item() < 1e-12


def test_kl_reference_tokens_with_zero_probability_contribute_nothing():
    policy, ref, labels = _batch()
    ref[..., 0] = -math.inf  # p_ref = 0 for token 0 everywhere: 0 * log(0 / q) := 0
    out = kl(policy, ref, labels, positions="all")
    p_ref = torch.softmax(ref[..., 1:], -1)
    log_q = torch.log_softmax(policy, -1)[..., 1:]
    expected = (p_ref * (torch.log(p_ref) - log_q)).sum(-1).mean()
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, expected, **TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_kl_low_precision_inputs(dtype):
    policy, ref, labels = _batch(dtype=dtype)
    x = policy.clone().requires_grad_(True)
    out = kl(x, ref, labels, chunk_size=2)
    assert out.loss.dtype == torch.float32
    mask = labels[:, 1:] != -100
    expected = _kl_reference(policy, ref)[:, :-1][mask].mean()
    torch.testing.assert_close(out.loss.double(), expected, rtol=0, atol=1e-5)
    out.loss.backward()
    assert x.grad.dtype == dtype


def test_kl_keeps_no_float32_vocab_sized_copy_for_backward():
    policy, ref, labels = _batch(dtype=torch.bfloat16, b=2, t=16, v=64)
    x = policy.clone().requires_grad_(True)
    out, big = saved_large(lambda: kl(x, ref, labels, chunk_size=4), 2 * 15 * 64)
    assert not {torch.float32, torch.float64} & {d for d, _ in big}
    out.loss.backward()


def test_kl_errors():
    policy, ref, labels = _batch()
    with pytest.raises(ValueError, match="positions"):
        kl(policy, ref, labels, positions="prompt")
    with pytest.raises(ValueError, match="kl"):
        kl(policy, ref[:, :-1], labels)
    with pytest.raises(ValueError, match="labels"):
        kl(policy, ref, labels[:, :-1])
