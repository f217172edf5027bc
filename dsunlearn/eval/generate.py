"""Greedy generation for TOFU's ROUGE, batched with left padding and sharded over ranks like ``eval.nll``.

Global batches of `batch_size` prompts are fixed and dealt round-robin to ranks (``data.sharding.round_robin_rounds``),
so an item is always generated in the same batch with the same padding: 1-rank and N-rank runs give the
same text. Under ZeRO-3 every forward gathers parameters collectively, so all ranks must run the same
number of forwards: ranks with no batch left generate a dummy batch, and ``generate(synced_gpus=True)``
keeps ranks that finished early stepping until every rank is done. (transformers 5 only turns
`synced_gpus` on by itself when an ``HfDeepSpeedConfig`` is alive, which is not the case for an engine
built around an already-loaded model, so it is passed explicitly.)

Length caps. Default, per item: at most ``max_length`` tokens in total (prompt + generation; TOFU: 200) and, if
set, at most ``max_new_tokens`` new tokens. TOFU applies its total cap to the left-padded batch (``generate(
max_length=200)``), so an item may generate ``max_length - T_batch`` tokens, T_batch = the longest prompt of
its batch: fewer than here whenever a batch mate's prompt is longer, and dependent on the batching. The
per-item cap does not depend on the batching. ``batch_cap=True`` (``data.tofu_official``) applies TOFU's
per-batch cap instead; batches are the global ``items[j*bs:(j+1)*bs]`` as TOFU's sequential loader forms them,
so it too gives the same text on 1 and N ranks. The batch runs to the largest cap, each row is cut to its own.
"""

from __future__ import annotations

import torch

from dsunlearn.data.collate import IGNORE, Encoded, pad_batch, pad_id_of
from dsunlearn.data.sharding import gather_items, round_robin_rounds
from dsunlearn.engine.partitioning import module_is_partitioned


def new_token_caps(prompt_lens: list[int], max_new_tokens: int | None, max_length: int) -> list[int]:
    """Per item: how many tokens it may generate, ``min(max_new_tokens, max_length - prompt_len)`` (>= 0);
    `max_new_tokens` None: ``max_length - prompt_len``."""
    extra = max_length if max_new_tokens is None else max_new_tokens
    return [max(0, min(extra, max_length - n)) for n in prompt_lens]


def batch_caps(prompt_lens: list[int], idx: list[int], max_new_tokens: int | None, max_length: int) -> list[int]:
    """TOFU's per-batch cap for the batch `idx`: every row may reach ``max_length`` tokens of the left-padded
    batch, i.e. ``max_length - max_{i in idx} prompt_len_i`` new tokens (and `max_new_tokens`, if set)."""
    longest = max(prompt_lens[i] for i in idx)
    return new_token_caps([longest] * len(idx), max_new_tokens, max_length)


def _cut(tokens: list[int], cap: int, eos_id: int | None) -> list[int]:
    """The first `cap` new tokens, stopped before the first EOS (HF pads finished rows after it)."""
    tokens = tokens[:cap]
    if eos_id is not None and eos_id in tokens:
        tokens = tokens[: tokens.index(eos_id)]
    return tokens


@torch.no_grad()
def _generate_batch(module, batch: dict[str, torch.Tensor], max_new: int, tokenizer, synced: bool) -> torch.Tensor:
    """Greedy continuation of a left-padded batch: input [B, T] -> new token ids [B, <= max_new]."""
    out = module.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=max_new,
        do_sample=False,
        num_beams=1,
        # A saved generation_config may carry sampling settings (temperature, top_p): greedy ignores them,
        # unset them so transformers does not warn about every batch.
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id_of(tokenizer),
        synced_gpus=synced,
    )
    return out[:, batch["input_ids"].shape[1] :].cpu()


@torch.no_grad()
def greedy_generate(
    module,
    tokenizer,
    prompts: list[list[int]],
    batch_size: int,
    max_new_tokens: int | None,
    max_length: int,
    *,
    batch_cap: bool = False,
    strip: bool = True,
    order: list[int] | None = None,
) -> list[str]:
    """Greedy generations of `prompts` (token ids, N of them), in item order, on every rank.

    Stops at EOS or the cap (per item, or per batch with `batch_cap`; see the module docstring); decodes only
    the new tokens, special tokens skipped, whitespace stripped unless `strip=False` (TOFU does not strip).
    `module` is an HF causal LM or a DeepSpeed engine's `.module`; all ranks must call this.
    ZeRO-3 partitioned parameters (``engine.partitioning``) turn on the lockstep mode. `order`: the permutation
    the global batches are cut from (``data.sharding.length_order`` of the prompt lengths: rows of a batch need
    less left padding); not with `batch_cap`, whose caps are defined by TOFU's item-order batches.
    """
    if batch_cap and order is not None:
        raise ValueError("batch_cap (TOFU's per-batch length cap) is defined on item-order batches: order=None")
    from dsunlearn import dist

    world = dist.world_size()
    synced = world > 1 and module_is_partitioned(module)
    lens = [len(p) for p in prompts]
    caps = dict(enumerate(new_token_caps(lens, max_new_tokens, max_length)))
    pad = pad_id_of(tokenizer)
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    mine: dict[int, str] = {}
    for idx in round_robin_rounds(len(prompts), batch_size, dist.rank(), dist.world_size(), order):
        real = idx is not None
        if not real and not synced:
            continue  # without ZeRO-3 a rank with no work needs no dummy forward
        idx = idx if real else [0]
        if batch_cap:
            caps.update(zip(idx, batch_caps(lens, idx, max_new_tokens, max_length), strict=True))
        enc = [Encoded(prompts[i], [IGNORE] * len(prompts[i])) for i in idx]
        batch = {k: v.to(device) for k, v in pad_batch(enc, pad, side="left").items()}
        # At least one step: HF rejects max_new_tokens=0, and a zero-cap item is cut to "" below anyway.
        new = _generate_batch(module, batch, max(1, max(caps[i] for i in idx)), tokenizer, synced)
        if real:
            for row, i in enumerate(idx):
                ids = _cut(new[row].tolist(), caps[i], tokenizer.eos_token_id)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                mine[i] = text.strip() if strip else text
    module.train(was_training)
    return gather_items(mine, len(prompts))
