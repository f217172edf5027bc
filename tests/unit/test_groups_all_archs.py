"""The name-based layer groups (engine/groups.py) against the STRUCTURE of every causal LM transformers ships.

Every architecture in `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` is built from its config class, shrunk (2 layers,
hidden 32, vocab 128), on the meta device (no weights, no memory). Expected groups come from the module tree
and one forward pass on meta tensors with hooks, never from names:
- `layers.i`: parameters of element i of the decoder-layer ModuleList (the list of `num_hidden_layers` blocks
  holding the most parameters);
- `embed`: the input embeddings and every module that runs before the first block;
- `lm_head`: the output embeddings and everything outside the base model (`base_model`) that runs after the
  last block (RoBERTa's `lm_head.dense`, BERT's `cls.predictions.transform`);
- `norm`: norm modules (`*Norm*` classes) that run after the last block; `other`: anything else after it.
Architectures that cannot be built tiny offline or run on meta tensors are skipped and counted; parameters
that never run (e.g. a vision tower under a text-only input), direct parameters of the blocks' ancestors (when
they are used is not visible to hooks) and tied weights (listed under either name) are not compared.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dsunlearn.engine.groups import group_of

pytestmark = pytest.mark.slow
SMALL = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, head_dim=8, max_position_embeddings=64, num_local_experts=4, num_experts=4,
             n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)  # fmt: skip
SUBCONFIGS = ("text_config", "decoder", "language_config", "llm_config")


def _shrink(c):
    for k, v in SMALL.items():
        if isinstance(getattr(c, k, None), int) and not isinstance(getattr(c, k), bool):
            setattr(c, k, v)
    for a in ("pad_token_id", "bos_token_id", "eos_token_id"):
        x = getattr(c, a, None)
        if isinstance(x, int) and isinstance(getattr(c, "vocab_size", None), int) and x >= c.vocab_size:
            setattr(c, a, 0)
    for sub in SUBCONFIGS:
        if hasattr(getattr(c, sub, None), "to_dict"):
            _shrink(getattr(c, sub))
    return c


def _structural_groups(m, n_layers: int, device: str) -> dict[str, str]:
    parent_of = {id(c): mod for mod in m.modules() for c in mod.children()}
    lists = [ml for ml in m.modules() if isinstance(ml, torch.nn.ModuleList) and len(ml) == n_layers]
    layers = max(lists, key=lambda ml: sum(p.numel() for p in ml.parameters()))
    # parallel per-layer lists of the same parent (XLM: attentions[i], ffns[i], layer_norm1[i], ...)
    stacks = [ml for ml in lists if parent_of.get(id(ml)) is parent_of.get(id(layers))]
    order, tick, end = {}, [0], [None]

    def pre(mod, *_):
        order.setdefault(id(mod), tick[0])
        tick[0] += 1

    def post(*_):
        end[0] = tick[0]
        tick[0] += 1

    hooks = [mod.register_forward_pre_hook(pre) for mod in m.modules()] + [layers[-1].register_forward_hook(post)]
    try:
        with torch.no_grad():
            m(input_ids=torch.randint(3, 100, (1, 5), device=device))
    finally:
        for h in hooks:
            h.remove()
    start = min(order[id(ml[0])] for ml in stacks if id(ml[0]) in order)
    group = {id(p): f"layers.{i}" for ml in stacks for i, blk in enumerate(ml) for p in blk.parameters()}
    ancestors = {id(a) for a in m.modules() if any(x is layers for x in a.modules())}
    tied = {id(p) for p in m.get_input_embeddings().parameters()} & {
        id(p) for p in (m.get_output_embeddings() or torch.nn.Module()).parameters()
    }
    for p in m.get_input_embeddings().parameters():
        group.setdefault(id(p), "embed")
    if m.get_output_embeddings() is not None:
        for p in m.get_output_embeddings().parameters():
            group.setdefault(id(p), "lm_head")
    base = m.base_model
    for c in m.children():  # the head: everything outside the base model that runs after the last block
        if c is not base and id(c) in order and end[0] is not None and order[id(c)] > end[0]:
            for p in c.parameters():
                group.setdefault(id(p), "lm_head")
    for mod in m.modules():
        if id(mod) not in order or id(mod) in ancestors:  # an ancestor's own params: used before or after?
            continue
        if order[id(mod)] < start:
            g = "embed"
        elif end[0] is not None and order[id(mod)] > end[0]:
            g = "norm" if "Norm" in type(mod).__name__ else "other"
        else:
            continue
        for p in mod.parameters(recurse=False):
            group.setdefault(id(p), g)
    # A tied weight is listed once, under whichever name comes first: embed or lm_head, both right.
    return {n: group[id(p)] for n, p in m.named_parameters() if id(p) in group and id(p) not in tied}


def _expected(transformers, auto_config, model_type: str, cls_name: str) -> dict[str, str]:
    """Structural groups from a forward on meta tensors; where an op has no meta kernel (MoE routing, ...), on
    real CPU tensors if the shrunk model is tiny (<= 2M parameters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = _shrink(auto_config.for_model(model_type))
        n_layers = config.get_text_config().num_hidden_layers
        with torch.device("meta"):
            m = getattr(transformers, cls_name)(config).eval()
        try:
            with torch.device("meta"):
                return _structural_groups(m, n_layers, "meta")
        except Exception:
            if sum(p.numel() for p in m.parameters()) > 2_000_000:
                raise
        torch.manual_seed(0)
        return _structural_groups(getattr(transformers, cls_name)(config).eval(), n_layers, "cpu")


def test_groups_match_structure_of_every_causal_lm():
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    transformers.logging.set_verbosity_error()
    checked, skipped, wrong = [], [], {}
    for model_type, cls_name in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()):
        try:
            want = _expected(transformers, AutoConfig, model_type, cls_name)
        except Exception as e:  # cannot be built tiny offline / run
            skipped.append(f"{model_type} ({type(e).__name__})")
            continue
        checked.append(model_type)
        bad = {n: (g, group_of(n)) for n, g in want.items() if g != group_of(n)}
        if bad:
            wrong[model_type] = dict(list(bad.items())[:4])
    print(f"\n{len(checked)} architectures checked, {len(skipped)} skipped: {', '.join(skipped)}")
    assert not wrong, wrong
    assert len(checked) >= 100 and {"llama", "bloom", "mpt", "opt", "gpt_neox", "mixtral", "lfm2"} <= set(checked)
