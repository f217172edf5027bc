"""Make saved model dirs load in transformers 4.4x (open-unlearning pins 4.46) as well as 5.x.

transformers 5 writes keys 4.4x does not read, and drops keys 4.4x needs:

- `config.json`: 5.x writes `dtype` and `rope_parameters: {rope_theta, ...}`; added: `torch_dtype`, top-level
  `rope_theta`, `partial_rotary_factor` and (non-default RoPE types only) `rope_scaling`; GPT-NeoX's
  `rotary_emb_base`/`rotary_pct` (4.4x ignores the generic names there).
- `tokenizer_config.json`: 5.x writes `tokenizer_class: TokenizersBackend` (a class 4.4x does not have) and
  the chat template only to `chat_template.jinja` (4.4x reads it from the config); written:
  `tokenizer_class: PreTrainedTokenizerFast` (reads `tokenizer.json` as is, in both) and `chat_template`.

5.x reads all of these back to the same values (its config classes fold `rope_theta`/`rope_scaling` into
`rope_parameters`; an explicit `rope_parameters` wins). Keys 5.x writes stay, so nothing is lost for 5.x.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsunlearn.fsutil import atomic_write_json

# 5.x tokenizer classes that are plain `tokenizer.json` readers: 4.4x calls that PreTrainedTokenizerFast.
GENERIC_FAST = ("TokenizersBackend", "PreTrainedTokenizerFast")


def legacy_config(path: str | Path) -> None:
    """Add the 4.4x spellings of dtype and RoPE parameters to a saved `config.json` (in place, atomically)."""
    path = Path(path)
    cfg = json.loads(path.read_text())

    def fix(d: dict) -> None:
        if d.get("dtype") is not None:
            d.setdefault("torch_dtype", d["dtype"])
        rope = d.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope:  # one global dict (not per layer type)
            d.setdefault("rope_theta", rope["rope_theta"])
            if "partial_rotary_factor" in rope:
                d.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
            if d.get("model_type") == "gpt_neox":  # 4.4x GPTNeoXConfig's own spellings
                d.setdefault("rotary_emb_base", rope["rope_theta"])
                d.setdefault("rotary_pct", rope.get("partial_rotary_factor", 0.25))
            if rope.get("rope_type", "default") != "default":
                d.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        for v in d.values():
            if isinstance(v, dict) and "model_type" in v:  # nested sub-configs (text_config, ...)
                fix(v)

    fix(cfg)
    atomic_write_json(path, cfg)


def legacy_tokenizer_config(tok_dir: str | Path) -> None:
    """Concrete `tokenizer_class` and the inline `chat_template` in a saved dir's `tokenizer_config.json`."""
    tok_dir = Path(tok_dir)
    path = tok_dir / "tokenizer_config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") in GENERIC_FAST and (tok_dir / "tokenizer.json").is_file():
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    jinja = tok_dir / "chat_template.jinja"
    if "chat_template" not in cfg and jinja.is_file():
        cfg["chat_template"] = jinja.read_text(encoding="utf-8")
    atomic_write_json(path, cfg)
