"""GRU's variants on crafted gradient shards, against the formulas of docs/methods.md ("GRU") written here:

- what is rectified (`geometry.gru_project`): forget: g = GRU(g_f) + lambda g_reg; combined: g = GRU(g_f + lambda g_reg)
- what feeds the EMA: g_r, whatever it is (the retain NLL's or the KL's gradient; the engine picks it), never g_reg
- the cosine clip kappa: k = max(<h, G>, kappa ||h|| ||G||) / ||G||^2 instead of k = <h, G> / ||G||^2

By hand on 2-element vectors, then over several steps in float64 on a shard of four parameter fragments in four
layer groups (one process: the all_reduce of `ShardedGrad.dots` is the identity; the 2-rank case of the whole
update is `tests/distributed/test_unlearn_sharded.py::test_gru_variant_matches_float64_reference`).
"""

from __future__ import annotations

import math

import pytest
import torch

from dsunlearn.engine import shard as shard_mod
from dsunlearn.engine.shard import LiveGrad, ShardedGrad, ShardLayout
from dsunlearn.geometry.gru import GRU

NAMES = ["model.embed_tokens.weight", "model.layers.1.mlp.w", "model.layers.0.attn.w", "model.norm.weight"]
R2 = math.sqrt(2.0)


def _two(values) -> ShardedGrad:
    lay = ShardLayout.build([(NAMES[0], 2, 0, 2)], NAMES[:1], torch.device("cpu"))
    return ShardedGrad(torch.tensor(values, dtype=torch.float32), lay)


def _like(x: ShardedGrad, values) -> ShardedGrad:
    return ShardedGrad(torch.tensor(values, dtype=torch.float32), x.layout)


# g = (-1, 1) against G = c g_r = 0.8 (1, 0): <g, G> = -0.8, ||G||^2 = 0.64, ||g|| = sqrt 2, cos = -1/sqrt 2.
@pytest.mark.parametrize(
    "kappa, want, k, clipped",
    [
        (None, (0.0, 1.0), -1.25, False),  # k = -0.8 / 0.64: the whole conflict removed
        (-0.8, (0.0, 1.0), -1.25, False),  # cos = -0.707 >= -0.8: the same projection
        # cos < -0.5: k = -0.5 sqrt2 0.8 / 0.64 = -0.5 sqrt2 / 0.8; g + 0.5 sqrt2 (1, 0) = (-1 + sqrt2 / 2, 1)
        (-0.5, (-1.0 + R2 / 2, 1.0), -0.5 * R2 / 0.8, True),
    ],
)
def test_hand_worked_projection_and_cosine_clip(kappa, want, k, clipped):
    g = _two([-1.0, 1.0])
    g_r = _like(g, [1.0, 0.0])
    info = GRU(0.8, cos_clip=kappa).project(g, g_r)
    assert info.projected and info.clipped is clipped
    assert info.dot == pytest.approx(-0.8, rel=1e-6) and info.ema_norm == pytest.approx(0.8, rel=1e-6)
    assert info.cosine == pytest.approx(-1 / R2, rel=1e-6) and info.coef == pytest.approx(k, rel=1e-6)
    assert g.flat.tolist() == pytest.approx(want, abs=1e-6)
    if clipped:  # a residual conflict is left: <g', G> = (cos - kappa) ||g|| ||G|| = (-1/sqrt2 + 0.5) sqrt2 0.8
        assert float(g.flat[0]) * 0.8 == pytest.approx((-1 / R2 + 0.5) * R2 * 0.8, rel=1e-6)


def test_no_conflict_is_left_alone_with_or_without_clip():
    for kappa in (None, -0.5):
        g = _two([1.0, 1.0])
        info = GRU(0.8, cos_clip=kappa).project(g, _like(g, [1.0, 0.0]))
        assert not info.projected and not info.clipped and info.coef == 0.0
        assert g.flat.tolist() == [1.0, 1.0]


# g_f = gamma grad L_f = (-1, 1), grad L_reg = (0.25, 0.5), lambda = 2, EMA input g_r = (1, 0) -> G = (0.8, 0):
#   forget:   GRU((-1, 1)) + 2 (0.25, 0.5) = (0, 1) + (0.5, 1) = (0.5, 2)
#   combined: h = (-1, 1) + (0.5, 1) = (-0.5, 2), <h, G> = -0.4, k = -0.625, h + 0.625 G = (0, 2)
@pytest.mark.parametrize("combined, want, dot", [(False, (0.5, 2.0), -0.8), (True, (0.0, 2.0), -0.4)])
def test_hand_worked_forget_vs_combined(combined, want, dot):
    g = _two([-1.0, 1.0])
    g_reg, g_r = _like(g, [0.25, 0.5]), _like(g, [1.0, 0.0])
    info = GRU(0.8, combined=combined).update(g, g_reg, g_r, 2.0)
    assert info.projected and info.dot == pytest.approx(dot, rel=1e-6)
    assert g.flat.tolist() == pytest.approx(want, abs=1e-6)
    assert g_reg.flat.tolist() == [0.25, 0.5] and g_r.flat.tolist() == [1.0, 0.0]  # inputs untouched


def test_without_a_retain_term_both_variants_are_the_projection_alone():
    for combined in (False, True):
        g = _two([-1.0, 1.0])
        GRU(0.8, combined=combined).update(g, None, _like(g, [1.0, 0.0]), 2.0)
        assert g.flat.tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


# ---- several steps on a multi-fragment shard, against float64 on the whole vector ------------------------------


def _layout():
    # (name, numel, start, param_numel): four fragments, one a slice of its parameter, not in group order
    segs = [(NAMES[0], 10, 0, 10), (NAMES[1], 7, 3, 12), (NAMES[2], 5, 0, 5), (NAMES[3], 3, 0, 3)]
    return ShardLayout.build(segs, NAMES, torch.device("cpu"))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(shard_mod, "CHUNK", 4)  # the chunked float64 sums of `dots` cross fragment boundaries
    monkeypatch.setattr(shard_mod, "PIECE", 4)  # the one-pass kernels: several pieces per fragment, cut at its end


def _steps(n_steps: int = 6, n: int = 25):
    """(g_f, g_reg, g_r) per step, float64: g_f leans against g_r by a step-dependent amount (cosines to the EMA
    from -0.98 to +0.92, by variant), so that clipped, projected and untouched steps all occur."""
    gen = torch.Generator().manual_seed(7)
    lean = [-3.0, -1.2, 1.0, -6.0, -0.4, -1.5]
    out = []
    for t in range(n_steps):
        g_r = torch.randn(n, generator=gen, dtype=torch.float64)
        g_f = lean[t] * g_r + torch.randn(n, generator=gen, dtype=torch.float64)
        g_reg = 0.5 * g_r + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
        out.append((g_f, g_reg, g_r))
    return out


def _reference(steps, c, lam, combined, kappa):
    """docs/methods.md GRU, float64 on whole vectors: the update per step and (projected, clipped)."""
    ema, updates, flags = None, [], []
    for g_f, g_reg, g_r in steps:
        ema = c * g_r if ema is None else c * g_r + (1 - c) * ema
        h = g_f + lam * g_reg if combined else g_f.clone()
        dot, nsq, hn = float(h @ ema), float(ema @ ema), float(h.norm())
        projected, clipped = dot < 0 and nsq > 0, False
        if projected:
            cos = dot / (hn * nsq**0.5)
            if kappa is not None and cos < kappa:
                clipped, cos = True, kappa
            h = h - (hn * cos / nsq**0.5) * ema  # k = cos ||h|| / ||G||: = <h, G> / ||G||^2 unless clipped
        updates.append(h if combined else h + lam * g_reg)
        flags.append((projected, clipped))
    return updates, flags


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("kappa", [None, -0.5])
def test_steps_on_a_shard_match_float64(combined, kappa):
    c, lam, lay = 0.8, 1.5, _layout()
    steps = _steps(n=lay.numel)
    want, want_flags = _reference(steps, c, lam, combined, kappa)
    gru, flags = GRU(c, cos_clip=kappa, combined=combined), []
    for (g_f, g_reg, g_r), w in zip(steps, want, strict=True):
        g = ShardedGrad(g_f.float(), lay)
        info = gru.update(g, ShardedGrad(g_reg.float(), lay), ShardedGrad(g_r.float(), lay), lam)
        flags.append((info.projected, info.clipped))
        torch.testing.assert_close(g.flat.double(), w, rtol=0, atol=1e-5 * float(w.abs().max()))
    assert flags == want_flags
    assert {p for p, _ in flags} == {True, False}  # the crafted steps exercise both branches
    if kappa is not None:
        assert any(cl for _, cl in flags) and any(p and not cl for p, cl in flags)


def _live(values: torch.Tensor, lay: ShardLayout) -> LiveGrad:
    """A gradient held in one separate buffer per fragment (as DeepSpeed's are), read and written in place."""
    frags = [values[s.offset : s.offset + s.numel].float().clone() for s in lay.segments]
    return LiveGrad(None, None, lay, frags, None)


def _flat(live: LiveGrad) -> torch.Tensor:
    return torch.cat(live.frags).double()


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("kappa", [None, -0.5])
@pytest.mark.parametrize("ema_from_reg", [False, True])
def test_fused_update_into_the_live_buffer_matches_float64(combined, kappa, ema_from_reg):
    """The engine's path: g_f a copy scaled by gamma inside the pass, g_reg left in its (per-fragment) buffer and
    overwritten there by the update; the EMA input is g_reg itself (the retain NLL as L_reg) or a copy of its own."""
    c, lam, gamma, lay = 0.8, 1.5, 0.7, _layout()
    steps = _steps(n=lay.numel)
    if ema_from_reg:
        steps = [(g_f, g_reg, g_reg) for g_f, g_reg, _ in steps]
    want, want_flags = _reference([(gamma * g_f, g_reg, g_r) for g_f, g_reg, g_r in steps], c, lam, combined, kappa)
    gru, flags = GRU(c, cos_clip=kappa, combined=combined), []
    for (g_f, g_reg, g_r), w in zip(steps, want, strict=True):
        reg = _live(g_reg, lay)
        r = reg if ema_from_reg else ShardedGrad(g_r.float(), lay)
        u = ShardedGrad(g_f.float(), lay)
        info = gru.update(u, reg, r, lam, gamma, out=reg)
        flags.append((info.projected, info.clipped))
        torch.testing.assert_close(_flat(reg), w, rtol=0, atol=1e-5 * float(w.abs().max()))
        assert torch.equal(u.flat, g_f.float())  # the copied forget gradient is only read
    assert flags == want_flags and {p for p, _ in flags} == {True, False}


def test_clip_at_minus_one_is_the_plain_projection():
    """kappa = -1 bounds nothing (cos >= -1 always): the same updates as no clip, up to float32 rounding."""
    lay = _layout()
    steps = _steps(n=lay.numel)
    a, b = GRU(0.8), GRU(0.8, cos_clip=-1.0)
    for g_f, _, g_r in steps:
        x, y = ShardedGrad(g_f.float(), lay), ShardedGrad(g_f.float(), lay)
        a.project(x, ShardedGrad(g_r.float(), lay))
        b.project(y, ShardedGrad(g_r.float(), lay))
        torch.testing.assert_close(x.flat, y.flat, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kappa", [0.0, 0.5, -1.5, float("nan")])
def test_a_cosine_clip_outside_minus_one_to_zero_is_refused(kappa):
    with pytest.raises(ValueError, match=r"\[-1, 0\)"):
        GRU(0.8, cos_clip=kappa)
