"""IdkDPO: direct preference optimisation that prefers a refusal ("I don't know") to the forget answer.

DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) used for unlearning as in TOFU's "I don't know"
preference baseline (https://arxiv.org/abs/2401.06121) and open-unlearning's ``DPO`` trainer on its
``TOFU_QA_forget_idk`` data: per forget question the preferred ("win") answer is a refusal sentence
(``dsunlearn/data/refusals.py``), the rejected ("lose") answer is the forget answer, the reference is theta_o.
We follow open-unlearning's ``compute_dpo_loss``: the sequence log-likelihood is the SUM of answer-token
log-probs, the loss is scaled by 2/beta (as NPO's), and it is the mean over pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsunlearn.hyperparams import Beta

from ._common import check_inputs, masked, sequence_terms
from .logprobs import sequence_logprob
from .types import LossTerms


def dpo(
    logp: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor,
    alt_logp: torch.Tensor,
    alt_mask: torch.Tensor,
    alt_ref_logp: torch.Tensor,
    *,
    beta: Beta = 0.1,
) -> LossTerms:
    """IdkDPO forget loss (minimised), one unit per (forget answer, refusal) pair of a question:

        L = -(2/beta) mean_s log sigmoid(beta m(s)),   m(s) = (l_w(s) - l_w,ref(s)) - (l_l(s) - l_l,ref(s))

    with l(s) = sum_i log p_i the sequence log-likelihood, w the refusal (preferred) and l the forget answer
    (rejected), under the model and under the frozen reference theta_o.

    Gradient: with w_s = 2 sigmoid(-beta m(s)) in (0, 2) (1 at the start, where theta = theta_o and m = 0),
    d L_s / d l_l(s) = w_s and d L_s / d l_w(s) = -w_s: the forget answer gets NPO's per-sequence gradient
    ascent and the refusal the same weight of descent; both fade (w_s -> 0) once the refusal is preferred by
    a wide margin. ``weights`` holds w_s.

    Args:
        logp, ref_logp: [B, T] per-token log-probs of the FORGET answers under the model / theta_o, 0 off the mask.
        mask: [B, T] bool, True on forget-answer tokens.
        alt_logp, alt_ref_logp: [B, T2] the same for each question's refusal answer (row b = the same question).
        alt_mask: [B, T2] bool, True on refusal-answer tokens.
        beta: inverse temperature (> 0); 0.1 as open-unlearning's ``configs/trainer/DPO.yaml``.

    Returns:
        Sequence-level ``LossTerms`` over pairs: ``per_item`` [B], ``weights`` [B]. A pair one of whose answers
        has no answer token is not a unit (adds 0 to the loss and to ``count``). Metrics add the refusal's mean
        sequence log-likelihood (``alt_seq_logp_mean``) and the mean margin m (``margin_mean``).

    Example (beta = 1)::

        logp = [[ln 1/2, ln 1/2], [ln 1/4, <masked>]],  ref_logp     = [[ln 1/2, ln 1/2], [ln 1/2, <masked>]]
        alt_logp = [[ln 1/3], [ln 1/2]],                alt_ref_logp = [[ln 1/3], [ln 1/4]]
        pair 0: m = 0 - 0 = 0              -> loss -2 ln sigmoid(0) = 2 ln 2,         w = 2 sigmoid(0) = 1
        pair 1: m = ln 2 - (-ln 2) = ln 4  -> loss -2 ln sigmoid(ln 4) = 2 ln 5/4,    w = 2 sigmoid(-ln 4) = 2/5
        loss = (2 ln 2 + 2 ln 5/4) / 2 = ln 5/2 = 0.916291, count = 2
    """
    check_inputs("dpo", logp, mask, ref_logp, needs_ref=True)
    check_inputs("dpo (alternate answers)", alt_logp, alt_mask, alt_ref_logp, needs_ref=True)
    if alt_logp.shape[0] != logp.shape[0]:
        raise ValueError(f"dpo: {alt_logp.shape[0]} alternate answers for {logp.shape[0]} forget answers")
    if beta <= 0:
        raise ValueError(f"dpo: beta must be > 0, got {beta}")
    pair = mask.any(dim=-1) & alt_mask.any(dim=-1)
    l_lose, l_lose_ref = sequence_logprob(logp, mask), sequence_logprob(ref_logp.detach(), mask)
    l_win, l_win_ref = sequence_logprob(alt_logp, alt_mask), sequence_logprob(alt_ref_logp.detach(), alt_mask)
    margin = (l_win - l_win_ref) - (l_lose - l_lose_ref)
    # torch.where: a pair that is not a unit contributes neither a value nor a gradient
    per_pair = masked(-(2.0 / beta) * F.logsigmoid(beta * margin), pair)
    weights = 2.0 * torch.sigmoid(-beta * margin.detach())
    extra = {"alt_seq_logp": l_win, "margin": margin}
    return sequence_terms(per_pair, weights, pair, l_lose, l_lose_ref, extra)
