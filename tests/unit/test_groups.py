"""Layer groups over the parameter names of real (tiny, config-built) Hugging Face causal LMs."""

import pytest
import torch
import transformers as tf

from dsunlearn.engine.groups import group_names, group_of

L = 2  # layers in every tiny model below


def _names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


TINY = {
    "llama": lambda tie: tf.LlamaForCausalLM(
        tf.LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=L,
            num_attention_heads=2,
            tie_word_embeddings=tie,
        )
    ),
    "gpt2": lambda tie: tf.GPT2LMHeadModel(
        tf.GPT2Config(vocab_size=64, n_embd=16, n_layer=L, n_head=2, n_positions=32, tie_word_embeddings=tie)
    ),
    "gpt_neox": lambda tie: tf.GPTNeoXForCausalLM(
        tf.GPTNeoXConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=L,
            num_attention_heads=2,
            tie_word_embeddings=tie,
        )
    ),
    "opt": lambda tie: tf.OPTForCausalLM(
        tf.OPTConfig(
            vocab_size=64,
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=L,
            num_attention_heads=2,
            word_embed_proj_dim=16,
            max_position_embeddings=32,
            tie_word_embeddings=tie,
        )
    ),
    "phi": lambda tie: tf.PhiForCausalLM(
        tf.PhiConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=L,
            num_attention_heads=2,
            tie_word_embeddings=tie,
        )
    ),
}


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_real_models_map_to_canonical_groups(arch, tie):
    model = TINY[arch](tie)
    names = _names(model)
    # Phi's head has a bias of its own, which stays in `lm_head` when the weight is tied.
    has_head = not tie or arch == "phi"
    expected = ["embed", *[f"layers.{i}" for i in range(L)], "norm"] + (["lm_head"] if has_head else [])
    assert group_names(names) == expected, {n: group_of(n) for n in names}
    if tie:  # a tied weight is one parameter, reported once, in `embed`
        head = model.get_output_embeddings().weight
        (tied_name,) = [n for n, p in model.named_parameters() if p is head]
        assert group_of(tied_name) == "embed"


def test_block_internals_stay_in_their_block():
    assert group_of("model.layers.0.input_layernorm.weight") == "layers.0"
    assert group_of("transformer.h.11.ln_1.bias") == "layers.11"
    assert group_of("gpt_neox.layers.3.attention.query_key_value.weight") == "layers.3"
    assert group_of("model.decoder.layers.7.final_layer_norm.weight") == "layers.7"
    assert group_of("transformer.blocks.5.attn.Wqkv.weight") == "layers.5"


@pytest.mark.parametrize(
    "name, group",
    [
        ("model.embed_tokens.weight", "embed"),
        ("transformer.wte.weight", "embed"),
        ("transformer.wpe.weight", "embed"),
        ("gpt_neox.embed_in.weight", "embed"),
        ("model.decoder.embed_positions.weight", "embed"),
        ("model.norm.weight", "norm"),
        ("transformer.ln_f.bias", "norm"),
        ("gpt_neox.final_layer_norm.weight", "norm"),
        ("model.final_layernorm.weight", "norm"),
        ("model.decoder.final_layer_norm.weight", "norm"),
        ("lm_head.weight", "lm_head"),
        ("lm_head.bias", "lm_head"),
        ("embed_out.weight", "lm_head"),
        ("model.language_model.layers.0.mlp.up_proj.weight", "layers.0"),
        ("model.decoder.project_in.weight", "embed"),  # runs before the first layer (OPT-350m)
        ("model.decoder.project_out.weight", "other"),
        ("transformer.norm_f.weight", "norm"),  # MPT
        ("transformer.word_embeddings_layernorm.weight", "embed"),  # Bloom
        ("model.embedding_norm.weight", "norm"),  # LFM2: applied after the last layer
        ("score.weight", "other"),
    ],
)
def test_known_names(name, group):
    assert group_of(name) == group


def test_unknown_projection_goes_to_other_and_sorts_last():
    model = tf.OPTForCausalLM(
        tf.OPTConfig(
            vocab_size=64,
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=L,
            num_attention_heads=2,
            word_embed_proj_dim=8,  # OPT-350m style: project_in / project_out around the decoder
            max_position_embeddings=32,
        )
    )
    assert group_names(_names(model)) == ["embed", "layers.0", "layers.1", "norm", "other"]


def test_canonical_order_is_numeric():
    names = [f"model.layers.{i}.w" for i in (10, 2, 1)] + ["lm_head.weight", "model.norm.weight", "x.y"]
    names.append("model.embed_tokens.weight")
    assert group_names(names) == ["embed", "layers.1", "layers.2", "layers.10", "norm", "lm_head", "other"]
