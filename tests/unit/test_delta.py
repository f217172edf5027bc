"""UIPE deltas without DeepSpeed: `exact_delta`, the rank-file writer `save_delta_shard` and `extrapolate`.

Rank files are written by the real `save_delta_shard` with `dist.rank/world_size` and the fragment getter
monkeypatched (a "world" of hand-chosen, uneven fragments: a parameter split 3 ways, one held whole by one
rank, a rank holding nothing of a parameter). The hand-made theta_o / theta_u contain the elements where a
plain fp32 difference fails: sign flips, |u| << |o|, zeros, equal values.

Exactness checked:
- exact_delta: fl32(o + d) == u at every element it does not report, and every reported element is truly
  unreachable (no fp32 d within +-256 ulps of fl32(u - o) reaches u).
- extrapolate(alpha=0) == theta_u bit for bit, fix-up elements included; alpha=0.5 equals the fp32 formula
  o + fl32(1.5) d (u + fl32(0.5) d at the fix-ups) bit for bit and the float64 o + 1.5 (u - o) within 2 fp32
  ulps of the largest magnitude involved; the result does not depend on how many ranks wrote the deltas.
- user errors: hash mismatch, incomplete rank set, not a delta file, existing output dir -> RunError.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsunlearn import dist
from dsunlearn.engine import delta as delta_mod
from dsunlearn.engine.delta import exact_delta, save_delta_shard
from dsunlearn.errors import RunError
from dsunlearn.manifest import write_manifest
from dsunlearn.uipe.delta_format import META_KEY, model_hash, read_delta_meta
from dsunlearn.uipe.extrapolate import extrapolate


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _reachable(o: float, u: float, d0: float, window: int = 256) -> bool:
    """Is there an fp32 d within +-window ulps of d0 with fl32(o + d) == u (bit for bit)?"""
    ot, ut = torch.tensor([o]), torch.tensor([u])
    for target in (float("inf"), float("-inf")):
        d = torch.tensor([d0])
        for _ in range(window):
            if _bits(ot + d).item() == _bits(ut).item():
                return True
            d = torch.nextafter(d, torch.tensor([target]))
    return False


# (o, u): the cases where fl32(u - o) alone does not give o + d == u, and the easy ones around them.
CRAFTED = [
    (1.0, -1.0),  # sign flip, same magnitude
    (3.0e-3, -7.0e-4),  # sign flip, |u| < |o|
    (-2.5e-5, 1.3e-3),  # sign flip, |u| >> |o|
    (1.0, 1.0e-10),  # |u| << |o|: only multiples of ulp(1) are reachable
    (-0.75, -3.0e-9),
    (0.1, 0.1000001),  # nearby values (Sterbenz: exact)
    (0.0, 0.37),  # zeros
    (0.37, 0.0),
    (0.0, 0.0),
    (0.5, 0.5),  # equal values: d = 0
    (-1.25e-3, -1.25e-3),
    (16777216.0, 1.0),  # 2^24 -> 1: d = -(2^24 - 1) exactly representable
    (1.0e30, -1.0e30),
]


def test_exact_delta_crafted_cases():
    o = torch.tensor([c[0] for c in CRAFTED], dtype=torch.float32)
    u = torch.tensor([c[1] for c in CRAFTED], dtype=torch.float32)
    d, n_bad = exact_delta(u, o)
    assert d.dtype == torch.float32
    ok = (o + d) == u
    assert int((~ok).sum()) == n_bad
    # The two |u| << |o| cases cannot be reached by any fp32 d; everything else is exact.
    assert (~ok).nonzero().view(-1).tolist() == [3, 4]
    for i in range(len(CRAFTED)):
        if not ok[i]:
            assert not _reachable(o[i].item(), u[i].item(), d[i].item())
    # equal values give a zero delta, and d stays the delta nearest to u - o (within an ulp of |u|, |o|)
    assert d[9].item() == 0.0 and d[10].item() == 0.0
    err = (d.double() - (u.double() - o.double())).abs()
    scale = torch.maximum(u.double().abs(), o.double().abs())
    assert bool((err <= scale * 2.0**-23).all())


def test_exact_delta_random_every_reported_element_is_unreachable():
    g = torch.Generator().manual_seed(0)
    o = torch.randn(20000, generator=g) * 10.0 ** torch.randint(-6, 2, (20000,), generator=g)
    step = torch.randn(20000, generator=g) * 10.0 ** torch.randint(-6, 1, (20000,), generator=g)
    u = (o + step).float()
    u[:500] = -o[:500] * 0.01  # sign flips with |u| << |o|
    d, n_bad = exact_delta(u, o)
    bad = ((o + d) != u).nonzero().view(-1)
    assert n_bad == bad.numel() > 0
    assert bool(((o + d) == u)[~torch.isin(torch.arange(20000), bad)].all())
    for i in bad[:200].tolist():
        assert not _reachable(o[i].item(), u[i].item(), d[i].item(), window=64)


# ---- a hand-made model, its "unlearned" version and delta files from a fake world of ranks -------------


# A real (tiny, tied) Llama: extrapolate loads the original with from_pretrained, as the run did.
A, B, C = "model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"
UNTOUCHED = "model.norm.weight"  # no delta: written unchanged


def _llama_dir(tmp: Path, values: dict[str, torch.Tensor]) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny LlamaForCausalLM (vocab 7, hidden 4, 1 layer, MLP 13) with `values` set, saved; its state."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=7, hidden_size=4, intermediate_size=13, num_hidden_layers=1, num_attention_heads=1,
                      num_key_value_heads=1, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, v in values.items():
            dict(m.named_parameters())[n].copy_(v)
    model = tmp / "orig"
    m.save_pretrained(model)
    (model / "tokenizer.json").write_text("{}")
    return model, {n: p.detach().clone() for n, p in m.named_parameters()}


def _make_models(tmp: Path) -> tuple[Path, dict, dict]:
    g = torch.Generator().manual_seed(1)
    o = {
        A: torch.randn(7, 4, generator=g),
        B: torch.randn(4, 13, generator=g) * 1e-3,
        C: torch.randn(4, 4, generator=g),
    }
    u = {k: (v + 1e-3 * torch.randn(v.shape, generator=g)).float() for k, v in o.items()}
    flat_o, flat_u = o[A].view(-1), u[A].view(-1)
    for i, (ov, uv) in enumerate(CRAFTED):  # the crafted elements go into A
        flat_o[i], flat_u[i] = ov, uv
    u[B].view(-1)[:4] = -o[B].view(-1)[:4] * 1e-4  # sign flips with |u| << |o| in another tensor too
    model, full = _llama_dir(tmp, o)
    return model, o, {**full, **u}


# rank -> {name: (start, numel)}: A split 3 ways (uneven), B whole on rank 1, C on 0 and 2.
LAYOUT = {0: {A: (0, 10), C: (0, 8)}, 1: {A: (10, 8), B: (0, 52)}, 2: {A: (18, 10), C: (8, 8)}}


def _write_deltas(monkeypatch, out: Path, o: dict, u: dict, layout: dict, original_hash: str) -> Path:
    """Write rank{r}.safetensors for each rank of `layout` with the real save_delta_shard."""
    out.mkdir(parents=True, exist_ok=True)
    named = [(n, torch.nn.Parameter(o[n].clone())) for n in o]
    world = len(layout)
    monkeypatch.setattr(dist, "world_size", lambda: world)
    for r, frags in layout.items():
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        orig = {n: (o[n].reshape(-1)[a : a + k].clone(), a) for n, (a, k) in frags.items()}

        def fragment(engine, p, frags=frags):
            name = next(n for n, q in named if q is p)
            if name not in frags:
                return None
            a, k = frags[name]
            return u[name].reshape(-1)[a : a + k], a

        monkeypatch.setattr(delta_mod, "get_local_param_fragment", fragment)
        save_delta_shard(None, named, orig, out, original_hash)
    monkeypatch.undo()
    write_manifest(out)  # as `dsunlearn unlearn` does once every rank has written
    return out


@pytest.fixture
def hand_made(tmp_path, monkeypatch):
    model, o, u = _make_models(tmp_path)
    h = model_hash(model)
    deltas = _write_deltas(monkeypatch, tmp_path / "delta", o, u, LAYOUT, h)
    return model, o, u, deltas


def _fp32_formula(o: torch.Tensor, u: torch.Tensor, d: torch.Tensor, fix: torch.Tensor, alpha: float):
    """o + fl32(1 + alpha) d in fp32, and u + fl32(alpha) d at the fix-up elements."""
    one_a, a = torch.tensor(1.0 + alpha, dtype=torch.float32), torch.tensor(alpha, dtype=torch.float32)
    return torch.where(fix, u + a * d, o + one_a * d)


def _assemble(delta_dir: Path, name: str, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(full fp32 delta of `name`, bool mask of its fix-up elements) from the rank files."""
    d, fix = torch.zeros(numel), torch.zeros(numel, dtype=torch.bool)
    for m in read_delta_meta(delta_dir):
        if name not in m["params"]:
            continue
        pm, t = m["params"][name], load_file(m["file"])
        a, k = pm["start"], pm["fragment_numel"]
        d[a : a + k] = t[name]
        if f"{name}::fix_idx" in t:
            fix[a + t[f"{name}::fix_idx"]] = True
    return d, fix


def test_delta_files_metadata_and_fixups(hand_made):
    model, o, u, deltas = hand_made
    metas = read_delta_meta(deltas)
    assert [m["rank"] for m in metas] == [0, 1, 2] and {m["world_size"] for m in metas} == {3}
    assert {m["original_hash"] for m in metas} == {model_hash(model)}
    assert metas[1]["params"][B] == {"shape": [4, 13], "numel": 52, "start": 0, "fragment_numel": 52}
    assert B not in metas[0]["params"] and C not in metas[1]["params"]
    n_fix = sum(m["inexact"] for m in metas)
    assert n_fix >= 6  # the 2 crafted |u| << |o| elements + 4 in b.weight
    for name in (A, B):
        d, fix = _assemble(deltas, name, o[name].numel())
        assert int(fix.sum()) > 0
        ov, uv = o[name].reshape(-1), u[name].reshape(-1)
        assert bool(((ov + d) == uv)[~fix].all()) and not bool(((ov + d) == uv)[fix].any())
    for m in metas:  # fix_u holds theta_u's exact values at the fix-up indices of the fragment
        t = load_file(m["file"])
        for name, pm in m["params"].items():
            if f"{name}::fix_idx" in t:
                idx = t[f"{name}::fix_idx"] + pm["start"]
                assert torch.equal(_bits(t[f"{name}::fix_u"]), _bits(u[name].reshape(-1)[idx]))


def test_extrapolate_alpha0_is_theta_u_bit_for_bit(hand_made, tmp_path):
    model, o, u, deltas = hand_made
    out = extrapolate(model, deltas, 0.0, tmp_path / "a0")
    got = load_file(str(out / "model.safetensors"))
    assert sorted(got) == sorted(u)
    for k in u:
        assert torch.equal(_bits(got[k]), _bits(u[k])), k
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("alpha", [0.5, -1.0, 2.0])
def test_extrapolate_matches_fp32_formula_and_float64_reference(hand_made, tmp_path, alpha):
    model, o, u, deltas = hand_made
    got = load_file(str(extrapolate(model, deltas, alpha, tmp_path / "x") / "model.safetensors"))
    assert torch.equal(got[UNTOUCHED], u[UNTOUCHED])
    for name in o:
        ov, uv = o[name].reshape(-1), u[name].reshape(-1)
        d, fix = _assemble(deltas, name, ov.numel())
        want = _fp32_formula(ov, uv, d, fix, alpha)
        assert torch.equal(_bits(got[name].reshape(-1)), _bits(want)), name
        ref = ov.double() + (1.0 + alpha) * (uv.double() - ov.double())
        scale = torch.stack([ov.double().abs(), uv.double().abs(), ref.abs()]).amax(0)
        err = (got[name].reshape(-1).double() - ref).abs()
        assert bool((err <= scale * 2.0**-22).all()), (name, float((err / scale).max()))
    if alpha == -1.0:  # theta_o back, except where the delta is not exact (fix-ups) or rounds
        assert torch.equal(got[C], o[C])


def test_extrapolate_does_not_depend_on_world_size(hand_made, tmp_path, monkeypatch):
    model, o, u, deltas = hand_made
    one = {0: {n: (0, t.numel()) for n, t in o.items()}}
    deltas1 = _write_deltas(monkeypatch, tmp_path / "delta1", o, u, one, model_hash(model))
    for alpha in (0.0, 0.5):
        a = load_file(str(extrapolate(model, deltas, alpha, tmp_path / f"w3_{alpha}") / "model.safetensors"))
        b = load_file(str(extrapolate(model, deltas1, alpha, tmp_path / f"w1_{alpha}") / "model.safetensors"))
        for k in a:
            assert torch.equal(_bits(a[k]), _bits(b[k])), (alpha, k)


def test_extrapolate_refuses_wrong_original_incomplete_ranks_and_existing_output(hand_made, tmp_path):
    model, o, u, deltas = hand_made
    # a different original model (one element changed): hash mismatch
    other = tmp_path / "other"
    other.mkdir()
    changed = dict(load_file(str(model / "model.safetensors")))
    changed[C] = changed[C].clone()
    changed[C][0, 0] += 1.0
    save_file(changed, str(other / "model.safetensors"))
    (other / "config.json").write_text((model / "config.json").read_text())
    with pytest.raises(RunError, match="not the one the run started from"):
        extrapolate(other, deltas, 0.5, tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    # the output dir exists: never replaced, nothing written into it
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="exists"):
        extrapolate(model, deltas, 0.5, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    # a rank file missing (rank 1 of 3)
    (deltas / "rank1.safetensors").unlink()
    with pytest.raises(RunError, match="incomplete"):
        extrapolate(model, deltas, 0.5, tmp_path / "o2")
    (deltas / "rank0.safetensors").unlink()  # only rank 2 of 3 left
    with pytest.raises(RunError, match="incomplete"):
        extrapolate(model, deltas, 0.5, tmp_path / "o3")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    # not a delta shard; no shards at all
    save_file({"x": torch.zeros(2)}, str(deltas / "rank0.safetensors"))
    with pytest.raises(RunError, match=META_KEY):
        read_delta_meta(deltas)
    with pytest.raises(RunError, match="no delta shards"):
        read_delta_meta(tmp_path / "exists")
    with pytest.raises(RunError, match="finite"):
        extrapolate(model, tmp_path / "delta", float("nan"), tmp_path / "o4")


def test_signed_zero_survives_alpha0(tmp_path, monkeypatch):
    """alpha = 0 keeps theta_u's -0.0 bits (regression: `!=` treats -0.0 == +0.0).

    An element that is -0.0 in theta_o and never moves (zero gradient: AdamW leaves -0.0 as -0.0) gets
    d = (-0.0) - (-0.0) = +0.0 and o + d = +0.0; u = -0.0 reached from o != 0 gives +0.0 the same way. Such
    elements must be fix-ups, and the fix-up formula u + alpha * d must not turn -0.0 into +0.0 at alpha = 0.
    """
    o = {UNTOUCHED: torch.tensor([-0.0, 0.5, 0.0, -2.0])}
    u = {UNTOUCHED: torch.tensor([-0.0, -0.0, 0.25, -0.0])}
    model, _ = _llama_dir(tmp_path, o)
    deltas = _write_deltas(monkeypatch, tmp_path / "delta", o, u, {0: {UNTOUCHED: (0, 4)}}, model_hash(model))
    got = load_file(str(extrapolate(model, deltas, 0.0, tmp_path / "a0") / "model.safetensors"))[UNTOUCHED]
    assert _bits(got).tolist() == _bits(u[UNTOUCHED]).tolist()
