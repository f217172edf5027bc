"""Per-token statistics of the scored tokens, for the membership-inference and memorization scores (`mia.py`).

At each scored position t (the causal shift of `objectives/logprobs.py`: logits at t predict labels[t+1]):

    logp[t] = log p(y_t)                          the label's log-probability
    mu[t]   = sum_v p(v) log p(v)                 (Min-K%++'s mean, minus the entropy)
    var[t]  = sum_v p(v) (log p(v) - mu[t])^2     (Min-K%++'s variance, centred: float32-stable)
    pred[t] = argmax_v logits[t, v]               (exact memorization, extraction strength)

all from one pass over the logits in chunks of positions: only one chunk is upcast to float32 at a time, so
no float32 [B, T, V] tensor exists (a 128k vocabulary would make it several GB). Sharded over ranks by the NLL
pass's `nll.per_item_forward` (fixed global batches dealt round-robin, dummy rounds under ZeRO-3, gathered in
item order), so the numbers do not depend on the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsunlearn.data.collate import Encoded
from dsunlearn.eval.nll import per_item_forward
from dsunlearn.objectives._common import chunk_len, compute_dtype
from dsunlearn.objectives.logprobs import IGNORE_INDEX


@dataclass(frozen=True)
class TokenStats:
    """One item's scored tokens, in order: equal-length lists (float32 arithmetic, float64 for float64 logits)."""

    logp: list[float]
    mu: list[float]
    var: list[float]
    pred: list[int]
    label: list[int]


def vocab_stats(logits: torch.Tensor, labels: torch.Tensor, *, chunk_size: int | None = None) -> dict:
    """{logp, mu, var, pred: [B, T-1], mask: [B, T-1] bool} of `logits [B, T, V]`, `labels [B, T]` (-100 off
    the scored tokens), the causal shift applied; values at masked positions are left as computed (use `mask`).

    Example (V = 2, T = 2): logits [[[0, ln 3], [9, 9]]], labels [[-100, 1]] -> p = (1/4, 3/4),
    logp = ln 3/4, mu = (1/4) ln 1/4 + (3/4) ln 3/4, pred = 1.
    """
    b, t, _ = logits.shape
    cdt = compute_dtype(logits.dtype)
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    safe = torch.where(mask, shifted, torch.zeros_like(shifted))
    out = {k: torch.empty(b, max(t - 1, 0), dtype=cdt, device=logits.device) for k in ("logp", "mu", "var")}
    pred = torch.empty(b, max(t - 1, 0), dtype=torch.long, device=logits.device)
    chunk = chunk_len(logits, chunk_size)
    for s in range(0, t - 1, chunk):
        e = min(s + chunk, t - 1)
        x = logits[:, s:e].to(cdt)  # the only upcast copy, one chunk at a time
        lv = x - torch.logsumexp(x, dim=-1, keepdim=True)  # log p(v), [B, c, V]
        p = lv.exp()
        mu = (p * lv).sum(-1)
        out["mu"][:, s:e] = mu
        # centred (sum p (log p - mu)^2), not E[log p^2] - mu^2: the latter cancels two numbers near
        # (log V)^2 in float32 and loses about 1e-4 of a variance near 1
        out["var"][:, s:e] = (p * (lv - mu[..., None]).square()).sum(-1)
        out["logp"][:, s:e] = lv.gather(-1, safe[:, s:e, None]).squeeze(-1)
        pred[:, s:e] = x.argmax(-1)
    return {**out, "pred": pred, "mask": mask}


def item_token_stats(
    module, encoded: list[Encoded], batch_size: int, pad_id: int, order: list[int] | None = None
) -> list[TokenStats]:
    """TokenStats of every item (its label tokens: answer + EOS, or a text window's tokens); all ranks get the
    full list. `module` is an HF causal LM or a DeepSpeed engine's `.module` (ZeRO-3 included: every rank must
    call this). `order`: the permutation batches are cut from (``eval.nll.per_item_forward``)."""

    def rows(batch, logits) -> list[TokenStats]:
        stats = vocab_stats(logits, batch["labels"])
        out = []
        for row in range(logits.shape[0]):
            keep = stats["mask"][row]
            out.append(TokenStats(
                *(stats[k][row][keep].double().cpu().tolist() for k in ("logp", "mu", "var")),
                pred=stats["pred"][row][keep].cpu().tolist(),
                label=batch["labels"][row, 1:][keep].cpu().tolist(),
            ))  # fmt: skip
        return out

    return per_item_forward(module, encoded, batch_size, pad_id, rows, order=order)
