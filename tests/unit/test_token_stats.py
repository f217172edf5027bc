"""The chunked per-token statistics (`dsunlearn/eval/token_stats.py`) against a float64 full-softmax reference,
a hand-worked example, and per item on a real HF model."""

from __future__ import annotations

import math

import pytest
import torch

from dsunlearn.eval.token_stats import item_token_stats, vocab_stats


def _reference(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """float64, the whole [B, T, V] at once."""
    lv = torch.log_softmax(logits.double()[:, :-1], dim=-1)
    p = lv.exp()
    mu = (p * lv).sum(-1)
    y = labels[:, 1:].clamp(min=0)
    return {
        "logp": lv.gather(-1, y[..., None]).squeeze(-1),
        "mu": mu,
        "var": (p * lv**2).sum(-1) - mu**2,
        "pred": logits[:, :-1].argmax(-1),
        "mask": labels[:, 1:] != -100,
    }


def test_hand_worked_example():
    logits = torch.tensor([[[0.0, math.log(3.0)], [9.0, 9.0]]], dtype=torch.float64)
    s = vocab_stats(logits, torch.tensor([[-100, 1]]))
    assert s["logp"].item() == pytest.approx(math.log(0.75), abs=1e-15)
    mu = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    assert s["mu"].item() == pytest.approx(mu, abs=1e-15)
    assert s["var"].item() == pytest.approx(0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2 - mu**2, abs=1e-15)
    assert s["pred"].item() == 1 and s["mask"].tolist() == [[True]]


@pytest.mark.parametrize("chunk", [1, 3, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_equals_the_float64_reference(chunk, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=g) * 3).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :3] = -100  # a prompt
    labels[2, 5:] = -100  # padding
    got, want = vocab_stats(logits, labels, chunk_size=chunk), _reference(logits, labels)
    assert torch.equal(got["mask"], want["mask"]) and torch.equal(got["pred"], want["pred"])
    for key in ("logp", "mu", "var"):
        torch.testing.assert_close(got[key].double()[want["mask"]], want[key][want["mask"]], atol=2e-5, rtol=1e-5)


def test_items_on_a_model_equal_one_forward_each(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from dsunlearn.data.collate import encode_qa, pad_id_of

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    qa = [("Who wrote it?", "Alice did."), ("Where?", "In a small town by the sea."), ("When?", "1999.")]
    encoded = [encode_qa(tiny_tokenizer, q, a, 64, "refuse", f"item {i}") for i, (q, a) in enumerate(qa)]
    pad = pad_id_of(tiny_tokenizer)
    stats = item_token_stats(model, encoded, batch_size=2, pad_id=pad)  # padded batches of 2 and 1
    assert len(stats) == 3
    for enc, s in zip(encoded, stats, strict=True):
        ids = torch.tensor([enc.input_ids])
        labels = torch.tensor([enc.labels])
        ref = _reference(model(input_ids=ids).logits, labels)
        keep = ref["mask"][0]
        assert s.label == labels[0, 1:][keep].tolist() and len(s.logp) == int(keep.sum()) > 0
        assert s.pred == ref["pred"][0][keep].tolist()
        for key in ("logp", "mu", "var"):
            assert s.__dict__[key] == pytest.approx(ref[key][0][keep].tolist(), abs=1e-4), key
