"""Hidden states by forward hook (engine/hidden.py) and the trainable subset (engine/trainable.py) on every
architecture of tests/helpers/arch_models.py and a 4-layer Llama: the hook's output of decoder layer k equals
`output_hidden_states[k + 1]` (an independent path through transformers), the layer list is found by the parameter
names, the subset is exactly layers k-n+1..k's pattern, and bad settings fail with one line."""

from __future__ import annotations

import pytest
import torch

from dsunlearn.engine.hidden import LayerOutput, decoder_layers
from dsunlearn.engine.trainable import freeze_except, layer_selector
from dsunlearn.errors import ConfigError
from helpers.arch_models import ARCHS, build

# the down projection of the MLP in each architecture (what RMU's train_params names there)
DOWN = {"gpt2": r"mlp\.c_proj\.weight", "gpt_neox": r"mlp\.dense_4h_to_h\.weight", "opt": r"fc2\.weight",
        "falcon": r"mlp\.dense_4h_to_h\.weight", "mpt": r"ffn\.down_proj\.weight", "phi": r"mlp\.fc2\.weight",
        "mixtral": r"mlp\.experts\..*"}  # fmt: skip


def _llama4():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=4, num_attention_heads=2,
                      max_position_embeddings=32, mlp_bias=True)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_hook_sees_output_hidden_states_of_the_layer(arch):
    model = build(arch).eval()
    hook = LayerOutput(model, 0)
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    got = hook.take()
    assert got.shape == out.hidden_states[1].shape
    assert torch.equal(got, out.hidden_states[1]), arch
    with pytest.raises(RuntimeError, match="no forward"):
        hook.take()  # taken once: not kept
    hook.remove()
    with torch.no_grad():
        model(input_ids=ids)
    with pytest.raises(RuntimeError):
        hook.take()
    # the subset: the architecture's MLP down projection of layer 1 only, everything else frozen
    kept = freeze_except(model, layer_selector([1], DOWN.get(arch, r"mlp\.down_proj\.weight")))
    assert kept
    layer1 = {id(p) for p in decoder_layers(model)[1].parameters()}
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in kept), name
        if p.requires_grad:
            assert id(p) in layer1, name


@pytest.mark.parametrize("k", [0, 1, 2])
def test_layer_k_of_a_deeper_model_and_its_subset(k):
    model = _llama4()
    hook = LayerOutput(model, k)
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(hook.take(), out.hidden_states[k + 1])
    assert not torch.equal(out.hidden_states[k + 1], out.hidden_states[k + 2])  # a wrong layer would show
    kept = freeze_except(model, layer_selector(range(max(0, k - 1), k + 1), r"mlp\.down_proj\.weight"))
    want = [f"model.layers.{i}.mlp.down_proj.weight" for i in range(max(0, k - 1), k + 1)]
    assert kept == want  # the bias of down_proj is not matched: the pattern is matched whole
    assert [n for n, p in model.named_parameters() if p.requires_grad] == want


def test_bad_settings_fail_with_one_line():
    model = _llama4()
    with pytest.raises(ConfigError) as e:
        LayerOutput(model, 4)
    assert str(e.value).startswith("objective.layer=4 is out of range: this model has 4 decoder layers (0..3)")
    with pytest.raises(ConfigError, match=r"objective.train_params='mlp\(' is not a regular expression"):
        layer_selector([1], "mlp(")
    with pytest.raises(ConfigError) as e:
        freeze_except(model, layer_selector([1], r"mlp\.nothing"), "objective.train_params in objective.train_layers")
    msg = str(e.value)
    assert "matches no parameter" in msg and "model.layers.0." in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="no decoder-layer list"):
        decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
