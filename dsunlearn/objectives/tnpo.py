"""Token-wise NPO (TNPO): NPO's re-weighting applied per token, as a weighted gradient ascent.

Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
https://arxiv.org/abs/2502.19301 (ICLR 2025), the TNPO objective.
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import Beta

from ._common import check_inputs, masked, token_terms
from .types import LossTerms


def tnpo_weights(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """w_i = 2 p_i^beta / (p_i^beta + p_o,i^beta) = 2 sigmoid(beta (log p_i - log p_o,i)), detached, [B, T].

    The sigmoid form is the same number, computed without under/overflow of p^beta.
    """
    return 2.0 * torch.sigmoid(beta * (logp.detach() - ref_logp.detach()))


def tnpo(logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor, *, beta: Beta = 4.0) -> LossTerms:
    """TNPO forget loss (minimised): L = -mean_tokens sg(w_i) NLL_i = mean_tokens sg(w_i) log p_i,

        w_i = 2 p_i^beta / (p_i^beta + p_o,i^beta)   (p_o: the frozen reference model).

    Gradient: d loss / d log p_i = w_i / count (= -w_i dNLL_i / count). ``weights`` = w_i in (0, 2).

    Args:
        logp, ref_logp: [B, T] per-token log-probs under the model and the reference, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        beta: inverse temperature (> 0).

    Returns:
        Token-level ``LossTerms``.

    Example (beta = 4)::

        logp = [[ln 1/2, ln 1/4]], ref_logp = [[ln 1/2, ln 1/2]]
        w = [1, 2 (1/256) / (1/256 + 1/16)] = [1, 2/17]
        loss = (ln 1/2 + 2/17 ln 1/4) / 2 = -(21/34) ln 2 = -0.428120
    """
    check_inputs("tnpo", logp, mask, ref_logp, needs_ref=True)
    if beta <= 0:
        raise ValueError(f"tnpo: beta must be > 0, got {beta}")
    weights = masked(tnpo_weights(logp, ref_logp, beta), mask)
    per_token = masked(weights * logp, mask)
    return token_terms(per_token, weights, logp, mask, ref_logp)
