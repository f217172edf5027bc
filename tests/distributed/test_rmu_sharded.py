"""RMU on real partitioned ZeRO-3 engines (2 gloo ranks and 1 rank) against an independent float64 reference.

A tiny 4-layer Llama with MLP biases; RMU at layer 2 training layers 1-2's `mlp.down_proj.weight` (so the
down_proj biases, layers 0 and 3, the embeddings and the norms stay frozen), TOFU-format synthetic QA as forget
and retain sets, SGD, non-trivial gamma and lambda. The reference (`helpers/reference_rmu.py`) reads layer 2 from
`output_hidden_states[3]` (no hooks), one unpadded sequence at a time, on the whole global batch in float64.

1. plain (one combined backward): 3 steps on 2 ranks == the reference (trainable <= 1e-6), losses as logged.
2. GRU + G-effect every step (the sharded path: gradients read as shards of the trainable subset only): the
   G-effect, GRU's inner product and projection flag and the final weights equal the reference's over the subset.
3. 1 rank x accum 2 == 2 ranks x accum 1 for the GRU run.
4. Every frozen parameter bit-identical to theta_o after training; the engine's trainable list is the subset.
"""

from __future__ import annotations

import pytest

from helpers.conftest_model import SHARDED_DATA, write_zero3_config
from helpers.reference_rmu import reference_rmu, tiny_deep_model_dir
from helpers.spawn import run_distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # about 3 minutes on 2 cores

STEPS, LR, GAMMA, LAMBDA, LAYER, TRAIN_LAYERS, C = 3, 2.0, 0.8, 1.5, 2, 2, 6.5
SUBSET = ["model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]


def _overrides(env, *, gru: bool, accum: int = 1) -> list[str]:
    return [
        f"model.name_or_path={env['model']}",
        *SHARDED_DATA,
        f"engine.max_steps={STEPS}",
        "eval.at_end=false",
        "engine.micro_batch_size=4",
        "engine.global_batch_size=8",
        f"engine.grad_accum_steps={accum}",
        "engine.optimizer=sgd",
        f"engine.lr={LR}",
        "engine.scheduler=constant",
        "engine.grad_clip=0.0",
        "objective.name=RMU",  # open-unlearning's name, stored as rmu
        "objective.retain_loss=auto",  # embed_diff
        f"objective.layer={LAYER}",
        f"objective.train_layers={TRAIN_LAYERS}",
        f"objective.gamma={GAMMA}",
        f"objective.lambda={LAMBDA}",
        f"geometry.gru={str(gru).lower()}",
        f"geometry.geffect_every={1 if gru else 0}",
        "geometry.gru_ema=0.8",
        "run.output_dir=unused",
        f"engine.ds_config={env['z3']}",
    ]


def _worker(runs: dict) -> dict:
    import deepspeed

    from dsunlearn import dist
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.unlearn import UnlearnRun

    out = {}
    for name, overrides in runs.items():
        run = UnlearnRun(load_config("tiny_npo", overrides))
        records = [run.step(i) for i in range(run.steps)]
        module = run.engine.module
        with deepspeed.zero.GatheredParameters(list(module.parameters())):  # collective: every rank
            params = {n: p.detach().cpu().float().clone() for n, p in module.named_parameters()}
        out[name] = {
            "records": records,
            "params": params if dist.is_main() else None,
            "trainable": [n for n, _ in run.engine.named],
            "objective": run.cfg.objective.name,
            "batches": [
                (run.forget_stream.global_indices(s), run.retain_stream.global_indices(s)) for s in range(run.steps)
            ],  # fmt: skip
            "forget": run.forget if dist.is_main() else None,
            "retain": run.retain if dist.is_main() else None,
            "seed": run.cfg.run.seed,
        }
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rmu_sharded")
    z3 = write_zero3_config(root / "zero3_partitioned.json")
    return {"model": tiny_deep_model_dir(root / "model4"), "z3": z3}


@pytest.fixture(scope="module")
def two_rank(env):
    runs = {"plain": _overrides(env, gru=False), "gru": _overrides(env, gru=True)}
    r0, _ = run_distributed(_worker, 2, runs)
    return r0


@pytest.fixture(scope="module")
def one_rank(env):
    (r0,) = run_distributed(_worker, 1, {"gru": _overrides(env, gru=True, accum=2)})
    return r0


def _reference(env, res, gru: bool):
    return reference_rmu(env["model"], res["forget"], res["retain"], res["batches"], layer=LAYER,
                         train_layers=TRAIN_LAYERS, pattern=r"mlp\.down_proj\.weight", c=C, gamma=GAMMA, lam=LAMBDA,
                         lr=LR, seed=res["seed"], gru=gru, gru_ema=0.8, geffect=gru)  # fmt: skip


def _bits(t):
    import torch

    return t.contiguous().float().view(torch.int32)


@pytest.mark.parametrize("name", ["plain", "gru"])
def test_rmu_matches_float64_reference(env, two_rank, name):
    res = two_rank[name]
    assert res["objective"] == "rmu"
    initial, final, ref_records, names = _reference(env, res, gru=name == "gru")
    assert names == SUBSET and res["trainable"] == SUBSET
    got = res["params"]
    for n in SUBSET:
        moved = float((final[n] - initial[n]).abs().max())
        assert moved > 1e-4, f"{n} barely moved ({moved:g}): the test would not see a wrong gradient"
        assert float((got[n].double() - final[n]).abs().max()) <= 1e-6, n
    for n, t in got.items():  # everything else: theta_o's fp32 bits
        if n not in SUBSET:
            assert bool((_bits(t) == _bits(initial[n])).all()), f"frozen {n} changed"
    for rec, ref in zip(res["records"], ref_records, strict=True):
        assert rec["loss_forget"] == pytest.approx(ref["loss_forget"], rel=1e-5)
        assert rec["loss_retain"] == pytest.approx(ref["loss_retain"], rel=1e-4, abs=1e-10)
        if name == "gru":
            assert rec["geffect_groups"] == ["layers.1", "layers.2"]  # the subset's groups only
            for key in ("geffect_u", "geffect_r", "gru_dot"):
                assert rec[key] == pytest.approx(ref[key], rel=1e-4), key
            assert rec["gru_projected"] == ref["gru_projected"]
    if name == "gru":
        assert any(r["gru_projected"] for r in ref_records), "GRU never projected: the check would be vacuous"


def test_rmu_one_rank_equals_two_ranks(two_rank, one_rank):
    a, b = two_rank["gru"], one_rank["gru"]
    assert a["batches"] == b["batches"]
    for n in SUBSET:
        assert float((a["params"][n] - b["params"][n]).abs().max()) <= 1e-6, n
    for ra, rb in zip(a["records"], b["records"], strict=True):
        for key in ("loss_forget", "loss_retain", "geffect_u", "geffect_r", "gru_dot"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-12), key
