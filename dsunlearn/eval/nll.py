"""Per-item answer NLL, sharded over ranks (`data/sharding.py`), gathered in item order.

Batches are fixed globally (batch j = items[j*bs:(j+1)*bs]) and dealt round-robin to ranks, so every item is
computed in the same batch with the same padding whatever the world size: 1-rank and N-rank results are the
same numbers. Under ZeRO-3 every rank must run the same number of forwards (parameters are gathered
collectively), so ranks with no batch left run a dummy one and discard it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dsunlearn import dist
from dsunlearn.data.collate import Encoded, pad_batch
from dsunlearn.data.sharding import gather_items, round_robin_rounds
from dsunlearn.engine.partitioning import module_is_partitioned
from dsunlearn.objectives.logprobs import token_logprobs


@torch.no_grad()
def per_item_forward(
    module,
    encoded: list[Encoded],
    batch_size: int,
    pad_id: int,
    per_batch: Callable,
    with_index: bool = False,
    order: list[int] | None = None,
) -> list:
    """`per_batch(batch, logits)` -> one value per row, for every item, in item order on all ranks
    (`with_index`: ``per_batch(batch, logits, idx)``, `idx` the rows' item indices, for per-item side data).

    `order`: the permutation the global batches are cut from (``data.sharding.length_order`` for
    ``eval.length_batches``); None: item order.

    `batch` is the right-padded {input_ids, attention_mask, labels} [B, T] of a global batch, `logits` [B, T, V]
    the module's. `module` is an HF causal LM (or a DeepSpeed engine's `.module`, ZeRO-3 included; all ranks
    must call this: under ZeRO-3 a rank with no batch left runs a dummy forward and discards it). The module is
    put in eval mode and back.
    """
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    lockstep = dist.world_size() > 1 and module_is_partitioned(module)
    mine: dict[int, Any] = {}
    for idx in round_robin_rounds(len(encoded), batch_size, dist.rank(), dist.world_size(), order):
        if idx is None and not lockstep:
            continue  # only ZeRO-3's collective parameter gathers need the dummy forward
        rows = idx if idx is not None else [0]
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in rows], pad_id).items()}
        logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if idx is not None:
            values = per_batch(batch, logits, idx) if with_index else per_batch(batch, logits)
            mine.update(zip(idx, values, strict=True))
    module.train(was_training)
    return gather_items(mine, len(encoded))


def answer_nll_sums(
    module, encoded: list[Encoded], batch_size: int, pad_id: int, order: list[int] | None = None
) -> tuple[list[float], list[int]]:
    """(summed NLL over answer tokens, answer token count) per item; all ranks get the full lists.

    Per item: ``sum_i -log p(a_i | q, a_<i)`` over its label tokens (answer + EOS), summed in float64 from the
    float32 per-token log-probs. `module` is an HF causal LM (or a DeepSpeed engine's `.module`, ZeRO-3
    included; all ranks must call this). Batches are right-padded [B, T], cut from `order` (`per_item_forward`).
    """

    def sums_and_counts(batch, logits):
        logp, mask = token_logprobs(logits, batch["labels"])  # [B, T-1], upcasts chunk by chunk
        return list(zip((-logp.double().sum(-1)).cpu().tolist(), mask.sum(-1).cpu().tolist(), strict=True))

    merged = per_item_forward(module, encoded, batch_size, pad_id, sums_and_counts, order=order)
    return [m[0] for m in merged], [m[1] for m in merged]


def answer_nll(module, encoded: list[Encoded], batch_size: int, pad_id: int) -> tuple[list[float], list[int]]:
    """(avg NLL over answer tokens, answer token count) per item; all ranks get the full lists.

    `module` is an HF causal LM (or a DeepSpeed engine's `.module`, ZeRO-3 included).
    """
    sums, counts = answer_nll_sums(module, encoded, batch_size, pad_id)
    return [s / max(c, 1) for s, c in zip(sums, counts, strict=True)], counts


def mean_answer_probability(nlls: list[float]) -> float:
    """TOFU 'Probability' of the forget/retain sets: mean over items of exp(-avg answer NLL)."""
    return sum(math.exp(-x) for x in nlls) / len(nlls)
