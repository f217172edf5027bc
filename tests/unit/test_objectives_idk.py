"""IdkNLL and IdkDPO: the docstrings' hand-worked examples, float64 references written from the formulas (loss
and gradient, plus finite differences of the reference), and the paired micro-batch the engine builds (its
padding changes nothing); masking: test_objectives_masking.py.

The references use Python floats and `math` only; they never call the implementation.
"""

import math

import pytest
import torch

from dsunlearn.data.collate import Encoded
from dsunlearn.engine.unlearn_engine import MicroBatch
from dsunlearn.objectives import OBJECTIVES, PAIR, dpo, idk_nll, token_logprobs
from dsunlearn.unlearn_losses import objective_loss

LN = math.log
TOL = {"rtol": 0, "atol": 1e-10}


def _t(rows):
    return torch.as_tensor(rows, dtype=torch.float64)


def _close(actual, expected, **tol):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), _t(expected), **(tol or TOL))


# ---------------------------------------------------------------- hand-worked examples (as in the docstrings)


def test_idk_nll_hand_example():
    out = idk_nll(_t([[LN(1 / 2), LN(1 / 4), 0.0]]), torch.tensor([[True, True, False]]))
    _close(out.loss_sum, 3 * LN(2))
    _close(out.loss, 1.5 * LN(2))
    _close(out.loss, 1.039721, rtol=0, atol=1e-6)
    assert out.count == 2 and out.unit == "token"
    _close(out.weights, [[1, 1, 0]])


def test_dpo_hand_example():
    logp = _t([[LN(1 / 2), LN(1 / 2)], [LN(1 / 4), 0.0]])
    ref = _t([[LN(1 / 2), LN(1 / 2)], [LN(1 / 2), 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    alt, alt_ref = _t([[LN(1 / 3)], [LN(1 / 2)]]), _t([[LN(1 / 3)], [LN(1 / 4)]])
    out = dpo(logp, mask, ref, alt, torch.ones(2, 1, dtype=torch.bool), alt_ref, beta=1.0)
    _close(out.per_item.detach(), [2 * LN(2), 2 * LN(5 / 4)])
    _close(out.loss, LN(5 / 2))
    _close(out.loss, 0.916291, rtol=0, atol=1e-6)
    _close(out.weights, [1.0, 2 / 5])
    assert out.count == 2 and out.unit == "sequence"
    _close(out.metrics["margin_mean"], LN(4) / 2)
    _close(out.metrics["alt_seq_logp_mean"], (LN(1 / 3) + LN(1 / 2)) / 2)
    _close(out.metrics["seq_logp_mean"], (LN(1 / 4) + LN(1 / 4)) / 2)


def test_dpo_starts_at_two_over_beta_ln_two():
    """At step 0 the policy is the reference: every margin is 0 and the loss is (2/beta) ln 2 whatever the data."""
    logp, mask, _ = _random_pairs(0)[:3]
    alt, alt_mask = _random_pairs(1)[3:5]
    out = dpo(logp, mask, logp, alt, alt_mask, alt)  # beta 0.1, open-unlearning's default
    _close(out.loss, 20 * LN(2))
    _close(out.weights, [1.0, 0.0, 1.0, 0.0, 1.0])  # pairs 1 and 3 lack answer tokens: not units, weight 0


# ---------------------------------------------------------------- float64 references from the formulas


def _random_pairs(seed, b=5, t=7, t2=4):
    """Forget answers [b, t] and refusals [b, t2] with their masks and reference log-probs; some rows empty."""
    g = torch.Generator().manual_seed(seed)
    logp = torch.log(0.05 + 0.9 * torch.rand(b, t, generator=g, dtype=torch.float64))
    ref = torch.log(0.05 + 0.9 * torch.rand(b, t, generator=g, dtype=torch.float64))
    alt = torch.log(0.05 + 0.9 * torch.rand(b, t2, generator=g, dtype=torch.float64))
    alt_ref = torch.log(0.05 + 0.9 * torch.rand(b, t2, generator=g, dtype=torch.float64))
    mask, alt_mask = torch.rand(b, t, generator=g) < 0.7, torch.rand(b, t2, generator=g) < 0.7
    mask[:, 0] = alt_mask[:, 0] = True
    mask[1] = False  # pair 1: no forget-answer token, not a unit
    alt_mask[3] = False  # pair 3: no refusal token, not a unit
    z = torch.zeros((), dtype=torch.float64)
    return torch.where(mask, logp, z), mask, torch.where(mask, ref, z), torch.where(alt_mask, alt, z), alt_mask, alt_ref


def _rows(x):
    return x.tolist()


def ref_dpo(logp, mask, ref, alt, alt_mask, alt_ref, beta):
    """(loss, d loss / d logp, d loss / d alt) from the formula; units = pairs with tokens on both sides."""
    lp, m, rp, ap, am, arp = map(_rows, (logp, mask, ref, alt, alt_mask, alt_ref))
    units = [b for b in range(len(lp)) if any(m[b]) and any(am[b])]
    losses, g_lose, g_win = [], [[0.0] * len(lp[0]) for _ in lp], [[0.0] * len(ap[0]) for _ in ap]
    for b in units:
        l_l = sum(x for x, k in zip(lp[b], m[b], strict=True) if k)
        l_lr = sum(x for x, k in zip(rp[b], m[b], strict=True) if k)
        l_w = sum(x for x, k in zip(ap[b], am[b], strict=True) if k)
        l_wr = sum(x for x, k in zip(arp[b], am[b], strict=True) if k)
        margin = (l_w - l_wr) - (l_l - l_lr)
        losses.append(-(2 / beta) * math.log(1 / (1 + math.exp(-beta * margin))))
        w = 2 / (1 + math.exp(beta * margin))  # 2 sigmoid(-beta m) = -dL_s/dm
        for t, k in enumerate(m[b]):
            g_lose[b][t] = w / len(units) if k else 0.0
        for t, k in enumerate(am[b]):
            g_win[b][t] = -w / len(units) if k else 0.0
    return sum(losses) / len(units), g_lose, g_win


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_dpo_loss_and_gradient_equal_the_formula(seed, beta):
    logp, mask, ref, alt, alt_mask, alt_ref = _random_pairs(seed)
    x, y = logp.clone().requires_grad_(True), alt.clone().requires_grad_(True)
    out = dpo(x, mask, ref, y, alt_mask, alt_ref, beta=beta)
    out.loss.backward()
    want, g_lose, g_win = ref_dpo(logp, mask, ref, alt, alt_mask, alt_ref, beta)
    _close(out.loss, want)
    assert out.count == 3  # pairs 1 and 3 are not units
    _close(x.grad, g_lose)
    _close(y.grad, g_win)


def test_the_formula_gradient_is_the_finite_difference_of_the_formula_loss():
    """The gradient the references above use, checked on the reference loss itself (central differences)."""
    logp, mask, ref, alt, alt_mask, alt_ref = _random_pairs(4)
    _, g_lose, g_win = ref_dpo(logp, mask, ref, alt, alt_mask, alt_ref, 0.7)
    h = 1e-6
    for tensor, grad, where in ((logp, g_lose, mask), (alt, g_win, alt_mask)):
        for b, t in where.nonzero().tolist()[:6]:
            plus, minus = tensor.clone(), tensor.clone()
            plus[b, t] += h
            minus[b, t] -= h
            args = [logp, mask, ref, alt, alt_mask, alt_ref]
            i = 0 if tensor is logp else 3
            lp = ref_dpo(*[plus if k == i else a for k, a in enumerate(args)], 0.7)[0]
            lm = ref_dpo(*[minus if k == i else a for k, a in enumerate(args)], 0.7)[0]
            assert (lp - lm) / (2 * h) == pytest.approx(grad[b][t], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_idk_nll_loss_and_gradient_equal_the_formula(seed):
    _, _, _, alt, alt_mask, _ = _random_pairs(seed)
    y = alt.clone().requires_grad_(True)
    out = idk_nll(y, alt_mask)
    out.loss.backward()
    tokens = [x for b, row in enumerate(_rows(alt)) for x, k in zip(row, _rows(alt_mask)[b], strict=True) if k]
    _close(out.loss, -sum(tokens) / len(tokens))
    _close(y.grad, [[-1 / len(tokens) if k else 0.0 for k in row] for row in _rows(alt_mask)])


def test_dpo_descends_on_the_refusal_and_ascends_on_the_forget_answer():
    """Logits as leaf parameters: one descent step raises every refusal token's probability and lowers every
    forget-answer token's (the weight is positive on both sides)."""
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 11, (4, 8), generator=g)
    labels[:, :3] = -100
    logits = torch.randn(4, 8, 11, dtype=torch.float64, generator=g).requires_grad_(True)
    logp, mask = token_logprobs(logits, labels)
    b = 2  # rows 0-1 forget answers, rows 2-3 their refusals
    ref = logp.detach() + 0.2
    dpo(logp[:b], mask[:b], ref[:b], logp[b:], mask[b:], ref[b:], beta=0.5).loss.backward()
    with torch.no_grad():
        new, _ = token_logprobs(logits - 0.5 * logits.grad, labels)
    assert torch.all(new[:b][mask[:b]] < logp.detach()[:b][mask[:b]])
    assert torch.all(new[b:][mask[b:]] > logp.detach()[b:][mask[b:]])


def test_bad_inputs_raise():
    logp, mask, ref, alt, alt_mask, alt_ref = _random_pairs(0)
    with pytest.raises(ValueError, match="ref_logp"):
        dpo(logp, mask, ref, alt, alt_mask, None)
    with pytest.raises(ValueError, match="alternate answers for"):
        dpo(logp, mask, ref, alt[:2], alt_mask[:2], alt_ref[:2])
    with pytest.raises(ValueError, match="beta"):
        dpo(logp, mask, ref, alt, alt_mask, alt_ref, beta=0.0)


# ---------------------------------------------------------------- the paired micro-batch of the engine


def _encoded(seed: int, n_prompt: int, n_answer: int) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 13, (n_prompt + n_answer,), generator=g).tolist()
    return Encoded(ids, [-100] * n_prompt + ids[n_prompt:], n_prompt)


def _item_logits(kind: int, item: int, length: int) -> torch.Tensor:
    """Logits of one encoding: a function of (which answer, item, position) only, never of the batch."""
    return 2 * torch.randn(length, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(100 * kind + item))


def _batch_logits(mb: MicroBatch, lengths: list[list[int]], noise_seed: int) -> torch.Tensor:
    """[2B, T, V] logits of a paired micro-batch: each row its item's own logits, the padding random."""
    b, t = len(mb.indices), mb.input_ids.shape[1]
    g = torch.Generator().manual_seed(noise_seed)
    out = 50 * torch.randn(2 * b, t, 13, dtype=torch.float64, generator=g)
    for kind in (0, 1):
        for r, i in enumerate(mb.indices):
            n = lengths[kind][i]
            out[kind * b + r, :n] = _item_logits(kind, i, n)
    return out


def test_a_paired_micro_batch_gives_each_pair_the_loss_of_its_own_tensors():
    """rows [0, B) forget answers, [B, 2B) refusals, padded together: the loss (and the per-pair values) equal
    dpo on each item's unpadded tensors, whatever the other items of the batch make the padding."""
    forget = [_encoded(i, 3 + i % 2, 4 + i) for i in range(4)]
    alt = [_encoded(50 + i, 3 + i % 2, 2 + 5 * (i == 3)) for i in range(4)]  # item 3's refusal is the longest
    lengths = [[len(e.input_ids) for e in forget], [len(e.input_ids) for e in alt]]

    def own(kind, i):  # (logp, mask) of one encoding alone, [1, len - 1]
        enc = (forget, alt)[kind][i]
        return token_logprobs(_item_logits(kind, i, len(enc.input_ids))[None], torch.tensor([enc.labels]))

    # theta_o's log-probs per item as `precompute_forget_ref` stores them: shifted, the item's own length, float32
    refs = tuple([(own(k, i)[0][0] - 0.1 * (i + 1)).float() for i in range(4)] for k in (0, 1))
    spec, params = OBJECTIVES["dpo"], {"beta": 0.5}
    assert spec.answers == PAIR and spec.needs_reference

    def pair_loss(indices, noise_seed):
        mb = MicroBatch.build_pairs(forget, alt, indices, pad=0, device="cpu", refs=refs)
        assert mb.paired and mb.input_ids.shape[0] == 2 * len(indices)
        loss, stats = objective_loss(spec, params, 1.0, float(len(indices)))(mb, _batch_logits(mb, lengths, noise_seed))
        return loss, stats

    want = []
    for i in range(4):
        (lp, m), (ap, am) = own(0, i), own(1, i)
        want.append(dpo(lp, m, refs[0][i][None], ap, am, refs[1][i][None], beta=0.5).loss_sum)
    small, _ = pair_loss([0, 1], noise_seed=1)
    _close(small, (want[0] + want[1]).detach() / 2)
    wide, stats = pair_loss([0, 1, 3, 2], noise_seed=2)  # item 3 widens every row's padding
    _close(wide, sum(want).detach() / 4)
    assert stats["loss_sum"] == pytest.approx(float(sum(want)), rel=1e-12)


def test_a_pair_objective_refuses_an_unpaired_batch():
    forget = [_encoded(i, 3, 4) for i in range(2)]
    mb = MicroBatch.build(forget, [0, 1], 0, "cpu", [torch.zeros(6), torch.zeros(6)])
    fn = objective_loss(OBJECTIVES["dpo"], {"beta": 0.1}, 1.0, 2.0)
    with pytest.raises(ValueError, match="paired micro-batch"):
        fn(mb, torch.zeros(2, 7, 13, dtype=torch.float64))
