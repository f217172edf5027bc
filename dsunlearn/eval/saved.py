"""A saved HF model dir, loaded for evaluation: its tokenizer, one full replica per rank on this rank's device."""

from __future__ import annotations

import os


def load_saved(model_dir: str | os.PathLike[str], model_cfg):
    """(model, tokenizer) of `model_dir`: its own tokenizer unless `model_cfg.tokenizer` names one (a ModelConfig
    gives dtype and trust_remote_code too), the vocabulary checked against the embedding."""
    from dsunlearn import dist
    from dsunlearn.models.load import check_vocab, load_causal_lm, load_tokenizer

    m = model_cfg
    tokenizer = load_tokenizer(m.tokenizer or str(model_dir), m.trust_remote_code)
    model = load_causal_lm(str(model_dir), m.dtype, m.trust_remote_code).to(dist.device())
    check_vocab(model, tokenizer, where=f"of '{model_dir}'")
    return model, tokenizer
