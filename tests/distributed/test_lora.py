"""LoRA adapter runs (issue 17) on real DeepSpeed engines with real peft, against a float64 reference of the
same low-rank update written here from the LoRA formula (not from peft):

    y = x W^T + b + s (x A^T) B^T,   s = alpha / r,   A [r, d_in] (its initial values taken from the run),
    B [d_out, r] = 0 at step 0, W and b frozen;

the unlearning step on (A, B) is `helpers/reference_unlearn.py`'s (GRU, SGD, whole global batch, float64).
One 2-rank spawn (partitioned ZeRO-3, and ZeRO-2) and one 1-rank spawn (ZeRO-3, accum 2: the same global
batch). Checked: the adapter after 3 steps == the reference (<= 1e-6), the logged GRU inner products too; the
adapter parameters are ZeRO-3 partitioned (created after `zero.Init`, partitioned by `deepspeed.initialize`)
and are the only ones the optimizer holds; the base bit-identical after training; the reference theta_o
(adapter disabled) gives the base model's logits; the saved adapter loads with `PeftModel.from_pretrained`
and reproduces the run's model; the merged model == W + s B A from the saved adapter (float64, rounded once).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from helpers.conftest_model import SHARDED_DATA, write_zero3_config
from helpers.reference_unlearn import reference_unlearn, tiny_model_dir
from helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed

STEPS, LR, R, ALPHA = 3, 0.1, 4, 16.0
TARGETS = ("q_proj", "v_proj", "down_proj")  # down_proj: input 63 (odd), with a bias: padded partitions
PREFIX = "base_model.model."


def _overrides(model, stage: str, z3_json: str, out: str, micro=4, accum=1):
    ov = [
        f"model.name_or_path={model}",
        "model.adapter.type=lora",
        f"model.adapter.r={R}",
        f"model.adapter.alpha={ALPHA}",
        f"model.adapter.target_modules=[{','.join(TARGETS)}]",
        *SHARDED_DATA,
        f"engine.max_steps={STEPS}",
        "eval.at_end=false",
        f"engine.micro_batch_size={micro}",
        "engine.global_batch_size=8",
        f"engine.grad_accum_steps={accum}",
        "engine.optimizer=sgd",
        f"engine.lr={LR}",
        "engine.scheduler=constant",
        "engine.warmup_ratio=0.0",
        "engine.grad_clip=0.0",
        "objective.name=npo",
        "objective.retain_loss=nll",
        "objective.gamma=0.8",
        "objective.lambda=1.5",
        "geometry.gru=true",
        f"run.output_dir={out}",
    ]
    ov.append(f"engine.ds_config={z3_json}" if stage == "z3" else f"engine.zero_stage={stage[1]}")
    return ov


def _worker(runs: dict, probe_ids: list) -> dict:
    from deepspeed.utils import safe_get_full_fp32_param

    from dsunlearn import dist
    from dsunlearn.config_io import load_config
    from dsunlearn.engine.partitioning import gathered, is_partitioned
    from dsunlearn.models.adapters import AdapterOffReference
    from dsunlearn.recipes.step_plan import StepPlan
    from dsunlearn.recipes.unlearn import UnlearnRun, _save_final_delta, _save_model
    from dsunlearn.unlearn_losses import nll_loss

    out = {}
    for name, (overrides, save_dir) in runs.items():
        run = UnlearnRun(load_config("tiny_npo", overrides))
        module = run.engine.module
        base = [(n, p) for n, p in module.named_parameters() if not p.requires_grad]
        with gathered([p for _, p in base]):
            base_before = {n: p.detach().clone() for n, p in base}
        initial = {n: safe_get_full_fp32_param(p).detach().double().clone() for n, p in run.engine.named}
        records = [run.step(i) for i in range(run.steps)]
        final = {n: safe_get_full_fp32_param(p).detach().double().clone() for n, p in run.engine.named}
        with gathered([p for _, p in base]):
            base_same = all(torch.equal(base_before[n], p.detach()) for n, p in base)
        plan = StepPlan.for_step(0, run.cfg, run.spec, run.regularizer)
        batch = run.step_batch(0, plan)  # a retain gradient read as shards, as GRU and the G-effect read them
        shard, _ = run.engine.grad_of(batch.retain, nll_loss(1.0, batch.retain_tokens))
        ids = torch.tensor(probe_ids)
        ref_logits = AdapterOffReference(module).logits(ids, torch.ones_like(ids)).double()
        if save_dir:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            _save_model(run, save_dir)
            _save_final_delta(run, save_dir)  # as `dsunlearn unlearn` ends
        out[name] = {
            "records": records,
            "initial": initial,
            "final": final,
            "base_same": base_same,
            "trainable": [n for n, _ in run.engine.named],
            "lora_partitioned": all(is_partitioned(p) for _, p in run.engine.named),
            "shard_numel": shard.layout.numel,
            "shard_groups": list(shard.groups),
            "shard_names": sorted({s.name for s in shard.segments}),
            "lora_numel": sum(t.numel() for t in final.values()),
            "ref_logits": ref_logits if dist.is_main() else None,
            "world": run.world,
        }
        run.engine.deepspeed.destroy()
    return out


class RefLoRA(torch.nn.Module):
    """x W^T + b + s (x A^T) B^T in float64 with W, b frozen (the test's own LoRA layer)."""

    def __init__(self, linear: torch.nn.Linear, a0: torch.Tensor, scale: float):
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(), False)
        self.A = torch.nn.Parameter(a0.clone())
        self.B = torch.nn.Parameter(torch.zeros(linear.out_features, a0.shape[0], dtype=torch.float64))
        self.scale = scale

    def forward(self, x):
        y = x @ self.weight.T + (self.bias if self.bias is not None else 0.0)
        return y + self.scale * ((x @ self.A.T) @ self.B.T)


def _lora_adapt(initial: dict):
    """adapt(model) for reference_unlearn: every target Linear -> RefLoRA with A from the run's initial A."""

    def adapt(model):
        for p in model.parameters():
            p.requires_grad_(False)
        for name, mod in list(model.named_modules()):
            for child_name, child in list(mod.named_children()):
                if child_name in TARGETS and isinstance(child, torch.nn.Linear):
                    full = f"{name}.{child_name}"
                    a0 = initial[f"{PREFIX}{full}.lora_A.default.weight"]
                    setattr(mod, child_name, RefLoRA(child, a0, ALPHA / R))
        return model

    return adapt


def _ref_name(n: str) -> str:  # model.layers.0.self_attn.q_proj.A -> peft's name
    layer, _, which = n.rpartition(".")
    return f"{PREFIX}{layer}.lora_{which}.default.weight"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    z3 = write_zero3_config(root / "z3.json")
    model = tiny_model_dir(tmp_path_factory.getbasetemp() / "unlearn_tiny_model")
    return {"model": model, "z3": z3, "root": root}


PROBE = [[1, 5, 9, 33, 70, 2, 11, 4]]


@pytest.fixture(scope="module")
def results(env):
    m, z3, root = env["model"], env["z3"], env["root"]
    two = {
        "z3": (_overrides(m, "z3", z3, str(root / "u")) + ["model.adapter.save_merged=true"], str(root / "run_z3")),
        "z2": (_overrides(m, "z2", z3, str(root / "u")), None),
        "z3_bf16": (_overrides(m, "z3", z3, str(root / "u")) + ["model.dtype=bfloat16", "engine.precision=bf16"], None),
    }
    one = {"z3": (_overrides(m, "z3", z3, str(root / "u"), micro=4, accum=2), None)}
    r0, r1 = run_distributed(_worker, 2, two, PROBE)
    (s0,) = run_distributed(_worker, 1, one, PROBE)
    return {"w2": r0, "w2_rank1": r1, "w1": s0}


@pytest.fixture(scope="module")
def reference(env, results):
    from dsunlearn.config_io import load_config

    initial = results["w2"]["z3"]["initial"]
    cfg = load_config("tiny_npo", _overrides(env["model"], "z2", env["z3"], "unused"))
    ref = reference_unlearn(cfg, STEPS, world=2, adapt=_lora_adapt(initial))
    return {_ref_name(n): t for n, t in ref.final.items()}, ref


def test_only_adapter_parameters_train_and_are_partitioned(results):
    for key in ("w2", "w1"):
        r = results[key]["z3"]
        assert all(".lora_A." in n or ".lora_B." in n for n in r["trainable"])
        assert len(r["trainable"]) == 2 * 2 * len(TARGETS)  # 2 layers x (A, B) x targets
        assert r["lora_partitioned"], "adapter parameters must be ZeRO-3 partitioned"
        assert r["base_same"], "a base weight changed"
        assert r["shard_groups"] == ["layers.0", "layers.1"]  # adapter names map to their decoder layer
    assert results["w2"]["z2"]["base_same"]
    # the gradient shards hold the adapter's elements only, each on exactly one rank
    for stage in ("z3", "z2"):
        r0, r1 = results["w2"][stage], results["w2_rank1"][stage]
        assert r0["shard_numel"] + r1["shard_numel"] == r0["lora_numel"], stage
        assert set(r0["shard_names"]) | set(r1["shard_names"]) == set(r0["trainable"])
    assert results["w1"]["z3"]["shard_numel"] == results["w1"]["z3"]["lora_numel"]
    # B starts at zero: the adapted model is the base at step 0
    assert all(float(t.abs().max()) == 0.0 for n, t in results["w2"]["z3"]["initial"].items() if ".lora_B." in n)


def test_adapter_step_equals_float64_reference(results, reference):
    ref_final, ref = reference
    for key, stage in (("w2", "z3"), ("w2", "z2"), ("w1", "z3")):
        r = results[key][stage]
        assert set(r["final"]) == set(ref_final)
        err = max(float((r["final"][n] - ref_final[n]).abs().max()) for n in ref_final)
        moved = max(float((ref_final[n] - r["initial"][n]).abs().max()) for n in ref_final)
        assert moved > 1e-3, "the reference barely moved: the test would not see a wrong update"
        assert err <= 1e-6, (key, stage, err)
        for rec, rr in zip(r["records"], ref.steps, strict=True):
            assert math.isclose(rec["gru_dot"], rr.gru_dot, rel_tol=1e-5, abs_tol=1e-9), (key, stage)
            assert rec["gru_projected"] == rr.gru_projected
            assert math.isclose(rec["loss_forget"], rr.loss_forget, rel_tol=1e-6)


def test_bf16_adapter_training_on_zero3(results):
    """bf16 weights, fp32 master: the base stays bit-identical, the adapter is partitioned and its update is the
    fp32 run's up to bf16 rounding (forward in bf16)."""
    r, ref = results["w2"]["z3_bf16"], results["w2"]["z3"]
    assert r["base_same"] and r["lora_partitioned"]
    init_bf16 = torch.cat([t.flatten() for t in r["initial"].values()]).float()
    init_fp32 = torch.cat([t.flatten() for t in ref["initial"].values()]).float()
    assert torch.equal(init_bf16, init_fp32.bfloat16().float())  # the same init, rounded to bf16
    num = max(
        float(((r["final"][n] - r["initial"][n]) - (ref["final"][n] - ref["initial"][n])).abs().max())
        for n in ref["final"]
    )
    den = max(float((ref["final"][n] - ref["initial"][n]).abs().max()) for n in ref["final"])
    MEASURED["bf16_update_rel_err"] = num / den
    assert num / den <= 0.05, num / den


MEASURED: dict[str, float] = {}


def test_reference_is_the_base_with_adapter_off(env, results):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(env["model"], dtype=torch.float32).eval()
    with torch.no_grad():
        want = base(input_ids=torch.tensor(PROBE)).logits.double()
    for key in ("w2", "w1"):
        got = results[key]["z3"]["ref_logits"]
        assert float((got - want).abs().max()) <= 1e-5


def test_saved_adapter_and_merged_model(env, results):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir = env["root"] / "run_z3"
    adapter_dir = run_dir / "adapter"
    assert sorted(p.name for p in adapter_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    final = results["w2"]["z3"]["final"]
    assert len(saved) == len(final)
    for n, t in final.items():  # peft's file names drop the adapter name
        assert torch.equal(saved[n.replace(".default", "")].double(), t)
    base = AutoModelForCausalLM.from_pretrained(env["model"], dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    for n, p in peft_model.named_parameters():
        if n in final:
            assert torch.equal(p.detach().double(), final[n])
    # merged == W + s B A, in float64 from the saved tensors, rounded once to fp32
    base_sd = load_file(str(Path(env["model"]) / "model.safetensors"))
    want = {}
    for n, t in base_sd.items():
        layer = n.removesuffix(".weight")
        a = saved.get(f"{PREFIX}{layer}.lora_A.weight")
        if a is not None and n.endswith(".weight"):
            b = saved[f"{PREFIX}{layer}.lora_B.weight"]
            t = (t.double() + (ALPHA / R) * (b.double() @ a.double())).float()
        want[n] = t
    written = load_file(str(run_dir / "model" / "model.safetensors"))  # model.adapter.save_merged=true
    assert set(written) == set(want)
    assert all(torch.equal(written[n], want[n]) for n in want), "merged != W + s B A"
    assert sum(not torch.equal(written[n], base_sd[n]) for n in want) == 2 * len(TARGETS)  # adapted weights only
    merged = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"), dtype=torch.float32).eval()
    with torch.no_grad():
        ids = torch.tensor(PROBE)
        assert float((merged(input_ids=ids).logits - peft_model(input_ids=ids).logits).abs().max()) < 1e-5


def test_uipe_extrapolation_of_an_adapter_run(env, results, tmp_path):
    """theta(alpha) = W + (1 + alpha) s B A; alpha = 0 is the run's merged model bit for bit; the written
    adapter (lora_alpha scaled) gives the same model through peft."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from dsunlearn.errors import RunError
    from dsunlearn.uipe.extrapolate import extrapolate

    run_dir = env["root"] / "run_z3"
    extrapolate(env["model"], run_dir / "delta", 0.0, tmp_path / "a0")
    merged = load_file(str(run_dir / "model" / "model.safetensors"))
    a0 = load_file(str(tmp_path / "a0" / "model.safetensors"))
    assert set(a0) == set(merged) and all(torch.equal(a0[n], merged[n]) for n in merged)
    alpha = 1.5
    extrapolate(env["model"], run_dir / "delta", alpha, tmp_path / "a15")
    got = load_file(str(tmp_path / "a15" / "model.safetensors"))
    base_sd = load_file(str(Path(env["model"]) / "model.safetensors"))
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    changed = 0
    for n, w in base_sd.items():
        a = saved.get(f"{PREFIX}{n.removesuffix('.weight')}.lora_A.weight")
        if a is None or not n.endswith(".weight"):
            assert torch.equal(got[n], w), n
            continue
        b = saved[f"{PREFIX}{n.removesuffix('.weight')}.lora_B.weight"]
        want = w.double() + (1 + alpha) * (ALPHA / R) * (b.double() @ a.double())
        assert float((got[n].double() - want).abs().max()) <= 2e-7 * float(want.abs().max()), n
        changed += 1
    assert changed == 2 * len(TARGETS)
    base = AutoModelForCausalLM.from_pretrained(env["model"], dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "a15" / "adapter")).eval()
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a15"), dtype=torch.float32).eval()
    with torch.no_grad():
        ids = torch.tensor(PROBE)
        assert float((model(input_ids=ids).logits - peft_model(input_ids=ids).logits).abs().max()) < 1e-5
    with pytest.raises(RunError, match="no adapter"):  # a delta without the adapter beside it
        (tmp_path / "lone").mkdir()
        import shutil

        shutil.copytree(run_dir / "delta", tmp_path / "lone" / "delta")
        extrapolate(env["model"], tmp_path / "lone" / "delta", 0.0, tmp_path / "x")
    assert not (tmp_path / "x").exists()
