"""A tiny untrained Llama + locally trained tokenizer saved as an HF dir: the model the integration tests start from."""

from __future__ import annotations

from pathlib import Path

SMALL_DATA = [
    "data.synthetic.n_authors=12",
    "data.synthetic.n_world_facts=8",
    "data.synthetic.n_real_authors=2",
    "eval.batch_size=16",
    "eval.max_new_tokens=8",
    "data.max_length=128",
]


def make_tiny_model(out_dir: Path, hidden: int = 32, layers: int = 2, small_corpus: bool = True) -> Path:
    """Tokenizer trained on the small synthetic set of SMALL_DATA (or on the default 40-author set)."""
    from dsunlearn.config import TinyModelConfig
    from dsunlearn.models.tiny import build_tiny_model, train_tokenizer
    from dsunlearn.suites.tofu import synthetic

    sizes = {"n_authors": 12, "n_world_facts": 8, "n_real_authors": 2} if small_corpus else {}
    splits = synthetic.generate(seed=0, **sizes)
    tok = train_tokenizer(list(synthetic.corpus(splits)), vocab_size=400, max_length=64)
    model = build_tiny_model(TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4,
                                             intermediate_size=2 * hidden), tok, seed=0)  # fmt: skip
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return Path(out_dir)


def briefly_trained_model(tokenizer, data_cfg, steps: int = 40):
    """A tiny Llama trained for a few Adam steps on `full`: its generations vary by question and some end
    with EOS (an untrained one repeats a single token). Deterministic (seeded init and batches)."""
    import torch

    from dsunlearn.config import TinyModelConfig
    from dsunlearn.data.collate import encode_items, pad_batch
    from dsunlearn.models.tiny import build_tiny_model
    from dsunlearn.suites.tofu.data import load_split

    m = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
                         tokenizer, seed=0)  # fmt: skip
    import dataclasses

    enc = encode_items(tokenizer, load_split(data_cfg, "full"), dataclasses.replace(data_cfg, max_length=64))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        b = pad_batch([enc[i] for i in torch.randperm(len(enc), generator=g)[:16].tolist()], 0)
        m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        opt.step()
        opt.zero_grad()
    return m.eval()
