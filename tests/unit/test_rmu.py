"""RMU's losses (objectives/rmu.py) against hand-worked values and a float64 loop written here from the formula:

    per sequence s: mean over {t: labels[s, t] != -100} of sum_j (h[s, t, j] - target[s, t, j])^2 / d
    loss = mean over the sequences with at least one such t   (open-unlearning's compute_activation_loss)

the forget target c u (u: torch.rand(d) seeded, / its norm), the retain target theta_o's hidden states. Also: the
gradient (closed form 2 (h - target) / (d n_s S)), masking (values off the labels change nothing), dtypes, errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from dsunlearn.objectives import OBJECTIVES, control_direction, embed_diff, rmu

IGNORE = -100


def _labels():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, 7, IGNORE], [IGNORE] * 6, [IGNORE, 3, IGNORE, 4, 4, 4]])
    return labels  # row 1 has no label: not a unit


def _loop_reference(h, target, labels):
    """Element by element in float64 (no masks, no broadcasting)."""
    b, t, d = h.shape
    per_seq = []
    for s in range(b):
        rows = [i for i in range(t) if int(labels[s, i]) != IGNORE]
        if not rows:
            continue
        acc = 0.0
        for i in range(t):
            if i in rows:
                acc += sum((float(h[s, i, j]) - float(target[s, i, j])) ** 2 for j in range(d)) / d
        per_seq.append(acc / len(rows))
    return sum(per_seq) / len(per_seq), len(per_seq)


def test_hand_worked_forget_and_retain_values_and_gradient():
    # d = 2, one sequence, one labelled position, u = (0.6, 0.8), c = 5: c u = (3, 4); h = (3, 2)
    h = torch.tensor([[[9.0, 9.0], [3.0, 2.0]]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[IGNORE, 1]])
    terms = rmu(h, torch.tensor([0.6, 0.8], dtype=torch.float64), labels, steering_coeff=5.0)
    assert terms.count == 1 and terms.unit == "sequence"
    assert float(terms.loss_sum.detach()) == pytest.approx(2.0, abs=1e-12)  # (0 + 4) / 2
    (grad,) = torch.autograd.grad(terms.loss_sum, h)
    assert grad.tolist() == [[[0.0, 0.0], [0.0, -2.0]]]  # 2 (h - c u) / d at the label, 0 elsewhere
    ref = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]], dtype=torch.float64)
    h1 = torch.tensor([[[5.0, 5.0], [1.0, 1.0]]], dtype=torch.float64)
    assert float(embed_diff(h1, ref, labels).loss_sum) == pytest.approx(2.0, abs=1e-12)  # (0 + 4) / 2


@pytest.mark.parametrize("seed", [0, 1])
def test_forget_loss_and_gradient_equal_the_float64_loop(seed):
    g = torch.Generator().manual_seed(seed)
    labels = _labels()
    h = torch.randn(3, 6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    u = control_direction(8, seed=42)
    c = 6.5
    terms = rmu(h, u, labels, steering_coeff=c)
    want, n = _loop_reference(h.detach(), (c * u).expand(3, 6, 8), labels)
    assert terms.count == n == 2
    assert float(terms.loss_sum.detach()) / terms.count == pytest.approx(want, rel=1e-12)
    (grad,) = torch.autograd.grad(terms.loss_sum / terms.count, h)
    for s, t in [(0, 0), (0, 3), (1, 2), (2, 2), (2, 5)]:
        labelled = int(labels[s, t]) != IGNORE
        n_s = int((labels[s] != IGNORE).sum())
        want_g = 2 * (h[s, t].detach() - c * u) / (8 * n_s * n) if labelled else torch.zeros(8, dtype=torch.float64)
        assert torch.allclose(grad[s, t], want_g, rtol=1e-12, atol=1e-15), (s, t)


def test_retain_loss_equals_the_float64_loop_and_is_zero_at_theta_o():
    g = torch.Generator().manual_seed(3)
    labels = _labels()
    h, ref = (torch.randn(3, 6, 4, generator=g, dtype=torch.float64) for _ in range(2))
    terms = embed_diff(h, ref, labels)
    want, n = _loop_reference(h, ref, labels)
    assert terms.count == n and float(terms.loss_sum.detach()) / n == pytest.approx(want, rel=1e-12)
    assert float(embed_diff(ref, ref, labels).loss_sum) == 0.0


def test_positions_off_the_labels_and_empty_sequences_change_nothing():
    g = torch.Generator().manual_seed(4)
    labels = _labels()
    h = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    other = h.clone()
    other[labels == IGNORE] = 1e6  # prompt, padding, the label-less row: huge values
    u = control_direction(4, seed=0)
    a, b = rmu(h, u, labels), rmu(other.requires_grad_(), u, labels)
    assert float(a.loss_sum) == float(b.loss_sum.detach())
    (grad,) = torch.autograd.grad(b.loss_sum, other)
    assert bool((grad[labels == IGNORE] == 0).all())
    empty = rmu(h, u, torch.full((3, 6), IGNORE))
    assert empty.count == 0 and float(empty.loss_sum) == 0.0 and math.isfinite(float(empty.loss_sum))


def test_the_direction_is_a_seeded_uniform_unit_vector():
    u = control_direction(16, seed=7)
    assert u.dtype == torch.float64 and float(u.norm()) == pytest.approx(1.0, abs=1e-15)
    torch.manual_seed(7)  # torch.rand from a generator seeded with the seed, then normalised
    raw = torch.rand(16).double()
    assert torch.equal(u, raw / raw.norm())
    assert torch.equal(control_direction(16, seed=7), u) and not torch.equal(control_direction(16, seed=8), u)
    assert bool((u > 0).all())  # uniform in [0, 1): the positive orthant


def test_bf16_hidden_states_are_computed_in_float32():
    g = torch.Generator().manual_seed(5)
    labels = _labels()
    h = torch.randn(3, 6, 8, generator=g).to(torch.bfloat16)
    u = control_direction(8, seed=0)
    got = float(rmu(h, u, labels).loss_sum) / 2
    want, _ = _loop_reference(h.double(), (6.5 * u).expand(3, 6, 8), labels)
    assert got == pytest.approx(want, rel=1e-6)


def test_shape_errors_and_registry_entry():
    u = control_direction(4, seed=0)
    with pytest.raises(ValueError, match=r"hidden must be \[B, T, d\]"):
        rmu(torch.zeros(2, 4), u, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"direction must be \[d\]"):
        rmu(torch.zeros(1, 2, 4), torch.ones(3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_hidden"):
        embed_diff(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    spec = OBJECTIVES["rmu"]
    assert (spec.inputs, spec.unit, spec.retain_loss, spec.needs_reference) == (
        "hidden",
        "sequence",
        "embed_diff",
        False,
    )
    # layers k-2..k (from 0) and the pattern: the paper's 5, 6, 7 and mlp.down_proj.weight
    assert spec.trainable_layers(spec.defaults) == ((5, 6, 7), r"mlp\.down_proj\.weight")
    assert spec.trainable_layers({**spec.defaults, "layer": 1}) == ((0, 1), r"mlp\.down_proj\.weight")
    assert OBJECTIVES["npo"].trainable_layers(OBJECTIVES["npo"].defaults) is None
