"""Fine-tuning on real DeepSpeed engines: same global batch -> same weights whatever the world size / ZeRO stage.

1 rank x (micro 4, accum 2) and 2 ranks x (micro 4, accum 1) train on the same 8 samples per step; the loss is
the global-batch token mean in both, so the final weights agree to float tolerance (SGD: tight; the
consolidated ZeRO-3 save must match too).
"""

import pytest
import torch
from safetensors.torch import load_file

from helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed

SMALL = [
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=2",
    "model.tiny.intermediate_size=64",
    "model.tiny.vocab_size=400",
    "data.synthetic.n_authors=12",
    "data.synthetic.n_world_facts=8",
    "data.synthetic.n_real_authors=2",
    "run.finetune_targets=[full]",
    "engine.max_steps=3",
    "engine.micro_batch_size=4",
    "engine.global_batch_size=8",
    "engine.warmup_ratio=0.0",
    "engine.scheduler=constant",
    "eval.batch_size=16",
    "eval.at_end=false",  # weights are the point here, not the TOFU evaluation
]


def _finetune(out_dir, overrides):
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.finetune import run_finetune

    cfg = load_config("tiny_finetune", SMALL + [f"run.output_dir={out_dir}"] + overrides)
    return run_finetune(cfg)


def _weights(path):
    return load_file(str(path / "full" / "model" / "model.safetensors"))


def _close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst <= atol, worst
    return worst


@pytest.mark.parametrize("opt, atol", [("sgd", 1e-6), ("adamw", 1e-4)])
def test_one_rank_equals_two_ranks(tmp_path, opt, atol):
    common = [f"engine.optimizer={opt}", "engine.lr=0.05" if opt == "sgd" else "engine.lr=1e-2"]
    (s1,) = run_distributed(_finetune, 1, str(tmp_path / "w1"), common + ["engine.grad_accum_steps=2"])
    s2 = run_distributed(_finetune, 2, str(tmp_path / "w2"), common + ["engine.grad_accum_steps=1"])[0]
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    base = load_file(str(tmp_path / "w1" / "base" / "model" / "model.safetensors"))
    w1, w2 = _weights(tmp_path / "w1"), _weights(tmp_path / "w2")
    assert max((w1[k] - base[k]).abs().max().item() for k in w1) > 100 * atol  # training really moved them
    _close(w1, w2, atol)


def test_zero3_consolidated_save_matches_zero2(tmp_path):
    common = ["engine.optimizer=sgd", "engine.lr=0.05", "engine.grad_accum_steps=1"]
    run_distributed(_finetune, 2, str(tmp_path / "z2"), common + ["engine.zero_stage=2"])
    s3 = run_distributed(_finetune, 2, str(tmp_path / "z3"), common + ["engine.zero_stage=3"])[0]
    _close(_weights(tmp_path / "z2"), _weights(tmp_path / "z3"), 1e-6)
    row = s3["models"]["full"]
    assert row["prob_after"]["forget"] > row["prob_before"]["forget"]
    # The saved model is a normal HF checkpoint: it loads and its tied head is restored.
    from dsunlearn.models.load import load_causal_lm

    m = load_causal_lm(str(tmp_path / "z3" / "full" / "model"))
    assert torch.equal(m.lm_head.weight, m.model.embed_tokens.weight)
