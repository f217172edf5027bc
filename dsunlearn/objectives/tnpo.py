"""Token-wise NPO (TNPO): NPO's re-weighting applied per token, as a weighted gradient ascent.

Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
https://arxiv.org/abs/2502.19301 (ICLR 2025), the TNPO objective. The authors' code (tmlr-group/G-effect)
adds 1e-5 to the weight's denominator; ``eps`` is that constant (0 = the paper's formula).
"""

from __future__ import annotations

import math

import torch

from dsunlearn.hyperparams import Beta, Eps

from ._common import check_inputs, masked, token_terms
from .types import LossTerms


def tnpo_weights(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """w_i = 2 p_i^beta / (p_i^beta + p_o,i^beta + eps), detached, [B, T].

    Computed in log space as two factors, so that p^beta never under- or overflows:

        2 sigmoid(beta (log p_i - log p_o,i))        = 2 p^beta / (p^beta + p_o^beta)           (the paper's w_i)
        sigmoid(log(p^beta + p_o^beta) - log eps)    = (p^beta + p_o^beta) / (p^beta + p_o^beta + eps)

    With eps = 0 the second factor is 1 and is not computed: the result is bit for bit the paper's weight.
    """
    logp, ref_logp = logp.detach(), ref_logp.detach()
    w = 2.0 * torch.sigmoid(beta * (logp - ref_logp))
    if eps == 0:
        return w
    return w * torch.sigmoid(torch.logaddexp(beta * logp, beta * ref_logp) - math.log(eps))


def tnpo(
    logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor, *, beta: Beta = 4.0, eps: Eps = 1e-5
) -> LossTerms:
    """TNPO forget loss (minimised): L = -mean_tokens sg(w_i) NLL_i = mean_tokens sg(w_i) log p_i,

        w_i = 2 p_i^beta / (p_i^beta + p_o,i^beta + eps)   (p_o: the frozen reference model).

    Gradient: d loss / d log p_i = w_i / count (= -w_i dNLL_i / count). ``weights`` = w_i in (0, 2). The
    weight is detached, as in the paper and in the authors' code, so eps changes the weight and nothing else.
    eps matters where p_o,i^beta is comparable to it: at the start (p = p_o) w_i = 2 S / (2 S + eps) with
    S = p_o^beta, i.e. 0.95 instead of 1 for p_o = 0.1 and 0.83 for p_o = 0.07 (beta = 4); for p_o = 0.5 it is
    1 - 8e-5.

    Args:
        logp, ref_logp: [B, T] per-token log-probs under the model and the reference, 0 off the mask.
        mask: [B, T] bool, True on answer tokens.
        beta: inverse temperature (> 0).
        eps: added to the weight's denominator (>= 0); 1e-5 as in the authors' code (their published numbers
            come from it), 0 for the paper's formula.

    Returns:
        Token-level ``LossTerms``.

    Examples (beta = 4)::

        eps = 0: logp = [[ln 1/2, ln 1/4]], ref_logp = [[ln 1/2, ln 1/2]]
        w = [1, 2 (1/256) / (1/256 + 1/16)] = [1, 2/17]
        loss = (ln 1/2 + 2/17 ln 1/4) / 2 = -(21/34) ln 2 = -0.428120

        eps = 1e-5: logp = ref_logp = [[ln 1/10]] (p^4 = p_o^4 = 1e-4)
        w = 2e-4 / (2e-4 + 1e-5) = 20/21 (the paper's: 1), loss = -(20/21) ln 10 = -2.192938
    """
    check_inputs("tnpo", logp, mask, ref_logp, needs_ref=True)
    if beta <= 0 or eps < 0:
        raise ValueError(f"tnpo: need beta > 0 and eps >= 0, got beta={beta}, eps={eps}")
    weights = masked(tnpo_weights(logp, ref_logp, beta, eps), mask)
    per_token = masked(weights * logp, mask)
    return token_terms(per_token, weights, logp, mask, ref_logp)
