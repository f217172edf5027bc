"""Masking and edge cases for every objective and regulariser.

Positions where the mask is False (prompt, padding, the last logits position) must not influence the
loss or its gradient, whatever values they hold. A sequence without answer tokens is not a unit: it adds
nothing to ``loss_sum`` or ``count`` (and never produces NaN); an all-empty batch gives loss 0, count 0.
A pair objective (dpo) gets the batch's rows in reverse order as the alternate answers (row b paired with row
B-1-b), so both its answers see the scrambled positions, and dropping a row drops the pairs it is in.
"""

import pytest
import torch

from dsunlearn.objectives import OBJECTIVES, PAIR, kl, nll, token_logprobs

# hidden-state objectives (rmu) have their own masking tests (test_rmu.py): they take no logits
NAMES = sorted(n for n in OBJECTIVES if OBJECTIVES[n].inputs != "hidden")
LOGPROB_NAMES = [n for n in NAMES if OBJECTIVES[n].inputs == "logprobs"]  # those that take logp, mask, ref_logp
B, T, V = 3, 10, 17


def _labels():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :3] = -100  # prompt
    labels[0, :5] = -100  # a longer prompt
    labels[1, -3:] = -100  # right padding
    labels[2, 3:5] = -100  # a hole (e.g. a template token excluded from the loss)
    return labels


def _logits(seed):
    return 2 * torch.randn(B, T, V, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _off_answer_positions(labels):
    """[B, T] True at logits positions that do not predict an answer token (incl. the last position)."""
    off = torch.ones(B, T, dtype=torch.bool)
    off[:, :-1] = labels[:, 1:] == -100
    return off


def _scramble(x, where, seed):
    noise = 50 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(seed))
    return torch.where(where.reshape(where.shape + (1,) * (x.dim() - where.dim())), noise, x)


def _call(name, logp, mask, ref):
    """The objective (or nll) on a batch; a pair objective with the reversed batch as the alternate answers."""
    if name == "nll":
        return nll(logp, mask)
    spec = OBJECTIVES[name]
    alt = (logp.flip(0), mask.flip(0), ref.flip(0)) if spec.answers == PAIR else ()
    return spec.fn(logp, mask, ref, *alt)


def _from_logits(name, x, ref_logits, labels):
    """The loss of objective or regulariser `name` on policy logits x, through the inputs the engine gives it."""
    if name == "kl":
        return kl(x, ref_logits, labels, positions="answer")
    if name != "nll" and OBJECTIVES[name].inputs == "logits":
        return OBJECTIVES[name].fn(x, ref_logits, labels)
    logp, mask = token_logprobs(x, labels)
    ref, _ = token_logprobs(ref_logits, labels)
    return _call(name, logp, mask, ref)


def _loss_and_grad_from_logits(name, logits, ref_logits, labels):
    x = logits.clone().requires_grad_(True)
    out = _from_logits(name, x, ref_logits, labels)
    (g,) = torch.autograd.grad(out.loss, x)
    return out, g


@pytest.mark.parametrize("name", NAMES + ["nll", "kl"])
def test_prompt_and_padding_logits_do_not_change_loss_or_gradient(name):
    labels = _labels()
    logits, ref_logits = _logits(0), _logits(1)
    off = _off_answer_positions(labels)
    a, ga = _loss_and_grad_from_logits(name, logits, ref_logits, labels)
    b, gb = _loss_and_grad_from_logits(name, _scramble(logits, off, 5), _scramble(ref_logits, off, 6), labels)
    assert torch.equal(a.loss, b.loss) and a.count == b.count
    assert torch.equal(ga, gb)
    assert torch.all(ga[off] == 0)
    assert torch.isfinite(ga).all()


def _logp_batch():
    g = torch.Generator().manual_seed(11)
    logp = torch.log(0.05 + 0.9 * torch.rand(B, T, generator=g, dtype=torch.float64))
    ref = torch.log(0.05 + 0.9 * torch.rand(B, T, generator=g, dtype=torch.float64))
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[:, 0] = True
    return logp, mask, ref


@pytest.mark.parametrize("name", LOGPROB_NAMES + ["nll"])
def test_logp_values_off_the_mask_are_ignored(name):
    """Even values token_logprobs never emits there (large, positive) leave loss and gradient unchanged."""
    logp, mask, ref = _logp_batch()

    def run(lp, rp):
        x = lp.clone().requires_grad_(True)
        out = _call(name, x, mask, rp)
        (g,) = torch.autograd.grad(out.loss, x)
        return out, g

    a, ga = run(torch.where(mask, logp, 0.0), torch.where(mask, ref, 0.0))
    b, gb = run(_scramble(logp, ~mask, 1), _scramble(ref, ~mask, 2))
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(ga, gb) and torch.all(ga[~mask] == 0)
    assert torch.equal(a.weights, b.weights) and torch.equal(a.per_item.detach(), b.per_item.detach())


@pytest.mark.parametrize("name", NAMES + ["nll", "kl"])
def test_a_sequence_without_answer_tokens_adds_nothing(name):
    labels = _labels()
    logits, ref_logits = _logits(0), _logits(1)
    empty = labels.clone()
    empty[1] = -100  # sequence 1 has no answer tokens
    keep = [0, 2]
    with_empty, g_with = _loss_and_grad_from_logits(name, logits, ref_logits, empty)
    assert torch.isfinite(with_empty.loss) and torch.isfinite(g_with).all()
    assert torch.all(g_with[1] == 0)
    # Same loss as the batch without that row (the empty row is not a unit).
    ref_out = _from_logits(name, logits[keep], ref_logits[keep], labels[keep])
    torch.testing.assert_close(with_empty.loss, ref_out.loss, rtol=0, atol=1e-12)
    assert with_empty.count == ref_out.count


@pytest.mark.parametrize("name", NAMES + ["nll", "kl"])
def test_an_all_empty_micro_batch_gives_zero_loss_and_count(name):
    labels = torch.full((B, T), -100)
    out, g = _loss_and_grad_from_logits(name, _logits(0), _logits(1), labels)
    assert out.count == 0 and out.loss.item() == 0.0 and out.loss_sum.item() == 0.0
    assert torch.all(g == 0)
    assert out.metrics == {}  # statistics over no units are omitted, never NaN
