"""The policy's next-token distribution against a teacher distribution made from the reference's logits.

The KL retain regulariser (the teacher is the reference itself) and UNDIAL (the reference with the label's logit
lowered by beta) are both, per position t, a sum over the vocabulary

    out_t = sum_v q_t(v) (c log q_t(v) - log p_t(v)),   p_t = softmax(policy_logits[t]),
    q_t = softmax(ref_logits[t] - shift * onehot(index[t])),

with c = 1 (``"kl"``: KL(q_t || p_t)) or c = 0 (``"ce"``: the cross-entropy H(q_t, p_t)). The two differ by the
teacher's entropy, a constant, so their gradient is the same: d out_t / d policy_logits[t] = p_t - q_t.

Memory: computed chunk by chunk over positions with a backward that recomputes both softmaxes, so no float32
[B, T, V] tensor is kept between forward and backward (the inputs themselves, usually bf16, are saved), and one
chunk is upcast at a time. The reference logits are a constant (no gradient).
"""

from __future__ import annotations

from typing import Literal

import torch

from ._common import chunk_len, compute_dtype

TeacherLoss = Literal["kl", "ce"]


def check_logit_inputs(name: str, logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor,
                       positions: str) -> None:  # fmt: skip
    """ValueError naming objective `name` unless logits and ref_logits are both [B, T, V], labels [B, T] and
    `positions` is "answer" or "all" (the inputs of every loss over the vocabulary: kl, undial)."""
    if logits.dim() != 3 or ref_logits.shape != logits.shape:
        raise ValueError(
            f"{name}: policy and reference logits must both be [B, T, V], "
            f"got {tuple(logits.shape)} and {tuple(ref_logits.shape)}"
        )
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"{name}: labels must be [B, T] = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    if positions not in ("answer", "all"):
        raise ValueError(f"{name}: positions must be 'answer' or 'all', got {positions!r}")


def _teacher_logits(ref: torch.Tensor, index: torch.Tensor | None, shift: float, s: int, e: int, cdt) -> torch.Tensor:
    """ref[:, s:e] upcast, with ``shift`` subtracted at ``index[:, s:e]`` (out of place: ``ref`` is never written)."""
    x = ref[:, s:e].to(cdt)
    if index is None or shift == 0:
        return x
    idx = index[:, s:e, None]
    return x.scatter_add(-1, idx, torch.full(idx.shape, -float(shift), dtype=cdt, device=x.device))


class _ToTeacher(torch.autograd.Function):
    """out[b, t] of the module docstring for t < n (n = index.shape[1], or T without an index)."""

    @staticmethod
    def forward(ctx, policy, ref, index, shift: float, entropy: bool, chunk: int):  # type: ignore[override]
        b, t, _ = policy.shape
        n = index.shape[1] if index is not None else t
        cdt = compute_dtype(policy.dtype)
        out = torch.empty(b, n, dtype=cdt, device=policy.device)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            term = torch.log_softmax(policy[:, s:e].to(cdt), dim=-1).neg_()  # -log p
            log_q = torch.log_softmax(_teacher_logits(ref, index, shift, s, e, cdt), dim=-1)
            if entropy:
                term.add_(log_q)  # log q - log p
            q = log_q.exp_()
            # Teacher tokens with probability exactly 0 (logit -inf) contribute nothing: 0 * log(0 / p) := 0.
            term.mul_(q).masked_fill_(q == 0, 0.0)
            out[:, s:e] = term.sum(dim=-1)
        ctx.save_for_backward(policy, ref, index)
        ctx.shift, ctx.chunk, ctx.n = shift, chunk, n
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        policy, ref, index = ctx.saved_tensors
        cdt = compute_dtype(policy.dtype)
        grad = torch.empty_like(policy, memory_format=torch.contiguous_format)
        grad[:, ctx.n :].zero_()  # positions past the index predict nothing
        for s in range(0, ctx.n, ctx.chunk):
            e = min(s + ctx.chunk, ctx.n)
            d = torch.softmax(policy[:, s:e].to(cdt), dim=-1)
            d.sub_(torch.softmax(_teacher_logits(ref, index, ctx.shift, s, e, cdt), dim=-1))
            grad[:, s:e] = d.mul_(grad_out[:, s:e, None].to(cdt))
        return grad, None, None, None, None, None


def teacher_loss(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    kind: TeacherLoss,
    index: torch.Tensor | None = None,
    shift: float = 0.0,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per position, KL(q_t || p_t) (``kind="kl"``) or H(q_t, p_t) (``"ce"``), as in the module docstring.

    Args:
        policy_logits: [B, T, V] logits of the model being trained (any float dtype).
        ref_logits: [B, T, V] logits of the frozen reference on the same batch (detached here).
        kind: "kl" or "ce".
        index: [B, T'] int64 in [0, V), T' <= T: the vocabulary entry whose teacher logit is lowered by ``shift``
            at each of the first T' positions; only those positions are computed. None: every position, the
            teacher is the reference's own distribution.
        shift: how much the teacher logit at ``index`` is lowered (0: not at all).
        chunk_size: positions per upcast chunk; default near 2**24 elements per chunk.

    Returns:
        [B, T'] (or [B, T]) float32 (float64 for float64 logits), with gradient wrt ``policy_logits`` only.

    Example (V = 2, one position): ref logits (0, 0) -> q = (1/2, 1/2); policy logits (0, ln 3) -> p = (1/4, 3/4);
    KL = 1/2 ln 2 + 1/2 ln 2/3 = 1/2 ln 4/3 = 0.143841, H(q, p) = KL + ln 2 = 1/2 ln 16/3 = 0.836988.
    """
    if kind not in ("kl", "ce"):
        raise ValueError(f"teacher_loss: kind must be 'kl' or 'ce', got {kind!r}")
    if index is not None and (index.shape[0] != policy_logits.shape[0] or index.shape[1] > policy_logits.shape[1]):
        raise ValueError(f"teacher_loss: index {tuple(index.shape)} does not fit logits {tuple(policy_logits.shape)}")
    chunk = chunk_len(policy_logits, chunk_size)
    index = index.contiguous() if index is not None else None
    return _ToTeacher.apply(policy_logits, ref_logits.detach(), index, float(shift), kind == "kl", chunk)
