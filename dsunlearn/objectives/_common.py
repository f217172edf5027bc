"""Helpers shared by the objective functions: input checks and assembling a ``LossTerms``.

Masking rule used everywhere: values at positions where ``mask`` is False are never read into the loss.
We use ``torch.where`` (not multiplication by the mask) so that arbitrary finite values there, and
their gradients, cannot leak into the result, and ``inf * 0`` can never produce NaN in the forward pass.
"""

from __future__ import annotations

import torch

from .types import LossTerms

# Elements per upcast chunk: 2**24 float32 values = 64 MiB (a few of these live at once per chunk).
CHUNK_ELEMENTS = 2**24


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype for vocabulary reductions: float64 stays float64, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_len(logits: torch.Tensor, chunk_size: int | None) -> int:
    """Sequence positions per chunk for ``logits [B, T, V]``: ``chunk_size`` or about CHUNK_ELEMENTS elements."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    b, _, v = logits.shape
    return max(1, CHUNK_ELEMENTS // max(1, b * v))


def check_inputs(
    name: str, logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor | None, needs_ref: bool
) -> None:
    """Raise ``ValueError`` on shape/dtype mistakes (programming errors of the caller, not user config)."""
    if logp.dim() != 2:
        raise ValueError(f"{name}: logp must be [B, T], got shape {tuple(logp.shape)}")
    if mask.shape != logp.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"{name}: mask must be a bool tensor of shape {tuple(logp.shape)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    if ref_logp is None:
        if needs_ref:
            raise ValueError(f"{name} needs ref_logp (log-probs of the frozen reference model), got None")
    elif ref_logp.shape != logp.shape:
        raise ValueError(f"{name}: ref_logp shape {tuple(ref_logp.shape)} != logp {tuple(logp.shape)}")


def masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` else 0 (gradient 0 off the mask)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def mean_of(values: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``sel`` as a 0-dim float64 tensor (0 if ``sel`` is empty)."""
    return torch.where(sel, values.detach().to(torch.float64), 0).sum() / sel.sum().clamp(min=1)


def stats_of(prefix: str, values: torch.Tensor, sel: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Mean/min/max of ``values`` over ``sel`` as 0-dim tensors (min/max are +-inf if ``sel`` is empty)."""
    v = values.detach().to(torch.float64)
    inf = torch.tensor(float("inf"), dtype=v.dtype, device=v.device)
    if v.numel() == 0:  # min/max of an empty tensor raise; count is 0 here, so these are dropped anyway
        return [(f"{prefix}_{k}", inf) for k in ("mean", "min", "max")]
    return [
        (f"{prefix}_mean", mean_of(v, sel)),
        (f"{prefix}_min", torch.where(sel, v, inf).min()),
        (f"{prefix}_max", torch.where(sel, v, -inf).max()),
    ]


def finish(
    loss_sum: torch.Tensor,
    count: torch.Tensor,
    unit: str,
    per_item: torch.Tensor,
    weights: torch.Tensor,
    stats: list[tuple[str, torch.Tensor]],
) -> LossTerms:
    # One host sync for the count and all metrics together (each .item() would be a separate sync on GPU).
    values = torch.stack([count.to(torch.float64)] + [t.to(torch.float64) for _, t in stats]).tolist()
    n = values[0]
    metrics = {k: v for (k, _), v in zip(stats, values[1:], strict=True)} if n > 0 else {}
    return LossTerms(
        loss_sum=loss_sum, count=n, unit=unit, per_item=per_item, weights=weights.detach(), metrics=metrics
    )


def token_terms(
    per_token: torch.Tensor,
    weights: torch.Tensor,
    logp: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
) -> LossTerms:
    """Assemble a token-level ``LossTerms``.

    Args:
        per_token: [B, T] per-token losses, already zero off the mask.
        weights: [B, T] the (detached) weights applied; set to zero off the mask here.
        logp, mask, ref_logp: [B, T] inputs, for metrics.
    """
    weights = masked(weights.detach(), mask)
    stats = stats_of("weight", weights, mask) + [("logp_mean", mean_of(logp, mask))]
    if ref_logp is not None:
        stats.append(("ref_logp_mean", mean_of(ref_logp, mask)))
    return finish(per_token.sum(), mask.sum(), "token", per_token, weights, stats)


def sequence_terms(
    per_seq: torch.Tensor,
    weights: torch.Tensor,
    seq_mask: torch.Tensor,
    seq_logp: torch.Tensor,
    seq_ref_logp: torch.Tensor | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> LossTerms:
    """Assemble a sequence-level ``LossTerms``.

    Args:
        per_seq: [B] per-sequence losses, already zero where ``seq_mask`` is False.
        weights: [B] the (detached) per-sequence weights; set to zero where ``seq_mask`` is False.
        seq_mask: [B] bool, True for sequences with at least one answer token (the units).
        seq_logp, seq_ref_logp: [B] sequence log-likelihoods, for metrics.
        extra: {name: [B] values}: more per-unit values whose mean over the units is logged as ``<name>_mean``.
    """
    weights = masked(weights.detach(), seq_mask)
    stats = stats_of("weight", weights, seq_mask) + [("seq_logp_mean", mean_of(seq_logp, seq_mask))]
    if seq_ref_logp is not None:
        stats.append(("seq_ref_logp_mean", mean_of(seq_ref_logp, seq_mask)))
    stats += [(f"{name}_mean", mean_of(values, seq_mask)) for name, values in (extra or {}).items()]
    return finish(per_seq.sum(), seq_mask.sum(), "sequence", per_seq, weights, stats)
