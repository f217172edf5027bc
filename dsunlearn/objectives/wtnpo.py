"""Weighted token-wise NPO (WTNPO): TNPO's weight times WGA's p^alpha.

Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
https://arxiv.org/abs/2502.19301 (ICLR 2025), the WTNPO objective. ``eps`` is the 1e-5 the authors' code adds to
the denominator, as in TNPO (0 = the paper's formula).
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import Alpha, Beta, Eps

from ._common import check_inputs, masked, token_terms
from .tnpo import tnpo_weights
from .types import LossTerms


def wtnpo(
    logp: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor,
    *,
    alpha: Alpha = 1.5,
    beta: Beta = 4.0,
    eps: Eps = 1e-5,
) -> LossTerms:
    """WTNPO forget loss (minimised): L = -mean_tokens sg(w_i) NLL_i = mean_tokens sg(w_i) log p_i,

        w_i = 2 p_i^(beta + alpha) / (p_i^beta + p_o,i^beta + eps) = p_i^alpha * w_i^TNPO.

    Gradient: d loss / d log p_i = w_i / count. ``weights`` = w_i.

    Args:
        logp, ref_logp: [B, T] per-token log-probs under the model and the reference, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        alpha: exponent of the extra p^alpha factor (>= 0).
        beta: inverse temperature (> 0).
        eps: added to the denominator (>= 0): 1e-5 as in the authors' code, 0 for the paper's formula.

    Returns:
        Token-level ``LossTerms``.

    Example (alpha = 1, beta = 4, eps = 0; eps's effect is TNPO's, see ``tnpo``)::

        logp = [[ln 1/2, ln 1/4]], ref_logp = [[ln 1/2, ln 1/2]]
        w = [1/2 * 1, 1/4 * 2/17] = [1/2, 1/34]
        loss = (1/2 ln 1/2 + 1/34 ln 1/4) / 2 = -(19/68) ln 2 = -0.193673
    """
    check_inputs("wtnpo", logp, mask, ref_logp, needs_ref=True)
    if beta <= 0 or alpha < 0 or eps < 0:
        raise ValueError(f"wtnpo: need beta > 0, alpha >= 0 and eps >= 0, got beta={beta}, alpha={alpha}, eps={eps}")
    weights = masked(torch.exp(alpha * logp.detach()) * tnpo_weights(logp, ref_logp, beta, eps), mask)
    per_token = masked(weights * logp, mask)
    return token_terms(per_token, weights, logp, mask, ref_logp)
