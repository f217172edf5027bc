"""Retain-set regularisers: the NLL risk and the KL divergence to the frozen reference model.

Both return ``LossTerms`` with unit "token" so the engine normalises them by the global number of
positions, like the token-level forget objectives.
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import Positions

from ._common import check_inputs, finish, masked, mean_of, stats_of, token_terms
from .distill import check_logit_inputs, teacher_loss
from .logprobs import IGNORE_INDEX
from .types import LossTerms


def nll(logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor | None = None) -> LossTerms:
    """Retain NLL (minimised): L = mean_tokens NLL_i = -mean_tokens log p_i.

    Args:
        logp: [B, T] per-token log-probs of the retain batch (``token_logprobs``), 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        ref_logp: unused; accepted for the same signature as the objectives.

    Returns:
        Token-level ``LossTerms``, ``per_item = -log p_i``, ``weights`` = 1 on the mask.

    Example::

        logp = [[ln 1/2, ln 1/4, <masked>]] -> loss = (ln 2 + 2 ln 2) / 2 = 1.5 ln 2 = 1.039721
    """
    check_inputs("nll", logp, mask, ref_logp, needs_ref=False)
    return token_terms(masked(-logp, mask), torch.ones_like(logp), logp, mask, ref_logp)


def kl(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    positions: Positions = "answer",
    *,
    chunk_size: int | None = None,
) -> LossTerms:
    """KL(p_ref || p_theta) over the vocabulary per position, summed over a set of positions (minimised).

        kl_t = sum_v p_ref(v | t) (log p_ref(v | t) - log p_theta(v | t)),   loss = sum_{t in set} kl_t / |set|.

    Position sets:
        - ``"answer"`` (default): logits positions that predict an answer token, with the causal shift of
          ``token_logprobs``: position t is in the set iff ``labels[:, t+1] != -100``. ``per_item`` and
          ``weights`` are [B, T-1], aligned with ``token_logprobs``' output.
        - ``"all"``: every logits position, prompt, padding and the last one included: [B, T], count
          B * T. This reproduces the anchors' TOFU code, ``kl_div(log_softmax(current).view(-1, V),
          log_softmax(oracle).view(-1, V), reduction="batchmean", log_target=True)``.

    Args:
        policy_logits: [B, T, V] logits of the model being trained (any float dtype).
        ref_logits: [B, T, V] logits of the frozen reference model on the same batch (treated as constant).
        labels: [B, T] int64, -100 on prompt and padding.
        positions: ``"answer"`` or ``"all"``.
        chunk_size: positions per upcast chunk (memory bound); default near 2**24 elements per chunk.

    Returns:
        Token-level ``LossTerms`` (unit "token", one unit per position in the set), ``weights`` = 1 on
        the set; metrics ``kl_mean``, ``kl_max``.

    Example (V = 2, one position): ref logits (0, 0) -> p_ref = (1/2, 1/2); policy logits (0, ln 3)
    -> p_theta = (1/4, 3/4); KL = 1/2 ln 2 + 1/2 ln 2/3 = 1/2 ln 4/3 = 0.143841.
    """
    check_logit_inputs("kl", policy_logits, ref_logits, labels, positions)
    # Chunked with a recomputing backward (d kl_t / d policy_logits[t] = p_theta - p_ref): no float32 [B, T, V]
    # tensor is kept for the backward. The reference logits are a constant.
    per_pos = teacher_loss(policy_logits, ref_logits, "kl", chunk_size=chunk_size)  # [B, T]
    if positions == "answer":
        mask = labels[:, 1:] != IGNORE_INDEX
        per_pos = masked(per_pos[:, :-1], mask)
    else:
        mask = torch.ones_like(labels, dtype=torch.bool)
    weights = mask.to(per_pos.dtype)
    stats = [("kl_mean", mean_of(per_pos, mask)), stats_of("kl", per_pos, mask)[2]]
    return finish(per_pos.sum(), mask.sum(), "token", per_pos, weights, stats)
