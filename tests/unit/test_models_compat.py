"""Saved tokenizers and configs load back as saved, in transformers 5 and in the files 4.4x reads.

- `save_hf_model` writes `tokenizer_config.json` with `tokenizer_class: PreTrainedTokenizerFast` (a class
  4.4x has; 5.x writes `TokenizersBackend`) and the chat template inside it; `config.json` with `torch_dtype`
  and top-level `rope_theta` next to 5.x's `dtype`/`rope_parameters`, read back by 5.x to the same config.
- `load_tokenizer` on a saved Qwen2 dir gives the saved tokenizer: same class of behaviour, same length, same
  ids and chat-template output (AutoTokenizer in 5.x would give Qwen2Tokenizer with one token more); the
  vocabulary check then passes, and with AutoTokenizer's tokenizer it names the extra token.
"""

from __future__ import annotations

import json

import pytest
import torch

from dsunlearn.errors import ModelError
from dsunlearn.models.load import check_vocab, load_tokenizer
from dsunlearn.models.tiny import CHAT_TEMPLATE, train_tokenizer

TEXTS = ["Question: Who wrote it?\nAnswer: Limo Ndiaye", "<|bos|>héllo wörld 😀<|eos|>", "  spaces\tand\ttabs "]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dsunlearn.engine.hf_save import save_hf_model
    from dsunlearn.suites.tofu import synthetic

    splits = synthetic.generate(seed=0, n_authors=4, n_world_facts=4, n_real_authors=1)
    tok = train_tokenizer(list(synthetic.corpus(splits)), vocab_size=300, max_length=64)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, rope_theta=12345.0)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    return tok, model, save_hf_model(model, tmp_path_factory.mktemp("qwen") / "model", tokenizer=tok)


def test_files_name_classes_and_keys_that_4_4x_reads(saved):
    from transformers import AutoConfig

    tok, model, d = saved
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert tc["tokenizer_class"] == "PreTrainedTokenizerFast" and tc["chat_template"] == CHAT_TEMPLATE
    assert (d / "tokenizer.json").is_file()
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32" and cfg["rope_theta"] == 12345.0
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    back = AutoConfig.from_pretrained(d)
    assert back.rope_parameters == model.config.rope_parameters and back.vocab_size == len(tok)


def test_saved_tokenizer_loads_back_identically(saved):
    tok, model, d = saved
    back = load_tokenizer(str(d))
    assert type(back).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast") and len(back) == len(tok)
    for t in TEXTS:
        assert back(t)["input_ids"] == tok(t)["input_ids"], t
        assert back.decode(back(t)["input_ids"]) == tok.decode(tok(t)["input_ids"])
    msgs = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a."}]
    assert back.apply_chat_template(msgs, tokenize=False) == tok.apply_chat_template(msgs, tokenize=False)
    assert (back.bos_token, back.eos_token, back.pad_token) == (tok.bos_token, tok.eos_token, tok.pad_token)
    check_vocab(model, back)  # vocab == len(tokenizer): accepted


def test_vocab_message_names_the_tokens_without_a_row(saved):
    from transformers import AutoTokenizer

    tok, model, d = saved
    auto = AutoTokenizer.from_pretrained(d)  # transformers 5: Qwen2Tokenizer, adds <|endoftext|>
    if len(auto) == len(tok):
        pytest.skip("this transformers loads the saved class for qwen2")
    with pytest.raises(ModelError) as e:
        check_vocab(model, auto, where=f"of '{d}'")
    msg = str(e.value)
    assert "\n" not in msg and type(auto).__name__ in msg and f"ids {len(tok)}.." in msg and "endoftext" in msg
