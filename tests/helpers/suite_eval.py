"""What the suites' distributed invariance tests share (tests/distributed/test_{muse,wmdp}_invariance.py): a tiny
Llama and tokenizer for a suite's synthetic data, and one rank's evaluation of a saved model twice, as a plain HF
model (one replica per rank) and as a DeepSpeed ZeRO-3 engine's module (every parameter partitioned)."""

from __future__ import annotations

from pathlib import Path


def tiny_suite_model(suite_name: str, overrides: list[str]):
    """(config of `overrides` on the defaults, a BPE of 400 tokens trained on the suite's corpus (context 256),
    a fresh tiny Llama for it: hidden 32, 2 layers, 4 heads, MLP 64, seed 0)."""
    from dsunlearn.config import TinyModelConfig
    from dsunlearn.config_io import load_config
    from dsunlearn.models.tiny import build_tiny_model, train_tokenizer
    from dsunlearn.suites import get_suite

    cfg = load_config(None, overrides)
    tok = train_tokenizer(get_suite(suite_name).corpus(cfg.data), 400, 256)
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=256)
    return cfg, tok, build_tiny_model(tiny, tok, seed=0)


def save_model(model, tok, path: Path) -> str:
    """`model` and `tok` saved as an HF directory at `path`; its path as a string."""
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def plain_and_zero3_logs(suite_name: str, overrides: list[str], model_dir: str):
    """Worker for `helpers.spawn.run_distributed`: (the suite's log of the saved model loaded plainly, its log
    of a ZeRO-3 engine's module built from the same weights); every rank returns both."""
    import deepspeed
    import torch

    from dsunlearn.config_io import load_config
    from dsunlearn.engine.partitioning import module_is_partitioned
    from dsunlearn.models.load import load_causal_lm, load_tokenizer
    from dsunlearn.suites import get_suite

    cfg = load_config(None, overrides)
    suite, tok = get_suite(suite_name), load_tokenizer(model_dir)
    plain = suite.evaluate(load_causal_lm(model_dir), tok, cfg.data, cfg.eval)
    model = load_causal_lm(model_dir)
    ds_cfg = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True, "gradient_clipping": 0.0,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), config=ds_cfg)
    assert module_is_partitioned(engine.module)
    zero3 = suite.evaluate(engine.module, tok, cfg.data, cfg.eval)
    return plain, zero3
