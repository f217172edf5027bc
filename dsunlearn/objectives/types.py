"""The output type of every objective and regulariser: a loss SUM plus the number of units it sums over.

Why a sum and a count instead of a mean: an objective only sees one micro-batch on one rank. The quantity
we want to minimise is the mean over the GLOBAL batch (all ranks x all gradient-accumulation
micro-batches), e.g. ``mean_tokens`` in docs/methods.md is the mean over every answer token of the global
batch. If each micro-batch returned its own mean and the engine averaged those, micro-batches with few
answer tokens would be over-weighted and the result would change with the world size and with how the
global batch is split. Instead the engine all-reduces ``count`` over ranks and micro-batches first and
back-propagates ``loss_sum / global_count`` on each micro-batch; summed over the global batch this is
exactly the global mean, for any world size (up to float rounding).

``loss`` (``loss_sum / count``) is the local mean, for single-process use and logging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Unit = Literal["token", "sequence"]


@dataclass
class LossTerms:
    """What an objective returns for one micro-batch.

    Attributes:
        loss_sum: 0-dim tensor (with grad): the SUM of the loss over this micro-batch's units.
        count: number of units summed in ``loss_sum``: answer tokens for token-level objectives, sequences
            with at least one answer token for sequence-level ones (an empty sequence is not a unit).
        unit: ``"token"`` or ``"sequence"``.
        per_item: per-unit losses (with grad, so per-sample gradients can be taken from them): ``[B, T']``
            per token (zeros off the mask) or ``[B]`` per sequence (zeros for sequences without answer
            tokens). ``per_item.sum() == loss_sum``.
        weights: detached per-token ``[B, T']`` or per-sequence ``[B]`` weights the objective applied to
            the gradient of the log-likelihood (ones on answer tokens for GA/NLL; zeros off the mask).
        metrics: floats for logging (mean/min/max weight, mean logp, mean ref logp, ...). Statistics over
            units are omitted when ``count == 0`` rather than reported as NaN.
    """

    loss_sum: torch.Tensor
    count: float
    unit: Unit
    per_item: torch.Tensor
    weights: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.unit not in ("token", "sequence"):
            raise ValueError(f"LossTerms.unit must be 'token' or 'sequence', got {self.unit!r}")
        if self.loss_sum.dim() != 0:
            raise ValueError(f"LossTerms.loss_sum must be 0-dim, got shape {tuple(self.loss_sum.shape)}")

    @property
    def loss(self) -> torch.Tensor:
        """Local mean ``loss_sum / count``; 0 (with a zero gradient) when there are no units.

        ``loss_sum`` is exactly 0 when ``count == 0``, so dividing by ``max(count, 1)`` never yields NaN.
        """
        return self.loss_sum / max(self.count, 1.0)
