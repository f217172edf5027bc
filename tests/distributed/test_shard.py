"""ShardedGrad on 2 gloo ranks at every ZeRO stage, against DeepSpeed's all-gathering `safe_get_full_grad`.

One spawn runs every configuration in sequence (a fresh engine each; imports and rendezvous paid once) and
returns per-configuration numbers; the tests below are parametrized over configurations and only assert.
Per configuration: (a) shard elements == slices of the full gradient, union over ranks covers each element
once; (b) dot / norm_sq / per_group_dot / inner_products vs float64 full-gradient references; (c) writing
2*g_B + 0.5*g_A then an SGD step == reference update, and skipping the write does not match it; (d) two
backwards without `zero_grad_buffers` contaminate the second read (observed per stage), with it they do not;
(e) the second gradient left in DeepSpeed's buffers (`read_live_grad`), the same projected gradient written into
it (in place where `IN_PLACE` says so, else into a copy written back) drives the same SGD step as (c).
"""

from __future__ import annotations

import traceback

import pytest
import torch

from helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed

LR = 0.1
BF16_FP32_ACC = {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"}}
OFFLOAD = {"offload_optimizer": {"device": "cpu"}}
NO_DS_CPU_OPT = {"zero_force_ds_cpu_optimizer": False}  # keep the client SGD under offload
# name -> (zero_optimization, tied embeddings, extra DeepSpeed config, expected kind)
CONFIGS = {
    "zero0": ({"stage": 0}, False, {}, "stage0"),
    "zero1_tied": ({"stage": 1}, True, {}, "zero12"),
    "zero2": ({"stage": 2}, False, {}, "zero12"),
    "zero2_overlap_buckets": (
        {"stage": 2, "overlap_comm": True, "contiguous_gradients": False, "reduce_bucket_size": 700},
        False,
        {},
        "zero12",
    ),
    "zero2_offload": ({"stage": 2, **OFFLOAD}, False, NO_DS_CPU_OPT, "zero12"),
    # threshold 0: every parameter is partitioned (the default persists the tiny model's params whole)
    "zero3": ({"stage": 3, "stage3_param_persistence_threshold": 0}, False, {}, "zero3"),
    "zero3_tied": ({"stage": 3}, True, {}, "zero3"),
    "zero3_offload": ({"stage": 3, **OFFLOAD}, False, NO_DS_CPU_OPT, "zero3"),
    # clipping acts on what was written (replicated kinds: every rank must hold the same full gradient)
    "zero0_clip": ({"stage": 0}, False, {"gradient_clipping": 0.05}, "stage0"),
    "zero1_bf16_clip": ({"stage": 1}, False, {**BF16_FP32_ACC, "gradient_clipping": 0.05}, "bf16_optimizer"),
    "zero3_clip": ({"stage": 3}, False, {"gradient_clipping": 0.05}, "zero3"),
    "zero0_bf16": ({"stage": 0}, False, {"bf16": {"enabled": True}}, "stage0"),
    "zero1_bf16": ({"stage": 1}, False, BF16_FP32_ACC, "bf16_optimizer"),
    "zero2_bf16": ({"stage": 2}, False, BF16_FP32_ACC, "zero12"),
    "zero3_bf16": ({"stage": 3}, False, BF16_FP32_ACC, "zero3"),
    "zero3_bf16_bf16acc": ({"stage": 3}, True, {"bf16": {"enabled": True}}, "zero3"),
}
# What (d) observed on DeepSpeed 0.19.8: ||second read - clean gradient|| / ||clean gradient|| after two
# backwards without `zero_grad_buffers`. 1.0: the second backward added onto the first (stage 0: torch
# accumulates p.grad; ZeRO-3: the partition accumulates while micro_step_id > 0; BF16_Optimizer, the ZeRO-1/2
# fp32-accumulation buffer and the offload buffers add; bf16 sums round, hence the tolerance). 0.0: ZeRO-1/2
# with fp32 gradients and no offload rebuild the partition from the fresh p.grad at each boundary.
# Always reset; this table pins the behaviour so that a DeepSpeed upgrade that changes it is noticed.
# Where DeepSpeed 0.19's buffer is an fp32 view that step() reads (`writable_grad_fragment`): ZeRO-1/2 and ZeRO-3
# without offload and with fp32 gradients (bf16 with fp32 accumulation included); not offload (the setter records
# norms), ZeRO-3 bf16 partitions (the getter returns a copy) nor the replicated kinds (every rank needs it all).
IN_PLACE = {"zero1_tied", "zero2", "zero2_overlap_buckets", "zero3", "zero3_tied", "zero3_clip", "zero2_bf16",
            "zero3_bf16"}  # fmt: skip
CONTAMINATED = {name: 1.0 for name in CONFIGS} | {"zero1_tied": 0.0, "zero2": 0.0, "zero2_overlap_buckets": 0.0}


def _engine(zero, tied, extra):
    import deepspeed
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=63,  # odd-sized MLP biases: uneven slices and ZeRO-3 partition padding
        mlp_bias=True,
        max_position_embeddings=32,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(cfg)
    ds_cfg = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,  # DeepSpeed 0.19 clips at 1.0 when unset
        **extra,  # may override gradient_clipping
    }
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
    return engine


def _batch(seed):
    from dsunlearn import dist

    g = torch.Generator().manual_seed(1000 * seed + dist.rank())  # a different micro-batch per rank
    return torch.randint(0, 64, (2, 12), generator=g)


def _loss(engine, which):
    ids = _batch(which)
    out = engine(input_ids=ids, labels=ids)
    # Two different objectives: the LM loss (A) and a logit penalty on other data (B).
    return out.loss if which == 0 else out.logits.float().pow(2).mean()


def _full(engine, fn):
    """{name: fp32 flat} via a DeepSpeed full-gather helper (collective; test-only reference)."""
    return {n: fn(p).detach().float().flatten().cpu().clone() for n, p in engine.module.named_parameters()}


def _fwd_bwd(engine, which):
    engine.backward(_loss(engine, which))


def _max_err(shard, ref):
    """max |shard element - the same element of the full reference|."""
    return max(
        (shard.flat[s.offset : s.offset + s.numel].cpu() - ref[s.name][s.start : s.start + s.numel]).abs().max().item()
        for s in shard.segments
    )


def _check_one(name):
    import deepspeed.utils as du

    from dsunlearn.engine import ds_internals as dsi
    from dsunlearn.engine.groups import group_of
    from dsunlearn.engine.shard import (
        ShardedGrad,
        combine_into,
        get_local_param_fragment,
        read_grad_shard,
        read_live_grad,
        write_grad_shard,
        zero_grad_buffers,
    )

    zero, tied, extra, _ = CONFIGS[name]
    engine = _engine(zero, tied, extra)
    res = {"kind": dsi.engine_kind(engine).kind}
    full_grad = lambda: _full(engine, du.safe_get_full_grad)  # noqa: E731
    if zero["stage"] == 0 and "bf16" in extra:  # FP16_UnfusedOptimizer: one fp32 master per parameter (0.19)
        fp32_of = dict(zip(engine.optimizer.fp16_groups[0], engine.optimizer.fp32_groups[0], strict=True))
        full_param = lambda: _full(engine, lambda p: fp32_of[p])  # noqa: E731
    elif zero["stage"] == 0:
        full_param = lambda: _full(engine, lambda p: p)  # noqa: E731
    else:
        full_param = lambda: _full(engine, du.safe_get_full_fp32_param)  # noqa: E731

    # (a) first backward: elements match the full gradient; master fragments match the full fp32 master
    _fwd_bwd(engine, 0)
    g_a, ref_a = read_grad_shard(engine), full_grad()
    res["segments"] = [(s.name, s.start, s.numel, s.param_numel) for s in g_a.segments]
    res["numels"] = {n: v.numel() for n, v in ref_a.items()}
    res["groups"] = list(g_a.groups)
    res["err_a"] = _max_err(g_a, ref_a)
    master = full_param()
    res["err_param_frag"] = 0.0
    for n, p in engine.module.named_parameters():
        if (frag := get_local_param_fragment(engine, p)) is not None:
            t, st = frag
            res["err_param_frag"] = max(
                res["err_param_frag"], (t.cpu() - master[n][st : st + t.numel()]).abs().max().item()
            )

    # (b) second objective after a reset: geometry vs float64 references on the full gradients
    zero_grad_buffers(engine)
    _fwd_bwd(engine, 1)
    g_b, ref_b = read_grad_shard(engine), full_grad()
    res["err_b"] = _max_err(g_b, ref_b)
    res["a_survives"] = _max_err(g_a, ref_a)  # read_grad_shard copies: the second backward left g_a alone
    groups = list(g_a.groups)
    ref_pg = torch.zeros(3, len(groups), dtype=torch.float64)
    for n in ref_a:
        a, b, gi = ref_a[n].double(), ref_b[n].double(), groups.index(group_of(n))
        ref_pg[:, gi] += torch.stack([a @ b, a @ a, b @ b])
    ref = ref_pg.sum(1)
    rel = lambda x, y: abs(float(x) - float(y)) / abs(float(y))  # noqa: E731
    got_pg = ShardedGrad.inner_products([(g_a, g_b), (g_a, g_a), (g_b, g_b)])
    pg = g_a.per_group_dot(g_b)
    res["rel_b"] = {
        "dot": rel(g_a.dot(g_b), ref[0]),
        "norm_sq": rel(g_a.norm_sq(), ref[1]),
        "per_group": max(rel(x, y) for x, y in zip(pg, ref_pg[0], strict=True)),
        "batched": max(rel(x, y) for x, y in zip(got_pg.flatten(), ref_pg.flatten(), strict=True)),
        "group_sums": max(rel(got_pg[i].sum(), ref[i]) for i in range(3)),
        "per_group_sum_vs_dot": rel(pg.sum(), g_a.dot(g_b)),
    }

    # (d) a second backward of B without a reset, then one with it
    _fwd_bwd(engine, 1)
    res["contamination"] = read_grad_shard(engine).axpy(-1.0, g_b).norm() / g_b.norm()
    zero_grad_buffers(engine)
    _fwd_bwd(engine, 1)
    res["after_reset"] = read_grad_shard(engine).axpy(-1.0, g_b).norm() / g_b.norm()

    # (c) GRU-style projected gradient written into the shard, then SGD; and the same step without the write
    bf16_grads = "bf16" in extra and "data_types" not in extra  # the written value is rounded to bf16
    clip = extra.get("gradient_clipping", 0.0)
    for key, write in (("err_write", "shard"), ("err_control", None), ("err_live", "live")):
        zero_grad_buffers(engine)
        _fwd_bwd(engine, 0)
        g_a, ref_a = read_grad_shard(engine), full_grad()
        zero_grad_buffers(engine)
        _fwd_bwd(engine, 1)
        live = read_live_grad(engine) if write == "live" else None
        g_b, ref_b = (read_grad_shard(engine) if live is None else live.to_shard()), full_grad()
        w = g_a.clone().axpy(-g_a.dot(g_b) / g_b.norm_sq(), g_b)  # g_a minus its projection on g_b
        dot = sum(ref_a[n].double() @ ref_b[n].double() for n in ref_a)
        nsq = sum(ref_b[n].double() @ ref_b[n].double() for n in ref_a)
        c = dot / nsq
        w_ref = {n: ref_a[n].double() - c * ref_b[n].double() for n in ref_a}
        # DeepSpeed's clipping (every stage, 0.19): grad * max_norm / (global norm + 1e-6) when that is < 1
        norm = sum(v @ v for v in w_ref.values()) ** 0.5 if write else sum(v @ v for v in ref_b.values()) ** 0.5
        coef = min(1.0, clip / (float(norm) + 1e-6)) if clip > 0 else 1.0
        res[f"clip_coef_{key}"] = coef
        before = full_param()
        if write == "shard":
            write_grad_shard(engine, w)
        elif write == "live":  # the same w, formed in the live buffer itself: g_b read there, then overwritten
            res["in_place"] = live.in_place
            combine_into(live, [(1.0, g_a), (-g_a.dot(g_b) / g_b.norm_sq(), live)])
            live.commit()
        engine.step()
        after = full_param()
        res[key] = 0.0
        for n, wr in w_ref.items():
            want = before[n].double() - LR * coef * wr
            # Rounding allowed: 2 fp32 ulps of the update, plus the fp32 arithmetic of w = a - c b (it cancels,
            # so relative to |a| + |c b|) or, with bf16 gradient buffers, the bf16 rounding of the written w.
            spread = LR * coef * (ref_a[n].double().abs() + abs(c) * ref_b[n].double().abs())
            tol = 2 * 2**-23 * (before[n].double().abs() + LR * wr.abs()) + spread * (2**-8 if bf16_grads else 2**-21)
            res[key] = max(res[key], ((after[n].double() - want).abs() / tol).max().item())
    engine.destroy()
    return res


def _all_configs(names):
    out = {}
    for name in names:
        try:
            out[name] = _check_one(name)
        except Exception:
            out[name] = {"error": traceback.format_exc()}
    return out


@pytest.fixture(scope="module")
def results():
    return run_distributed(_all_configs, 2, list(CONFIGS))


@pytest.fixture(params=list(CONFIGS))
def per_rank(request, results):
    name = request.param
    ranks = [r[name] for r in results]
    for r in ranks:
        if "error" in r:
            pytest.fail(f"{name} failed on a rank:\n{r['error']}")
    return name, ranks


def test_kind_and_shard_elements(per_rank):
    name, ranks = per_rank
    assert {r["kind"] for r in ranks} == {CONFIGS[name][3]}
    expected_groups = ["embed", "layers.0", "layers.1", "norm"] + ([] if CONFIGS[name][1] else ["lm_head"])
    for r in ranks:
        assert r["groups"] == expected_groups
        assert r["err_a"] == 0.0 and r["err_b"] == 0.0 and r["a_survives"] == 0.0
        assert r["err_param_frag"] == 0.0
    # the union over ranks covers every element of every parameter exactly once
    covered: dict[str, list[tuple[int, int]]] = {}
    sizes = {}
    for r in ranks:
        for n, start, numel, total in r["segments"]:
            covered.setdefault(n, []).append((start, numel))
            sizes[n] = total
    for n, spans in covered.items():
        pos = 0
        for start, numel in sorted(spans):
            assert start == pos and numel > 0, (n, spans)
            pos += numel
        assert pos == sizes[n], (n, spans)
    assert sizes == ranks[0]["numels"]  # and every parameter appears


def test_inner_products_match_full_gradient(per_rank):
    _, ranks = per_rank
    for r in ranks:
        assert max(r["rel_b"].values()) <= 1e-6, r["rel_b"]
    assert ranks[0]["rel_b"] == ranks[1]["rel_b"]  # global values, identical on all ranks


def test_write_back_drives_the_step(per_rank):
    name, ranks = per_rank
    for r in ranks:
        # errors in units of the rounding tolerance: within it with the write, far outside without
        assert r["err_write"] <= 1.0, r["err_write"]
        assert r["err_control"] > 100.0, r["err_control"]
        assert r["err_live"] <= 1.0, r["err_live"]
        assert r["in_place"] is (name in IN_PLACE)
        if "gradient_clipping" in CONFIGS[name][2]:  # the clipping case does clip
            assert r["clip_coef_err_write"] < 0.5, r["clip_coef_err_write"]


def test_reset_between_backwards(per_rank):
    name, ranks = per_rank
    for r in ranks:
        assert r["after_reset"] <= 1e-6, r["after_reset"]
        assert r["contamination"] == pytest.approx(CONTAMINATED[name], abs=1e-3), r["contamination"]
