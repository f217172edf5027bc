"""Model loading: safetensors only, causal LMs only, tokenizer/model vocabulary checks; the tiny default."""

import pytest
import torch

from dsunlearn.config import TinyModelConfig
from dsunlearn.engine.hf_save import save_hf_model
from dsunlearn.errors import ModelError
from dsunlearn.models.load import check_model_dir, check_vocab, load_causal_lm, load_tokenizer
from dsunlearn.models.tiny import build_tiny_model

SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


@pytest.fixture
def saved_tiny(tmp_path, tiny_tokenizer):
    model = build_tiny_model(SMALL, tiny_tokenizer, seed=0)
    return save_hf_model(model, tmp_path / "m", tokenizer=tiny_tokenizer), model


def test_tiny_round_trips_through_from_pretrained(saved_tiny, tiny_tokenizer):
    path, model = saved_tiny
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    loaded = load_causal_lm(str(path))
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # still tied
    tok = load_tokenizer(str(path))
    assert tok.chat_template and len(tok) == len(tiny_tokenizer)
    check_vocab(loaded, tok)


def test_seeded_init_is_deterministic(tiny_tokenizer):
    a, b = (build_tiny_model(SMALL, tiny_tokenizer, seed=7) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_refusals(saved_tiny, tmp_path, tiny_tokenizer):
    path, model = saved_tiny
    with pytest.raises(ModelError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
    pickle_dir = tmp_path / "pickle"
    pickle_dir.mkdir()
    (pickle_dir / "config.json").write_text((path / "config.json").read_text())
    torch.save(model.state_dict(), pickle_dir / "pytorch_model.bin")
    with pytest.raises(ModelError, match="only pickle weights.*safetensors"):
        load_causal_lm(str(pickle_dir))
    for name, cfg_json in [
        ("vit", '{"model_type": "vit"}'),
        ("cls", '{"model_type": "llama", "architectures": ["LlamaForSequenceClassification"]}'),
    ]:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(cfg_json)
        (d / "model.safetensors").write_bytes(b"")
        with pytest.raises(ModelError, match="not a causal language model"):
            check_model_dir(d)
    from dsunlearn.models.tiny import train_tokenizer

    small_tok = train_tokenizer(["x"], vocab_size=262, max_length=32)
    small_model = build_tiny_model(SMALL, small_tok, seed=0)
    assert len(tiny_tokenizer) > small_model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ModelError, match="do not belong together"):
        check_vocab(small_model, tiny_tokenizer)
