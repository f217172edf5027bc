"""LoRA adapters (issue 17) on one process: bad `model.adapter` configs, target modules a model lacks, and the
merged model of another architecture (GPT-2: Conv1D weights stored [d_in, d_out], peft's fan_in_fan_out)
against W + s (B A)^T computed here in float64."""

from __future__ import annotations

import pytest
import torch

from dsunlearn.config import AdapterConfig
from dsunlearn.config_io import load_config
from dsunlearn.errors import ConfigError, ModelError

BAD = [
    ("model.adapter.type=ia3", "choose one of: none, lora"),
    ("model.adapter.r=0", r"model.adapter.r=0 is out of range"),
    ("model.adapter.r=100000", r"model.adapter.r=100000 is out of range"),
    ("model.adapter.alpha=0", r"model.adapter.alpha=0.0 is out of range"),
    ("model.adapter.dropout=1.0", r"model.adapter.dropout=1.0 is out of range"),
    ("model.adapter.dropout=-0.1", r"model.adapter.dropout=-0.1 is out of range"),
    ("model.adapter.target_modules=q_proj", "expected list"),
    ("model.adapter.target_modules=[1]", "is not a list of module names"),
    ("model.adapter.target_modules=[all-linear,q_proj]", r"give \[all-linear\] alone"),
    ("model.adapter.rank=4", "model.adapter.rank"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_adapter_config_is_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config("tiny_npo", [override])
    assert "\n" not in str(e.value)


def test_good_adapter_config():
    cfg = load_config("tiny_npo", ["model.adapter.type=lora", "model.adapter.r=8", "model.adapter.alpha=16",
                                   "model.adapter.target_modules=[q_proj,v_proj]"])  # fmt: skip
    a = cfg.model.adapter
    assert (a.type, a.r, a.alpha, a.target_modules, a.save_merged) == ("lora", 8, 16.0, ["q_proj", "v_proj"], False)


def test_finetune_refuses_an_adapter():
    from dsunlearn.recipes.finetune import run_finetune

    with pytest.raises(ConfigError, match="for `dsunlearn unlearn`"):
        run_finetune(load_config("tiny_finetune", ["model.adapter.type=lora"]))


def test_missing_target_modules_is_one_line():
    from dsunlearn.models.adapters import attach_adapter
    from helpers.arch_models import build

    with pytest.raises(ModelError, match="cannot be adapted") as e:
        attach_adapter(build("llama_untied"), AdapterConfig(type="lora", r=2, target_modules=["c_attn"]))
    assert "\n" not in str(e.value)


def test_gpt2_merged_model_and_adapter_files(tmp_path):
    """GPT-2's c_attn is a Conv1D (weight [d_in, d_out]): merged = W + s (B A)^T; only lora parameters train."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from dsunlearn.engine.adapter_save import save_adapter, save_merged_model
    from dsunlearn.engine.groups import group_of
    from dsunlearn.models.adapters import attach_adapter
    from helpers.arch_models import build

    base_dir = tmp_path / "base"
    build("gpt2").save_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = attach_adapter(base, AdapterConfig(type="lora", r=2, alpha=6.0, target_modules=["c_attn"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    # adapter names (base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight) keep their layer group
    assert {group_of(n) for n in trainable} == {"layers.0", "layers.1"}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter (B != 0)
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    save_adapter(model, tmp_path / "adapter")
    save_merged_model(model, tmp_path / "merged")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    base_sd = load_file(str(base_dir / "model.safetensors"))
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert set(merged) == set(base_sd)
    changed = 0
    for n, w in base_sd.items():
        layer = n.removesuffix(".weight")
        a = saved.get(f"base_model.model.{layer}.lora_A.weight")
        if a is None or not n.endswith(".weight"):
            assert torch.equal(merged[n], w), n
            continue
        b = saved[f"base_model.model.{layer}.lora_B.weight"]
        want = (w.double() + (6.0 / 2) * (b.double() @ a.double()).T).float()  # Conv1D: [d_in, d_out]
        assert torch.equal(merged[n], want), n
        changed += 1
    assert changed == 2  # c_attn of both layers
    ids = torch.tensor([[1, 7, 3, 50, 2]])
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), str(tmp_path / "adapter")
    ).eval()
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        want = model.eval()(input_ids=ids).logits
        assert float((reloaded(input_ids=ids).logits - want).abs().max()) == 0.0
        assert float((m(input_ids=ids).logits - want).abs().max()) < 1e-5


FAMILIES = [("tofu_llama2_7b_lora", "tofu_llama2_7b"), ("tofu_llama31_8b_lora", "tofu_llama32_1b")]


@pytest.mark.parametrize("family,full", FAMILIES)
def test_shipped_lora_configs_cover_every_objective(family, full):
    """Every objective of the full-model family has a LoRA twin (with and without GRU): the same objective and
    geometry, rank 32 on every linear layer but the head, the base frozen."""
    from dsunlearn.config_io import shipped_configs

    names = shipped_configs()
    twins = [n.removeprefix(full + "_") for n in names if n.startswith(full + "_") and not n.startswith(family)]
    assert len(twins) >= 20
    for x in twins:
        cfg, ref = load_config(f"{family}_{x}"), load_config(f"{full}_{x}")
        a = cfg.model.adapter
        assert (a.type, a.r, a.alpha, a.dropout, a.target_modules) == ("lora", 32, 32.0, 0.05, ["all-linear"])
        assert cfg.objective == ref.objective and cfg.geometry == ref.geometry, x
        assert cfg.run.output_dir == f"runs/{family}_{x}"
