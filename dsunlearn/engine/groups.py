"""Layer groups of a Hugging Face causal LM, from parameter names alone.

The G-effect is given per layer group (docs/methods.md): `embed`, `layers.0` .. `layers.{L-1}`, `norm` (the final
norm), `lm_head`. Names are matched by their module components, so any prefix works (`model.`, `transformer.`,
`gpt_neox.`, `model.decoder.`, `model.language_model.`, `backbone.`, ...). The rules below are checked in
order; tests/unit/test_groups_all_archs.py checks them against the structure of every causal LM transformers
ships (decoder-layer ModuleList, input/output embeddings, and which modules run before the first layer or after
the last one), built tiny on the meta device.

| group      | matched component(s)                                                                        |
|------------|---------------------------------------------------------------------------------------------|
| `layers.N` | `layers.N`, `h.N`, `blocks.N`, `layer.N`, XLM's `attentions.N`/`ffns.N`/`layer_norm1.N`/... |
|            | (checked first, so the norms and embeddings inside a block stay in that block)              |
| `lm_head`  | `lm_head` (and all of it: RoBERTa's `lm_head.dense`/`layer_norm`), `embed_out` (GPT-NeoX),  |
|            | `cls` (BERT's `cls.predictions.*`), `lm_loss` (XLNet), `pred_layer` (XLM), `generator_*`    |
|            | (ELECTRA), a first component `output` (GIT) or `decoder` (ModernBERT): the whole head      |
| `norm`     | `embedding_norm` (LFM2 applies it after the last layer, despite its name)                   |
| `embed`    | any component containing `emb` (`embed_tokens`, `embed_in`, `word_embeddings`,              |
|            | Bloom's `word_embeddings_layernorm`, BERT's `embeddings.LayerNorm`, `layernorm_embedding`),   |
|            | `wte`, `wpe`, CTRL's `w`, OPT's `project_in`, CPM-Ant's `position_bias` (all that runs      |
|            | before the first layer)                                                                     |
| `norm`     | `norm`, `norm_f` (MPT, Mamba), `ln_f`, `final_layer_norm`, `final_layernorm`, `final_norm`,  |
|            | `layer_norm`/`layernorm`/`LayerNorm`/`ln` outside the blocks, `output_layernorm`            |
| `other`    | anything else (e.g. OPT-350m's `project_out`); reported as its own group                    |

Why names and not the module tree: the shard layout is built from names on every rank and offline (the
offline G-effect), where only names are at hand; structure decides the expected groups in the test.

Tied embeddings: `model.named_parameters()` yields a tied weight once, under its first name (the input
embedding), so it lands in `embed` and is counted once; `lm_head` then has no parameters and does not appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EMBED = "embed"
NORM = "norm"
LM_HEAD = "lm_head"
OTHER = "other"

# `layers.12.` / `h.3.` / `blocks.0.` as whole components; the first match wins (outermost block index).
_LAYER_RE = re.compile(
    r"(?:^|\.)(?:layers|h|blocks|layer|attentions|ffns|layer_norm1|layer_norm2|layer_norm15)\.(\d+)(?:\.|$)"
)
_HEAD = {"lm_head", "embed_out", "cls", "lm_loss", "generator_lm_head", "generator_predictions", "pred_layer"}
_TOP_HEAD = {"output", "decoder"}  # as the first component only (GIT's `output`, ModernBERT's `decoder`)
_LATE_NORM = {"embedding_norm"}
_EMBED = {"wte", "wpe", "w", "project_in", "position_bias"}
_NORM = {"norm", "norm_f", "ln_f", "final_layer_norm", "final_layernorm", "final_norm", "layer_norm", "layernorm",
         "LayerNorm", "ln", "output_layernorm"}  # fmt: skip


def group_of(name: str) -> str:
    """The layer group of one parameter name, e.g. `model.layers.3.mlp.up_proj.weight` -> `layers.3`."""
    m = _LAYER_RE.search(name)
    if m:
        return f"layers.{int(m.group(1))}"
    # Only module components count, not the trailing `weight`/`bias`: a parameter called `norm` stays `other`.
    components = name.split(".")[:-1]
    if any(c in _HEAD for c in components) or (components[:1] and components[0] in _TOP_HEAD):
        return LM_HEAD
    if any(c in _LATE_NORM for c in components):
        return NORM
    if any(c in _EMBED or "emb" in c.lower() for c in components):
        return EMBED
    if any(c in _NORM for c in components):
        return NORM
    return OTHER


def _order_key(group: str) -> tuple[int, int]:
    if group == EMBED:
        return (0, 0)
    if group.startswith("layers."):
        return (1, int(group.split(".", 1)[1]))
    return {NORM: (2, 0), LM_HEAD: (3, 0)}.get(group, (4, 0))


def group_names(param_names: Iterable[str]) -> list[str]:
    """The groups present among `param_names`, in canonical order: embed, layers.0.., norm, lm_head, other."""
    return sorted({group_of(n) for n in param_names}, key=_order_key)


def layer_of(name: str) -> tuple[int, str] | None:
    """(decoder layer index, the rest of the name after ``layers.N.``) of a parameter inside a decoder layer, by
    the same rule as `group_of`, e.g. ``model.layers.3.mlp.down_proj.weight`` -> (3, ``mlp.down_proj.weight``);
    None outside the layers."""
    m = _LAYER_RE.search(name)
    if m is None:
        return None
    return int(m.group(1)), name[m.end() :]
