"""Tiny models of the architectures whose checkpoint names differ from their in-memory names (or not), built
from their config classes and saved with `save_pretrained` (fp32): the originals of the layout tests."""

from __future__ import annotations

from pathlib import Path

V, H, L = 96, 32, 2
COMMON = dict(vocab_size=V, num_hidden_layers=L, num_attention_heads=4, max_position_embeddings=64)
ARCHS = {
    "gpt2": (
        "GPT2Config",
        dict(vocab_size=V, n_embd=H, n_layer=L, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0),
    ),  # fmt: skip
    "gpt_neox": ("GPTNeoXConfig", dict(COMMON, hidden_size=H, intermediate_size=64, tie_word_embeddings=False)),
    "opt": ("OPTConfig", dict(COMMON, hidden_size=H, ffn_dim=64, word_embed_proj_dim=H)),
    "qwen2": ("Qwen2Config", dict(COMMON, hidden_size=H, intermediate_size=64, num_key_value_heads=2)),
    "mistral": ("MistralConfig", dict(COMMON, hidden_size=H, intermediate_size=64, num_key_value_heads=2)),
    "phi": ("PhiConfig", dict(COMMON, hidden_size=H, intermediate_size=64)),
    "gemma": ("GemmaConfig", dict(COMMON, hidden_size=H, intermediate_size=64, num_key_value_heads=2, head_dim=8)),
    "falcon": ("FalconConfig", dict(COMMON, hidden_size=H, new_decoder_architecture=False, multi_query=True)),
    "mixtral": (
        "MixtralConfig",
        dict(
            COMMON,
            hidden_size=H,
            intermediate_size=32,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
        ),
    ),  # fmt: skip
    "mpt": ("MptConfig", dict(vocab_size=V, d_model=H, n_layers=L, n_heads=4, max_seq_len=64)),
    "llama_untied": ("LlamaConfig", dict(COMMON, hidden_size=H, intermediate_size=64, tie_word_embeddings=False)),
}


def build(arch: str, seed: int = 0):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    cfg_name, kw = ARCHS[arch]
    config = getattr(transformers, cfg_name)(**kw)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def save_archs(root: Path) -> dict[str, Path]:
    out = {}
    for arch in ARCHS:
        out[arch] = Path(root) / arch
        build(arch).save_pretrained(out[arch])
    return out


def train_and_save(origs: dict, out_root: str, cases: list[tuple[str, str]], steps: int = 2) -> list[str]:
    """On every rank: for each (arch, precision), a real ZeRO-3 engine (partitioned: persistence threshold 0)
    takes `steps` AdamW steps on random tokens; `model/` is written by `save_hf_model` and `delta/` by
    `save_delta_shard`, as `dsunlearn unlearn` does. Returns the case dirs."""
    import torch

    from dsunlearn import dist
    from dsunlearn.config import EngineConfig
    from dsunlearn.engine.delta import save_delta_shard, snapshot_fragments
    from dsunlearn.engine.ds_setup import build_ds_config, create_engine, zero3_init_context
    from dsunlearn.engine.hf_save import save_hf_model
    from dsunlearn.manifest import write_manifest
    from dsunlearn.models.load import load_causal_lm
    from dsunlearn.uipe.delta_format import model_hash

    dirs = []
    for arch, precision in cases:
        out = Path(out_root) / f"{arch}_{precision}_w{dist.world_size()}"
        e = EngineConfig(zero_stage=3, precision=precision, optimizer="adamw", lr=1e-2, micro_batch_size=2,
                         scheduler="constant")  # fmt: skip
        ds = build_ds_config(e, dist.world_size())
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        with zero3_init_context(ds):
            model = load_causal_lm(str(origs[arch]), "float32")
        engine, _ = create_engine(model, e, steps, ds)
        named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        theta_o = snapshot_fragments(engine, named)
        g = torch.Generator().manual_seed(dist.rank())
        for _ in range(steps):
            ids = torch.randint(0, V, (2, 8), generator=g)
            engine.backward(engine(input_ids=ids, labels=ids).loss)
            engine.step()
        save_hf_model(engine.module, out / "model")  # ZeRO-3 partitioning detected
        (out / "delta").mkdir(parents=True, exist_ok=True)
        save_delta_shard(engine, named, theta_o, out / "delta", model_hash(origs[arch]))
        dist.barrier()
        write_manifest(out / "delta")  # collective, as `dsunlearn unlearn` does
        engine.destroy()
        dirs.append(str(out))
    return dirs
