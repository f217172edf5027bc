"""SimNPO: NPO without a reference model, on the length-normalised likelihood.

Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning", https://arxiv.org/abs/2410.07163. The paper's margin gamma equals beta * delta here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsunlearn.hyperparams import Beta, Delta

from ._common import check_inputs, masked, sequence_terms
from .logprobs import mean_nll, sequence_logprob
from .types import LossTerms


def simnpo(
    logp: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    *,
    beta: Beta = 4.5,
    delta: Delta = 0.0,
) -> LossTerms:
    """SimNPO forget loss (minimised), one unit per sequence:

        L = -(2/beta) mean_s log sigmoid(beta (avgNLL_theta(s) - delta)),
        avgNLL_theta(s) = -(1/T_s) sum_i log p_i.

    Gradient: dL_s / d avgNLL(s) = -2 sigmoid(-beta (avgNLL(s) - delta)) =: -w_s, so
    d loss / d log p_i = w_s / (T_s * count) for the answer tokens of s. ``weights`` holds w_s in (0, 2).

    Args:
        logp: [B, T] per-token log-probs, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        ref_logp: unused (SimNPO needs no reference model); accepted for a uniform signature.
        beta: inverse temperature (> 0).
        delta: margin on the average NLL.

    Returns:
        Sequence-level ``LossTerms`` (``per_item``, ``weights`` [B]). A sequence without answer tokens
        (avgNLL would be 0/0) is not a unit: it adds 0 to the loss and to ``count``.

    Example (beta = 2, delta = 0)::

        logp = [[ln 1/2, ln 1/2], [ln 1/3, <masked>]]
        seq 0: avgNLL = ln 2 -> loss -ln sigmoid(2 ln 2) = ln 5/4,  w = 2 sigmoid(-2 ln 2) = 2/5
        seq 1: avgNLL = ln 3 -> loss -ln sigmoid(2 ln 3) = ln 10/9, w = 2 sigmoid(-2 ln 3) = 1/5
        loss = (ln 5/4 + ln 10/9) / 2 = 0.5 ln 25/18 = 0.164252, count = 2
    """
    check_inputs("simnpo", logp, mask, ref_logp, needs_ref=False)
    if beta <= 0:
        raise ValueError(f"simnpo: beta must be > 0, got {beta}")
    seq_mask = mask.any(dim=-1)
    margin = mean_nll(logp, mask) - delta
    per_seq = masked(-(2.0 / beta) * F.logsigmoid(beta * margin), seq_mask)
    weights = 2.0 * torch.sigmoid(-beta * margin.detach())
    return sequence_terms(per_seq, weights, seq_mask, sequence_logprob(logp, mask))
