"""The unlearning loop on real ZeRO-1/2/3 engines (2 gloo ranks) against an independent float64 reference.

One 2-rank spawn runs every configuration in sequence (fresh `UnlearnRun` each; imports and rendezvous paid
once) and returns final fp32 master weights and per-step records; one 1-rank spawn runs the world-size
invariance twins. The reference (`helpers/reference_unlearn.py`) does the same update on the whole global
batch in float64 on one process. Tests below only compare:

1. GRU (graddiff, npo + retain NLL) after 3 steps on ZeRO-1, 2 and partitioned ZeRO-3: SGD <= 1e-6 (also
   with 2 micro-batches per rank); AdamW <= max(2 x the error of plain ZeRO-3 training without geometry,
   1e-6); the logged GRU inner products, projection flags and losses equal the reference's; skipping the
   write-back (the update written into a copy, never in place, and `UnlearnEngine.set_grad` a no-op) must
   fail the comparison.
2. G-effect every step (ga alone; graddiff and npo together with GRU) on ZeRO-1/2 / partitioned ZeRO-3:
   per-group values sum to the totals and equal the reference (<= 1e-5 relative); for ga e_u = -||grad L_u||^2.
3. World-size invariance: npo + GRU, AdamW, 1 rank x (micro 4, accum 2) == 2 ranks x (micro 4, accum 1); the same
   on partitioned ZeRO-3 for satimp, undial (the logits objective: a frozen reference engine run on every
   forget micro-batch, here also serving a KL retain term) and idk_nll (the refusal answers), with the G-effect
   every step.
4. One GRU variant on partitioned ZeRO-3, SGD <= 1e-6 over 5 steps, in a spawn of its own: the combined
   projection (GA + lambda retain NLL rectified together, the GRU code's gd_gru), the EMA of the retain KL's
   gradient (a backward of its own, L_reg being the NLL), and a cosine clip; flags and cosines as the reference's.
5. dpo (IdkDPO: paired micro-batches of forget answers and refusals, theta_o on both) + GRU + G-effect on
   partitioned ZeRO-3, SGD: 2 ranks == 1 rank x accum 2 == the reference; every rank, every world size gives each
   item the same refusal. Its own spawns (`dpo_runs`), so that this case runs alone.
The model has odd-sized MLP biases (63): ZeRO-3 pads the last partition, ZeRO-1/2 split inside parameters.
"""

from __future__ import annotations

import math

import pytest

from helpers.conftest_model import SHARDED_DATA, write_zero3_config  # ZeRO-3: every parameter partitioned
from helpers.reference_unlearn import max_abs_diff, reference_unlearn, tiny_model_dir
from helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed

STEPS = 3
LR = {"sgd": 0.1, "adamw": 1e-3}
GRU_OBJECTIVES = ("graddiff", "npo")
# objectives checked for world-size invariance alone (no float64 reference of their own), with extra overrides:
# satimp's beta1 lowered so that its weights p^beta1 (1 - p) are not ~1e-13 on the untrained tiny model
WORLD_ONLY = {"satimp": ["objective.beta1=0.5"], "undial": ["objective.retain_loss=kl"],
              "idk_nll": []}  # fmt: skip  # idk_nll: the refusal half of the paired batches alone
STAGES = ("z1", "z2", "z3")
SGD_ATOL = 1e-6


def _overrides(env, stage, objective, optimizer, *, gru=True, geffect=0, micro=4, accum=1):
    ov = [
        f"model.name_or_path={env['model']}",
        *SHARDED_DATA,
        f"engine.max_steps={STEPS}",
        "eval.at_end=false",  # the loop's numbers only (the shipped config's retain log is not there)
        f"engine.micro_batch_size={micro}",
        "engine.global_batch_size=8",
        f"engine.grad_accum_steps={accum}",
        f"engine.optimizer={optimizer}",
        f"engine.lr={LR[optimizer]}",
        "engine.weight_decay=0.01",
        "engine.scheduler=constant",
        "engine.warmup_ratio=0.0",
        "engine.grad_clip=0.0",
        f"objective.name={objective}",
        f"objective.retain_loss={'none' if objective == 'ga' else 'nll'}",
        # non-trivial coefficients, so that a misplaced gamma or lambda shows
        "objective.gamma=0.8",
        "objective.lambda=1.5",
        f"geometry.gru={str(gru).lower()}",
        f"geometry.geffect_every={geffect}",
        "run.output_dir=unused",
    ]
    ov.append(f"engine.ds_config={env['z3']}" if stage == "z3" else f"engine.zero_stage={stage[1]}")
    return ov


def _two_rank_runs(env) -> dict:
    """name -> (overrides, skip the write-back). SGD GRU runs also log the G-effect every step (a third
    backward between the retain one and the write-back: GRU and G-effect together must not interfere)."""
    runs = {}
    for obj in GRU_OBJECTIVES:
        for st in STAGES:
            runs[f"gru_{obj}_sgd_{st}"] = (_overrides(env, st, obj, "sgd", geffect=1), False)
            runs[f"gru_{obj}_adamw_{st}"] = (_overrides(env, st, obj, "adamw"), False)
    # plain ZeRO-3 training of the same losses (fast path, no geometry): the AdamW noise floor
    runs["plain_graddiff_adamw_z3"] = (_overrides(env, "z3", "graddiff", "adamw", gru=False), False)
    for st in ("z2", "z3"):
        # negative control: GRU computed but never written back (the same config as gru_graddiff_sgd_*)
        runs[f"nowrite_graddiff_sgd_{st}"] = (_overrides(env, st, "graddiff", "sgd", geffect=1), True)
        # ga: no retain term, no GRU; grad R(D_f) = -grad L_ga is reused
        runs[f"geffect_ga_{st}"] = (_overrides(env, st, "ga", "sgd", gru=False, geffect=1), False)
        # the same global batch of 8 as 2 ranks x micro 2 x accum 2: shards read after coalesced micro-backwards
        runs[f"accum2_graddiff_sgd_{st}"] = (_overrides(env, st, "graddiff", "sgd", geffect=1, micro=2, accum=2), False)
    for obj, extra in WORLD_ONLY.items():
        runs[f"gru_{obj}_adamw_z3"] = (_overrides(env, "z3", obj, "adamw", geffect=1) + extra, False)
    return runs


def _one_rank_runs(env) -> dict:
    # the twins of gru_<objective>_adamw_<stage> of the 2-rank spawn: the same global batch as 1 rank x micro 4 x
    # accum 2
    runs = {f"gru_npo_adamw_{st}": (_overrides(env, st, "npo", "adamw", accum=2), False) for st in ("z2", "z3")}
    for obj, extra in WORLD_ONLY.items():
        runs[f"gru_{obj}_adamw_z3"] = (_overrides(env, "z3", obj, "adamw", geffect=1, accum=2) + extra, False)
    return runs


def _worker(runs: dict) -> dict:
    """Each configuration: UnlearnRun for STEPS steps; rank 0 returns the fp32 master weights, all ranks records."""
    import time

    from deepspeed.utils import safe_get_full_fp32_param

    from dsunlearn import dist
    from dsunlearn.config_io import load_config
    from dsunlearn.engine.unlearn_engine import UnlearnEngine
    from dsunlearn.recipes.unlearn import UnlearnRun

    out = {}
    for name, (overrides, skip_write) in runs.items():
        t0 = time.perf_counter()
        original = UnlearnEngine.set_grad
        if skip_write:  # through a copy (never in place), so that set_grad is the only write of the update
            UnlearnEngine.set_grad = lambda self, shard: None
            UnlearnEngine.in_place_grads = False
        try:
            run = UnlearnRun(load_config("tiny_npo", overrides))
            records = [run.step(i) for i in range(run.steps)]
        finally:
            UnlearnEngine.set_grad = original
            UnlearnEngine.in_place_grads = True
        # collective at every stage (all ranks, same order)
        params = {n: safe_get_full_fp32_param(p).detach().cpu().double().clone() for n, p in run.engine.named}
        out[name] = {
            "records": records,
            "params": params if dist.is_main() else None,
            "stage": run.engine.deepspeed.zero_optimization_stage(),
            "world": run.world,
            "accum": run.accum,
            "refusals": [e.input_ids for e in run.forget_inputs.alternate or []],
            "seconds": time.perf_counter() - t0,
        }
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlearn_sharded")
    z3 = write_zero3_config(root / "zero3_partitioned.json")
    model = tiny_model_dir(tmp_path_factory.getbasetemp() / "unlearn_tiny_model")
    return {"model": model, "z3": z3}


@pytest.fixture(scope="module")
def two_rank(env):
    runs = _two_rank_runs(env)
    r0, r1 = run_distributed(_worker, 2, runs)
    for name in runs:
        r0[name]["records_rank1"] = r1[name]["records"]
        r0[name]["overrides"] = runs[name][0]
    return r0


@pytest.fixture(scope="module")
def one_rank(env):
    runs = _one_rank_runs(env)
    (r0,) = run_distributed(_worker, 1, runs)
    return r0


@pytest.fixture(scope="module")
def reference():
    """Memoised float64 reference per configuration (it depends on neither the ZeRO stage nor on how the global
    batch of 8 is split into micro-batches)."""
    from dsunlearn.config_io import load_config

    cache = {}

    def get(overrides):
        split = ("engine.zero_stage", "engine.ds_config", "engine.micro_batch_size", "engine.grad_accum_steps")
        key = tuple(o for o in overrides if not o.startswith(split))
        if key not in cache:
            cfg = load_config("tiny_npo", list(overrides))
            cache[key] = reference_unlearn(cfg, STEPS, world=2, geffect=cfg.geometry.geffect_every == 1)
        return cache[key]

    return get


MEASURED: dict[str, float] = {}  # filled by the tests; printed at module teardown (pytest -s) for the record


@pytest.fixture(scope="module", autouse=True)
def _report_measured():
    """Not a check: after the module's tests, print what they measured (visible with pytest -s)."""
    yield
    for k, v in sorted(MEASURED.items()):
        print(f"{k:40s} {v:.3e}")


def _error(two_rank, reference, name):
    res = two_rank[name]
    ref = reference(res["overrides"])
    err = max_abs_diff(res["params"], ref.final)
    MEASURED[name] = err
    return res, ref, err


SGD_RUNS = [f"gru_{o}_sgd_{s}" for o in GRU_OBJECTIVES for s in STAGES]
SGD_RUNS += [f"accum2_graddiff_sgd_{s}" for s in ("z2", "z3")]


@pytest.mark.parametrize("name", SGD_RUNS)
def test_gru_sgd_matches_float64_reference(two_rank, reference, name):
    res, ref, err = _error(two_rank, reference, name)
    assert (res["stage"], res["world"], res["accum"]) == (int(name[-1]), 2, 2 if name.startswith("accum2") else 1)
    assert max_abs_diff(ref.initial, ref.final) > 1e3 * SGD_ATOL  # the update really moved the weights
    # the projection branch was exercised and the logged GRU numbers are those of the reference
    flags = [r["gru_projected"] for r in res["records"]]
    assert flags == [s.gru_projected for s in ref.steps] and any(flags)
    for got, want in zip(res["records"], ref.steps, strict=True):
        assert got["gru_dot"] == pytest.approx(want.gru_dot, rel=1e-5)
        # logged losses are the global-batch means of docs/methods.md (before this step's update)
        assert got["loss_forget"] == pytest.approx(want.loss_forget, rel=1e-5)
        assert got["loss_retain"] == pytest.approx(want.loss_retain, rel=1e-5)
    assert [r["gru_dot"] for r in res["records"]] == [r["gru_dot"] for r in res["records_rank1"]]
    assert err <= SGD_ATOL, f"max |theta - theta_ref| = {err:.3g}"


def test_plain_zero3_adamw_noise_floor(two_rank, reference):
    res, ref, err = _error(two_rank, reference, "plain_graddiff_adamw_z3")
    assert res["stage"] == 3 and "gru_dot" not in res["records"][0]
    assert max_abs_diff(ref.initial, ref.final) > 1e-3
    assert err <= 1e-4, f"plain ZeRO-3 AdamW vs reference: {err:.3g}"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("objective", GRU_OBJECTIVES)
def test_gru_adamw_matches_reference_within_zero3_noise(two_rank, reference, objective, stage):
    _, _, floor = _error(two_rank, reference, "plain_graddiff_adamw_z3")
    res, ref, err = _error(two_rank, reference, f"gru_{objective}_adamw_{stage}")
    assert res["stage"] == int(stage[1])
    assert [r["gru_projected"] for r in res["records"]] == [s.gru_projected for s in ref.steps]
    assert err <= max(2 * floor, 1e-6), f"GRU AdamW error {err:.3g} vs plain ZeRO-3 floor {floor:.3g}"


@pytest.mark.parametrize("stage", ("z2", "z3"))
def test_negative_control_without_write_back_fails(two_rank, reference, stage):
    res, _, err = _error(two_rank, reference, f"nowrite_graddiff_sgd_{stage}")
    assert res["overrides"] == two_rank[f"gru_graddiff_sgd_{stage}"]["overrides"]
    assert any(r["gru_projected"] for r in res["records"])
    assert err > 1e3 * SGD_ATOL, f"skipping set_grad went unnoticed: error only {err:.3g}"


GEFFECT_RUNS = SGD_RUNS + ["geffect_ga_z2", "geffect_ga_z3"]


@pytest.mark.parametrize("name", GEFFECT_RUNS)
def test_geffect_per_group_matches_reference(two_rank, reference, name):
    res = two_rank[name]
    ref = reference(res["overrides"])
    worst = 0.0
    for got, want, other in zip(res["records"], ref.steps, res["records_rank1"], strict=True):
        groups = got["geffect_groups"]
        assert groups == list(want.geffect_u_groups) == ["embed", "layers.0", "layers.1", "norm"]  # lm_head tied
        assert got["geffect_u_groups"] == other["geffect_u_groups"]  # identical on every rank
        for kind in ("u", "r"):
            per, total = got[f"geffect_{kind}_groups"], got[f"geffect_{kind}"]
            assert sum(per) == pytest.approx(total, rel=1e-12, abs=1e-15)
            want_per = [getattr(want, f"geffect_{kind}_groups")[g] for g in groups]
            scale = max(abs(x) for x in want_per)
            for a, b in zip(per, want_per, strict=True):
                rel = abs(a - b) / max(abs(b), 1e-3 * scale)
                worst = max(worst, rel)
                assert rel <= 1e-5, (kind, groups, per, want_per)
            assert total == pytest.approx(sum(want_per), rel=1e-5)
        assert got["grad_norm_objective"] == pytest.approx(want.grad_norm_objective, rel=1e-5)
        if "_ga_" in name:  # grad R(D_f) = -grad L_ga is reused: e_u = -||grad L_u||^2 exactly
            assert got["geffect_u"] == pytest.approx(-(got["grad_norm_objective"] ** 2), rel=1e-9)
            assert got["geffect_cos_u"] == pytest.approx(-1.0, abs=1e-9)
            assert got["geffect_u"] < 0
    MEASURED[f"{name}_geffect_rel"] = worst


WORLD_TWINS = [("npo", "z2"), ("npo", "z3")] + [(obj, "z3") for obj in WORLD_ONLY]


@pytest.mark.parametrize(("objective", "stage"), WORLD_TWINS)
def test_world_size_invariance_gru_adamw(two_rank, one_rank, reference, objective, stage):
    name = f"gru_{objective}_adamw_{stage}"
    two, one = two_rank[name], one_rank[name]
    assert (one["world"], one["accum"], two["world"], two["accum"]) == (1, 2, 2, 1)
    assert two["stage"] == one["stage"] == int(stage[1])
    diff = max_abs_diff(one["params"], two["params"])
    MEASURED[f"world_1v2_{objective}_adamw_{stage}"] = diff
    if objective not in WORLD_ONLY:
        MEASURED[f"world_1_{name}_vs_ref"] = max_abs_diff(one["params"], reference(two["overrides"]).final)
    assert [r["gru_projected"] for r in one["records"]] == [r["gru_projected"] for r in two["records"]]
    for a, b in zip(one["records"], two["records"], strict=True):
        assert a["loss_forget"] == pytest.approx(b["loss_forget"], rel=1e-5)
        assert a["gru_dot"] == pytest.approx(b["gru_dot"], rel=1e-4)
        if "geffect_u" in b:  # the objective's own gradient agrees, and is there (not ~0 beside the retain term)
            assert a["geffect_u"] == pytest.approx(b["geffect_u"], rel=1e-4)
            assert a["grad_norm_objective"] == pytest.approx(b["grad_norm_objective"], rel=1e-5)
            assert b["grad_norm_objective"] > 1e-3
    # At theta_o the forget risk rises along an ascent objective's gradient; idk_nll descends on the refusals,
    # which need not make the forget answers less likely (on this untrained model it makes them likelier).
    if "geffect_u" in two["records"][0] and objective != "idk_nll":
        assert two["records"][0]["geffect_u"] < 0
    assert diff <= 1e-5, f"1 rank x accum 2 vs 2 ranks: {diff:.3g}"


# ---- 4. one GRU variant (docs/methods.md "GRU"): its own 2-rank spawn, so that it runs alone cheaply ----------------

VARIANT_STEPS = 5  # step 0: the KL's gradient is 0 at theta_o (nothing to project); 3: projected; 4: clipped
VARIANT = ["objective.lambda=0.3", f"engine.max_steps={VARIANT_STEPS}", "geometry.gru_project=combined",
           "geometry.gru_ema_from=kl", "geometry.gru_cos_clip=-0.045"]  # fmt: skip


@pytest.fixture(scope="module")
def variant_two_rank(env):
    overrides = _overrides(env, "z3", "graddiff", "sgd") + VARIANT
    r0, r1 = run_distributed(_worker, 2, {"variant": (overrides, False)})
    return {**r0["variant"], "records_rank1": r1["variant"]["records"], "overrides": overrides}


def test_gru_variant_matches_float64_reference(variant_two_rank):
    from dsunlearn.config_io import load_config

    res = variant_two_rank
    cfg = load_config("tiny_npo", res["overrides"])
    assert (cfg.geometry.gru_project, cfg.geometry.gru_ema_from, cfg.objective.retain_loss) == ("combined", "kl", "nll")
    ref = reference_unlearn(cfg, VARIANT_STEPS, world=2)
    assert (res["stage"], res["world"]) == (3, 2)
    flags = [(r["gru_projected"], r["gru_clipped"]) for r in res["records"]]
    assert flags == [(s.gru_projected, s.gru_clipped) for s in ref.steps]
    assert {(False, False), (True, False), (True, True)} <= set(flags)  # every branch of the variant ran
    for got, want in zip(res["records"], ref.steps, strict=True):
        assert got["gru_cos"] == pytest.approx(want.gru_cos, rel=1e-4, abs=1e-9)
        assert got["loss_retain"] == pytest.approx(want.loss_retain, rel=1e-5)
    assert [r["gru_dot"] for r in res["records"]] == [r["gru_dot"] for r in res["records_rank1"]]
    err = max_abs_diff(res["params"], ref.final)
    MEASURED["gru_variant_combined_kl_clip_sgd_z3"] = err
    assert max_abs_diff(ref.initial, ref.final) > 1e3 * SGD_ATOL
    assert err <= SGD_ATOL, f"max |theta - theta_ref| = {err:.3g}"


# ---- 5. dpo: paired forget / refusal micro-batches, theta_o's log-probs of both -------------------------------------


def _dpo_overrides(env, accum):
    return _overrides(env, "z3", "dpo", "sgd", geffect=1, accum=accum)


@pytest.fixture(scope="module")
def dpo_runs(env):
    """dpo on 2 ranks x micro 4 and on 1 rank x micro 4 x accum 2: the same global batch of 8."""
    r0, r1 = run_distributed(_worker, 2, {"dpo": (_dpo_overrides(env, 1), False)})
    (one,) = run_distributed(_worker, 1, {"dpo": (_dpo_overrides(env, 2), False)})
    return r0["dpo"], r1["dpo"], one["dpo"]


def test_dpo_two_ranks_zero3_equal_one_rank_and_the_reference(env, dpo_runs, reference):
    two, two_rank1, one = dpo_runs
    assert (two["stage"], two["world"], two["accum"], one["world"], one["accum"]) == (3, 2, 1, 1, 2)
    assert len(two["refusals"]) == 10 and two["refusals"] == two_rank1["refusals"] == one["refusals"]
    ref = reference(_dpo_overrides(env, 1))
    assert max_abs_diff(ref.initial, ref.final) > 1e3 * SGD_ATOL  # the update really moved the weights
    assert two["records"][0]["loss_forget"] == pytest.approx(20 * math.log(2), rel=1e-6)  # theta = theta_o
    for a, b, want in zip(one["records"], two["records"], ref.steps, strict=True):
        for got in (a, b):
            assert got["loss_forget"] == pytest.approx(want.loss_forget, rel=1e-5)
            assert got["gru_dot"] == pytest.approx(want.gru_dot, rel=1e-5)
            assert got["gru_projected"] == want.gru_projected
            assert got["geffect_u"] == pytest.approx(sum(want.geffect_u_groups.values()), rel=1e-5)
            assert got["grad_norm_objective"] == pytest.approx(want.grad_norm_objective, rel=1e-5)
    diff, err = max_abs_diff(one["params"], two["params"]), max_abs_diff(two["params"], ref.final)
    MEASURED["world_1v2_dpo_sgd_z3"], MEASURED["dpo_sgd_z3_vs_ref"] = diff, err
    assert diff <= SGD_ATOL and err <= SGD_ATOL, (diff, err)
