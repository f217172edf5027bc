"""token_logprobs / sequence_logprob / mean_nll against float64 log_softmax references."""

import math

import pytest
import torch

from dsunlearn.objectives.logprobs import IGNORE_INDEX, mean_nll, sequence_logprob, token_logprobs
from helpers.saved_tensors import saved_large


def _batch(b=3, t=7, v=11, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, t, v, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :2] = IGNORE_INDEX  # prompt
    labels[1, -2:] = IGNORE_INDEX  # padding
    labels[-1, 4] = IGNORE_INDEX  # a hole in the middle
    return logits, labels


def _reference(logits, labels):
    """log_softmax(...).gather in float64, with the HF causal shift."""
    lp = torch.log_softmax(logits[:, :-1].to(torch.float64), dim=-1)
    tgt = labels[:, 1:]
    mask = tgt != IGNORE_INDEX
    out = lp.gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
    return torch.where(mask, out, 0.0), mask


def test_hand_worked_example():
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3)], [9.0, 9.0]]], dtype=torch.float64)
    labels = torch.tensor([[IGNORE_INDEX, 1, 1]])
    logp, mask = token_logprobs(logits, labels)
    assert logp.shape == mask.shape == (1, 2)
    assert mask.tolist() == [[True, True]]
    torch.testing.assert_close(logp, torch.tensor([[math.log(0.5), math.log(0.75)]], dtype=torch.float64))


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 4, 100])
def test_matches_float64_reference_values_and_gradient(chunk_size):
    logits, labels = _batch()
    logits.requires_grad_(True)
    logp, mask = token_logprobs(logits, labels, chunk_size=chunk_size)
    ref, ref_mask = _reference(logits, labels)
    assert logp.dtype == torch.float64
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(logp, ref, rtol=0, atol=1e-12)
    assert torch.all(logp[~mask] == 0)

    w = torch.randn(logp.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (g,) = torch.autograd.grad((logp * w).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)
    assert torch.all(g[:, -1] == 0)  # the last position predicts nothing


def test_gradcheck():
    logits, labels = _batch(b=2, t=5, v=6)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, labels, chunk_size=2)[0], (logits,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    logits, labels = _batch(dtype=dtype)
    logits.requires_grad_(True)
    logp, mask = token_logprobs(logits, labels, chunk_size=3)
    assert logp.dtype == torch.float32
    # Reference on exactly the same (rounded) input values, in float64.
    ref, _ = _reference(logits.detach().to(torch.float64), labels)
    torch.testing.assert_close(logp.to(torch.float64), ref, rtol=0, atol=2e-5)
    logp.sum().backward()
    assert logits.grad.dtype == dtype
    x = logits.detach().to(torch.float64).requires_grad_(True)
    _reference(x, labels)[0].sum().backward()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(logits.grad.to(torch.float64), x.grad, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_no_float32_vocab_sized_copy_is_kept_for_backward(dtype):
    """Autograd keeps only the input logits themselves (no upcast [B, T, V] softmax/log_softmax copy)."""
    logits, labels = _batch(b=2, t=16, v=64, dtype=dtype)
    logits.requires_grad_(True)
    n = logits.shape[0] * (logits.shape[1] - 1) * logits.shape[2]
    (logp, _), big = saved_large(lambda: token_logprobs(logits, labels, chunk_size=4), n)
    assert big == [(dtype, logits.data_ptr())]
    logp.sum().backward()


def test_reference_logits_without_grad():
    logits, labels = _batch()
    with torch.no_grad():
        logp, _ = token_logprobs(logits, labels)
    assert not logp.requires_grad
    torch.testing.assert_close(logp, _reference(logits, labels)[0], rtol=0, atol=1e-12)


def test_all_masked_and_too_short():
    logits, labels = _batch()
    logits.requires_grad_(True)
    labels[:] = IGNORE_INDEX
    logp, mask = token_logprobs(logits, labels)
    assert not mask.any() and torch.all(logp == 0)
    logp.sum().backward()
    assert torch.all(logits.grad == 0)

    logp, mask = token_logprobs(torch.zeros(2, 1, 5), torch.zeros(2, 1, dtype=torch.long))
    assert logp.shape == mask.shape == (2, 0)


def test_shape_errors():
    with pytest.raises(ValueError, match="token_logprobs"):
        token_logprobs(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="token_logprobs"):
        token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_sequence_logprob_and_mean_nll():
    logp = torch.tensor(
        [[math.log(0.5), math.log(0.25), 7.0], [math.log(1 / 3), 5.0, 5.0], [1.0, 2.0, 3.0]],
        dtype=torch.float64,
    )
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    torch.testing.assert_close(
        sequence_logprob(logp, mask), torch.tensor([-3 * math.log(2), -math.log(3), 0.0], dtype=torch.float64)
    )
    # avgNLL of an empty sequence is defined as 0 (not 0/0).
    torch.testing.assert_close(
        mean_nll(logp, mask), torch.tensor([1.5 * math.log(2), math.log(3), 0.0], dtype=torch.float64)
    )
