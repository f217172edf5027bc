"""UNDIAL: self-distillation toward the reference model with the true token's logit lowered.

Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language
Models" (NAACL 2025), https://arxiv.org/abs/2402.10052; open-unlearning's `compute_undial_loss` (its
`src/trainer/utils.py`) is what ``positions="all"`` reproduces.
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import LogitShift, Positions

from ._common import finish, masked, mean_of, stats_of
from .distill import check_logit_inputs, teacher_loss
from .logprobs import IGNORE_INDEX
from .types import LossTerms


def undial(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: LogitShift = 10.0,
    positions: Positions = "answer",
) -> LossTerms:
    """UNDIAL forget loss (minimised): the cross-entropy of the policy's next-token distribution against a teacher,

        q_t = softmax(z_o,t - beta onehot(y_t)),   L = mean_{t in set} H(q_t, p_t) = -mean_t sum_v q_t(v) log p_t(v)

    z_o,t: the frozen reference's logits at position t, y_t the label it predicts (``labels[:, t+1]``), p_t the
    policy's softmax. The teacher is the reference with the true token's logit lowered by beta; the rest of its
    distribution is kept, so the model unlearns the answer token while staying close to theta_o elsewhere.
    Gradient: d H(q_t, p_t) / d logits[t] = p_t - q_t (not a weighted gradient ascent: every vocabulary entry
    moves). H = KL(q_t || p_t) + H(q_t); the teacher's entropy H(q_t) is a constant, kept in the value as in
    open-unlearning's code, so the loss does not go to 0.

    Position sets (with the causal shift of ``token_logprobs``):
        - ``"answer"`` (default): positions that predict an answer token (``labels[:, t+1] != -100``); a global
          batch token mean like every token-level objective. ``per_item`` and ``weights`` are [B, T-1].
        - ``"all"``: every position but the last, prompt and padding included, count B * (T-1): open-unlearning's
          ``loss.mean()`` over the micro-batch. At a position without a label its code lowers vocabulary entry
          V - 100 (the ignore label -100 indexes from the end of the vocabulary); this reproduces that too.

    Args:
        logits: [B, T, V] logits of the model being trained (any float dtype).
        ref_logits: [B, T, V] logits of the frozen reference on the same batch (a constant).
        labels: [B, T] int64, -100 on prompt and padding.
        beta: how far the label's logit is lowered in the teacher (> 0); the paper's default 10.
        positions: ``"answer"`` or ``"all"``.

    Returns:
        Token-level ``LossTerms``, one unit per position in the set; ``weights`` = 1 on the set; metrics
        ``ce_mean``, ``ce_max``. No float32 [B, T, V] tensor is kept for the backward (``distill.teacher_loss``).

    Example (V = 2, one answer position, beta = ln 3, theta = theta_o)::

        ref logits = policy logits = (0, ln 3), label 1  ->  p = (1/4, 3/4)
        teacher logits (0, ln 3 - ln 3) = (0, 0)  ->  q = (1/2, 1/2)
        loss = -(1/2 ln 1/4 + 1/2 ln 3/4) = 1/2 ln 16/3 = 0.836988;  gradient p - q = (-1/4, +1/4):
        descent lowers the label's logit.
    """
    check_logit_inputs("undial", logits, ref_logits, labels, positions)
    if beta <= 0:
        raise ValueError(f"undial: beta must be > 0, got {beta}")
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    if positions == "answer":
        # The teacher needs a valid index at every position; off the answer it is discarded below.
        index, sel = torch.where(mask, shifted, torch.zeros_like(shifted)), mask
    else:
        # -100 -> V - 100, as open-unlearning's indexing does (labels in [0, V) are unchanged).
        index, sel = torch.remainder(shifted, logits.shape[-1]), torch.ones_like(mask)
    per_pos = masked(teacher_loss(logits, ref_logits, "ce", index, beta), sel)  # [B, T-1]
    stats = [("ce_mean", mean_of(per_pos, sel)), stats_of("ce", per_pos, sel)[2]]
    return finish(per_pos.sum(), sel.sum(), "token", per_pos, sel.to(per_pos.dtype), stats)
