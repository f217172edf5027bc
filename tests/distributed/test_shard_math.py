"""ShardedGrad arithmetic on one process (no process group: the all_reduce is a no-op), against torch on the
whole vector; chunked float64 accumulation exercised with a tiny CHUNK, the one-pass kernels (Gram matrix, linear
combination into a per-fragment buffer, G-effect) with a tiny PIECE. The 2-rank checks are in test_shard.py."""

import pytest
import torch

from dsunlearn.engine import shard as shard_mod
from dsunlearn.engine.ds_internals import replicated_slice
from dsunlearn.engine.shard import LiveGrad, ShardedGrad, ShardLayout, combine_into, gram, pieces
from dsunlearn.geometry.geffect import g_effect

NAMES = ["model.embed_tokens.weight", "model.layers.1.mlp.w", "model.layers.0.attn.w", "model.norm.weight", "lm_head.w"]


def _layout():
    # (name, numel, start, param_numel): fragments of parameters, not in group order, one partial
    segs = [(NAMES[0], 10, 0, 10), (NAMES[1], 7, 3, 12), (NAMES[2], 5, 0, 5), (NAMES[3], 3, 0, 3), (NAMES[4], 9, 0, 9)]
    return ShardLayout.build(segs, NAMES, torch.device("cpu"))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(shard_mod, "CHUNK", 4)


def _pair():
    lay = _layout()
    g = torch.Generator().manual_seed(0)
    return tuple(ShardedGrad(torch.randn(lay.numel, generator=g), lay) for _ in range(2))


def test_layout_groups_and_offsets():
    lay = _layout()
    assert lay.groups == ("embed", "layers.0", "layers.1", "norm", "lm_head")
    assert [s.offset for s in lay.segments] == [0, 10, 17, 22, 25] and lay.numel == 34
    assert [s.group for s in lay.segments] == [0, 2, 1, 3, 4]
    assert lay.group_ids().tolist() == [0] * 10 + [2] * 7 + [1] * 5 + [3] * 3 + [4] * 9


def test_inner_products_match_torch():
    a, b = _pair()
    x, y = a.flat.double(), b.flat.double()
    assert a.dot(b) == pytest.approx(float(x @ y), rel=1e-14)
    assert a.norm_sq() == pytest.approx(float(x @ x), rel=1e-14)
    assert a.norm() == pytest.approx(float(x.norm()), rel=1e-14)
    ids = torch.tensor([s.group for s in a.layout.segments for _ in range(s.numel)])  # from the segments
    want = torch.zeros(5, dtype=torch.float64).index_add_(0, ids, x * y)
    torch.testing.assert_close(a.per_group_dot(b), want, rtol=1e-14, atol=0)
    batch = ShardedGrad.inner_products([(a, b), (a, a), (b, b)])
    assert batch.shape == (3, 5) and batch.dtype == torch.float64
    torch.testing.assert_close(batch.sum(1), torch.stack([x @ y, x @ x, y @ y]), rtol=1e-14, atol=0)
    totals = ShardedGrad.dots([(a, b), (a, a), (b, b)])
    torch.testing.assert_close(totals, torch.stack([x @ y, x @ x, y @ y]), rtol=1e-14, atol=0)


def test_in_place_ops_and_clone():
    a, b = _pair()
    a0, b0 = a.flat.clone(), b.flat.clone()
    c = a.clone()
    assert c.axpy(-0.5, b) is c and c.scale_(2.0) is c
    torch.testing.assert_close(c.flat, 2 * (a0 - 0.5 * b0))
    assert torch.equal(a.flat, a0)  # the clone owns its memory
    assert torch.equal(a.zeros_like().flat, torch.zeros_like(a0))


def test_mixing_layouts_is_refused():
    a, _ = _pair()
    other = ShardedGrad(torch.zeros(34), _layout())  # same shape, different layout object
    with pytest.raises(ValueError):
        a.dot(other)
    with pytest.raises(ValueError):
        a.axpy(1.0, other)
    with pytest.raises(ValueError):
        ShardedGrad(torch.zeros(3), a.layout)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("numel", [1, 5, 63, 64])
def test_replicated_slices_tile_each_parameter(numel, world):
    spans = [replicated_slice(numel, r, world) for r in range(world)]
    pos = 0
    for start, k in spans:
        assert start == pos and k >= 0
        pos += k
    assert pos == numel and max(k for _, k in spans) - min(k for _, k in spans) <= 1


# ---- the one-pass kernels: `gram`, `combine_into`, `g_effect` (pieces of 4 elements, cut at fragment ends) -----


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(shard_mod, "PIECE", 4)


def test_gram_by_hand():
    # a = (1, 2, 0), b = (3, -1, 2) in one fragment: <a,a> = 5, <a,b> = 1, <b,b> = 14
    lay = ShardLayout.build([(NAMES[0], 3, 0, 3)], NAMES[:1], torch.device("cpu"))
    a, b = ShardedGrad(torch.tensor([1.0, 2.0, 0.0]), lay), ShardedGrad(torch.tensor([3.0, -1.0, 2.0]), lay)
    K = gram([a, b])
    assert K.dtype == torch.float64 and K.tolist() == [[5.0, 1.0], [1.0, 14.0]]


def test_pieces_stay_inside_fragments(small_pieces):
    lay = _layout()
    ps = pieces(lay, torch.device("cpu"))
    assert [(lo, hi) for lo, hi, _, _ in ps][:5] == [(0, 4), (4, 8), (8, 10), (10, 14), (14, 17)]
    assert sum(hi - lo for lo, hi, _, _ in ps) == lay.numel and all(hi - lo <= 4 for lo, hi, _, _ in ps)
    for lo, hi, si, g in ps:
        s = lay.segments[si]
        assert s.offset <= lo < hi <= s.offset + s.numel and g == s.group


def _live(values: torch.Tensor, lay) -> LiveGrad:
    """One buffer per fragment, as DeepSpeed keeps them: read and written in place."""
    return LiveGrad(None, None, lay, [values[s.offset : s.offset + s.numel].clone() for s in lay.segments], None)


def test_gram_per_group_matches_float64(small_pieces):
    a, b = _pair()
    c = _live(torch.randn(a.layout.numel, generator=torch.Generator().manual_seed(3)), a.layout)
    vs = [a.flat.double(), b.flat.double(), c.to_shard().flat.double()]
    ids = a.layout.group_ids()
    want = torch.zeros(5, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            want[:, i, j] = torch.zeros(5, dtype=torch.float64).index_add_(0, ids, vs[i] * vs[j])
    got = gram([a, b, c], per_group=True)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)  # float64 products per piece of 4
    torch.testing.assert_close(gram([a, b, c]), want.sum(0), rtol=1e-13, atol=0)
    assert torch.equal(got, got.transpose(1, 2))


@pytest.mark.parametrize("into", ["live", "copy", "fresh"])
def test_combine_into_with_and_without_alias(small_pieces, into):
    a, b = _pair()
    want = 0.5 * a.flat.double() - 2.0 * b.flat.double()
    if into == "live":  # out is b's own buffer: b is read, then overwritten piece by piece
        out = _live(b.flat, b.layout)
        combine_into(out, [(0.5, a), (-2.0, out)])
        got = out.to_shard().flat
    elif into == "copy":
        out = b.clone()
        combine_into(out, [(0.5, a), (-2.0, out)])
        got = out.flat
    else:
        out = a.zeros_like()
        combine_into(out, [(0.5, a), (-2.0, b)])
        got = out.flat
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("negative_risk", [False, True])
def test_g_effect_matches_float64(small_pieces, negative_risk):
    obj, risk_f = _pair()
    risk_r = _live(torch.randn(obj.layout.numel, generator=torch.Generator().manual_seed(5)), obj.layout)
    if negative_risk:  # GA: grad R(D_f) = -grad L_u, passed as None
        risk_f_ref = -obj.flat.double()
        ge = g_effect(obj, None, risk_r)
    else:
        risk_f_ref = risk_f.flat.double()
        ge = g_effect(obj, risk_f, risk_r)
    o, rr, ids = obj.flat.double(), risk_r.to_shard().flat.double(), obj.layout.group_ids()
    per = lambda x: torch.zeros(5, dtype=torch.float64).index_add_(0, ids, x)  # noqa: E731
    torch.testing.assert_close(ge.e_u_groups, per(risk_f_ref * o), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ge.e_r_groups, per(rr * o), rtol=1e-12, atol=1e-15)
    want_norms = torch.stack([o @ o, risk_f_ref @ risk_f_ref, rr @ rr])
    torch.testing.assert_close(ge.norms_sq, want_norms, rtol=1e-12, atol=0)
    assert ge.e_u == pytest.approx(float(risk_f_ref @ o), rel=1e-12)
    if negative_risk:
        assert ge.cos_u == pytest.approx(-1.0, abs=1e-12)
