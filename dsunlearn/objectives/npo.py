"""Negative preference optimisation (NPO): a bounded, reference-anchored version of gradient ascent.

Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to Effective
Unlearning", https://arxiv.org/abs/2404.05868, Eq. (3); we follow its public TOFU code, where the
sequence log-likelihood is the SUM of answer-token log-probs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsunlearn.hyperparams import Beta

from ._common import check_inputs, masked, sequence_terms
from .logprobs import sequence_logprob
from .types import LossTerms


def npo(logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor, *, beta: Beta = 0.1) -> LossTerms:
    """NPO forget loss (minimised), one unit per sequence:

        L = -(2/beta) mean_s log sigmoid(-beta (l_theta(s) - l_ref(s))),   l(s) = sum_i log p_i.

    Gradient: dL_s / d l_theta(s) = 2 sigmoid(beta (l_theta - l_ref)) = 2 pi^beta / (pi^beta + pi_ref^beta)
    =: w_s (pi = exp(l_theta(s)), the sequence probability), so d loss / d log p_i = w_s / count for
    every answer token of s: GA's gradient re-weighted per sequence by w_s in (0, 2), with w_s = 1 at
    the start (theta = reference) and w_s -> 0 once the sequence is forgotten. ``weights`` holds w_s.

    Args:
        logp, ref_logp: [B, T] per-token log-probs under the model and the frozen reference, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        beta: inverse temperature (> 0).

    Returns:
        Sequence-level ``LossTerms``: ``per_item`` [B], ``weights`` [B]. A sequence without answer tokens
        is not a unit: it adds 0 to the loss and to ``count`` (otherwise it would add the constant
        (2/beta) ln 2 with no gradient).

    Example (beta = 1)::

        logp = [[ln 1/2, ln 1/2], [ln 1/3, <masked>]], ref_logp = [[ln 1/2, ln 1/2], [0, <masked>]]
        seq 0: l_theta - l_ref = 0      -> loss -2 ln(1/2) = 2 ln 2,   w = 2 sigmoid(0) = 1
        seq 1: l_theta - l_ref = -ln 3  -> loss -2 ln(3/4) = 2 ln 4/3, w = 2 sigmoid(-ln 3) = 1/2
        loss = (2 ln 2 + 2 ln 4/3) / 2 = ln 8/3 = 0.980829, count = 2
    """
    check_inputs("npo", logp, mask, ref_logp, needs_ref=True)
    if beta <= 0:
        raise ValueError(f"npo: beta must be > 0, got {beta}")
    seq_mask = mask.any(dim=-1)
    l_theta = sequence_logprob(logp, mask)
    l_ref = sequence_logprob(ref_logp.detach(), mask)
    delta = l_theta - l_ref
    per_seq = masked(-(2.0 / beta) * F.logsigmoid(-beta * delta), seq_mask)
    weights = 2.0 * torch.sigmoid(beta * delta.detach())
    return sequence_terms(per_seq, weights, seq_mask, l_theta, l_ref)
