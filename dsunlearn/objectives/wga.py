"""Weighted gradient ascent (WGA): GA with each token's gradient weighted by its (detached) probability.

Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
https://arxiv.org/abs/2502.19301 (ICLR 2025), the WGA objective.
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import Alpha

from ._common import check_inputs, masked, token_terms
from .types import LossTerms


def wga(
    logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor | None = None, *, alpha: Alpha = 1.0
) -> LossTerms:
    """WGA forget loss (minimised): L = -mean_tokens sg(p_i)^alpha * NLL_i = mean_tokens sg(p_i^alpha) log p_i.

    Gradient: d loss / d log p_i = p_i^alpha / count, i.e. -sg(p_i^alpha) d NLL_i per token: tokens the
    model already finds unlikely stop contributing, which keeps GA from diverging. ``weights`` = p_i^alpha.

    Args:
        logp: [B, T] per-token log-probs, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        ref_logp: unused (no reference model); accepted for a uniform signature.
        alpha: exponent of the token-probability weight (>= 0; the paper's code also uses 5).

    Returns:
        Token-level ``LossTerms``.

    Example (alpha = 1)::

        logp = [[ln 1/2, ln 1/4, <masked>]]: weights 1/2, 1/4
        loss = (1/2 ln 1/2 + 1/4 ln 1/4) / 2 = (-ln 2 / 2 - ln 2 / 2) / 2 = -ln 2 / 2 = -0.346574
    """
    check_inputs("wga", logp, mask, ref_logp, needs_ref=False)
    if alpha < 0:
        raise ValueError(f"wga: alpha must be >= 0, got {alpha}")
    # exp(alpha * logp) is p^alpha computed in log space; masked positions may hold anything.
    weights = masked(torch.exp(alpha * logp.detach()), mask)
    per_token = masked(weights * logp, mask)
    return token_terms(per_token, weights, logp, mask, ref_logp)
