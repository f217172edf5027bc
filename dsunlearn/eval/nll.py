"""Per-item answer NLL, sharded over ranks (`data/sharding.py`), gathered in item order.

Batches are fixed globally (batch j = items[j*bs:(j+1)*bs]) and dealt round-robin to ranks, so every item is
computed in the same batch with the same padding whatever the world size: 1-rank and N-rank results are the
same numbers. Under ZeRO-3 every rank must run the same number of forwards (parameters are gathered
collectively), so ranks with no batch left run a dummy one and discard it.
"""

from __future__ import annotations

import math

import torch

from dsunlearn import dist
from dsunlearn.data.collate import Encoded, pad_batch
from dsunlearn.data.sharding import gather_items, round_robin_rounds
from dsunlearn.engine.partitioning import module_is_partitioned
from dsunlearn.objectives.logprobs import token_logprobs


@torch.no_grad()
def answer_nll_sums(module, encoded: list[Encoded], batch_size: int, pad_id: int) -> tuple[list[float], list[int]]:
    """(summed NLL over answer tokens, answer token count) per item; all ranks get the full lists.

    Per item: ``sum_i -log p(a_i | q, a_<i)`` over its label tokens (answer + EOS), summed in float64 from the
    float32 per-token log-probs. `module` is an HF causal LM (or a DeepSpeed engine's `.module`, ZeRO-3
    included; all ranks must call this). Batches are right-padded [B, T].
    """
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    lockstep = dist.world_size() > 1 and module_is_partitioned(module)
    mine: dict[int, tuple[float, int]] = {}
    for idx in round_robin_rounds(len(encoded), batch_size, dist.rank(), dist.world_size()):
        real = idx is not None
        if not real and not lockstep:
            continue  # only ZeRO-3's collective parameter gathers need the dummy forward
        rows = idx if real else [0]
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in rows], pad_id).items()}
        logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp, mask = token_logprobs(logits, batch["labels"])  # [B, T-1], upcasts chunk by chunk
        sums = (-logp.double().sum(-1)).cpu().tolist()
        counts = mask.sum(-1).cpu().tolist()
        if real:
            mine.update({i: (s, c) for i, s, c in zip(idx, sums, counts, strict=True)})
    module.train(was_training)
    merged = gather_items(mine, len(encoded))
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
