"""SatImp: gradient ascent with each token re-weighted by its saturation and its importance.

Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning" (ICML 2025),
https://arxiv.org/abs/2505.11953; the weight and its defaults as open-unlearning implements it
(`compute_satimp_loss` in its `src/trainer/utils.py`, beta1 = 5, beta2 = 1).
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import Alpha

from ._common import check_inputs, masked, token_terms
from .types import LossTerms


def satimp_weights(logp: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """w_i = p_i^beta1 (1 - p_i)^beta2, detached, [B, T].

    p^beta1 is exp(beta1 log p); 1 - p is -expm1(log p), exact for p near 1 where 1 - exp(log p) cancels, and
    clamped at 0 against a log-prob rounded a hair above 0. (1 - p)^0 = 1 also at p = 1 (``torch.pow(0, 0) = 1``).
    """
    lp = logp.detach()
    return torch.exp(beta1 * lp) * torch.pow((-torch.expm1(lp)).clamp(min=0.0), beta2)


def satimp(
    logp: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    *,
    beta1: Alpha = 5.0,
    beta2: Alpha = 1.0,
) -> LossTerms:
    """SatImp forget loss (minimised), one unit per answer token:

        L = -mean_tokens sg(w_i) NLL_i = mean_tokens sg(w_i) log p_i,   w_i = sg(p_i)^beta1 sg(1 - p_i)^beta2

    p_i^beta1 is the saturation term (tokens the model no longer predicts stop counting, as in WGA), (1 - p_i)^beta2
    the importance term (tokens it already predicts with certainty count less). Gradient: d loss / d log p_i =
    w_i / count, a weighted gradient ascent; ``weights`` = w_i in [0, 1). As open-unlearning's code: the token mean
    of w_i log p_i over the answer tokens (its mean over a micro-batch's tokens; here over the global batch's).

    Args:
        logp: [B, T] per-token log-probs, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        ref_logp: unused (no reference model); accepted for a uniform signature.
        beta1: exponent of p (saturation), >= 0.
        beta2: exponent of 1 - p (importance), >= 0; beta2 = 0 is WGA with alpha = beta1.

    Returns:
        Token-level ``LossTerms``.

    Example (beta1 = 5, beta2 = 1)::

        logp = [[ln 1/2, ln 1/4, <masked>]]: w = [(1/2)^5 (1/2), (1/4)^5 (3/4)] = [1/64, 3/4096]
        loss = (1/64 ln 1/2 + 3/4096 ln 1/4) / 2 = -(70/4096) ln 2 / 2 = -(35/4096) ln 2 = -0.00592289
    """
    check_inputs("satimp", logp, mask, ref_logp, needs_ref=False)
    if beta1 < 0 or beta2 < 0:
        raise ValueError(f"satimp: beta1 and beta2 must be >= 0, got {beta1} and {beta2}")
    # Masked positions may hold anything (a positive "log-prob" would make 1 - p negative): weights are zeroed
    # there before they multiply logp, so neither the loss nor the gradient reads them.
    weights = masked(satimp_weights(logp, beta1, beta2), mask)
    per_token = masked(weights * logp, mask)
    return token_terms(per_token, weights, logp, mask, ref_logp)
