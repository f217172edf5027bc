"""RMU (Representation Misdirection for Unlearning): Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing
Malicious Use With Unlearning", https://arxiv.org/abs/2403.03218, Section 5; open-unlearning's
`src/trainer/unlearn/rmu.py` for the token masks and the averaging.

Both RMU terms are an activation MSE at the output of one decoder layer k:

    forget:  L_f = E_seq mean_{t in seq} ||h_k(x_t; theta) - c u||^2 / d
    retain:  L_r = E_seq mean_{t in seq} ||h_k(x_t; theta) - h_k(x_t; theta_o)||^2 / d     (weight: objective.lambda)

u: a random vector, uniform in [0, 1)^d and normalised (``control_direction``), fixed for the run; c: the steering
coefficient; d: the hidden size. Which tokens count, and how they are averaged, is open-unlearning's
`compute_activation_loss`: the positions t with a label (``labels[:, t] != -100``, unshifted: the hidden state
*at* a labelled token), the mean over d and over those positions within each sequence, then the mean over the
sequences. The paper's own code takes the MSE over every position of its unpadded 512-token windows, which is
the same on text windows without padding.

Functions here are pure: hidden states in, ``LossTerms`` out. Which layer they come from, and which parameters
train (layers k-2..k's ``mlp.down_proj``), is the loop's business (``engine/hidden.py``, ``engine/trainable.py``);
the hyper-parameters that say so live in ``rmu``'s signature so that the config holds them with the others.
"""

from __future__ import annotations

import torch

from dsunlearn.hyperparams import LayerCount, LayerIndex, SteeringCoeff

from ._common import compute_dtype, finish, mean_of, stats_of
from .logprobs import IGNORE_INDEX
from .types import LossTerms


def control_direction(dim: int, seed: int) -> torch.Tensor:
    """u of RMU: [dim] float64, ``torch.rand`` (uniform [0, 1)) from a CPU generator seeded with ``seed``, divided
    by its Euclidean norm. The same ``seed`` gives the same u on every rank and machine (CPU generator)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(dim, generator=g, dtype=torch.float32).double()
    return u / u.norm()


def _check(name: str, hidden: torch.Tensor, labels: torch.Tensor) -> None:
    if hidden.dim() != 3:
        raise ValueError(f"{name}: hidden must be [B, T, d], got shape {tuple(hidden.shape)}")
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"{name}: labels must be [B, T] = {tuple(hidden.shape[:2])}, got {tuple(labels.shape)}")


def activation_mse(hidden: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per sequence, the mean over its labelled positions of ||hidden_t - target_t||^2 / d.

    Args:
        hidden: [B, T, d] hidden states (any float dtype; computed in float32, float64 stays float64).
        target: [B, T, d] or [d] (broadcast), a constant (detached here).
        labels: [B, T] int64, -100 where a position does not count.

    Returns:
        (per_seq [B], 0 for a sequence without a label; seq_mask [B] bool; per_token [B, T], 0 off the labels).
    """
    cdt = compute_dtype(hidden.dtype)
    mask = labels != IGNORE_INDEX
    diff = hidden.to(cdt) - target.detach().to(device=hidden.device, dtype=cdt)
    per_token = torch.where(mask, diff.square().mean(dim=-1), torch.zeros((), dtype=cdt, device=hidden.device))
    n = mask.sum(dim=1)
    per_seq = per_token.sum(dim=1) / n.clamp(min=1).to(cdt)
    return per_seq, n > 0, per_token


def _terms(per_seq: torch.Tensor, seq_mask: torch.Tensor, per_token: torch.Tensor, labels: torch.Tensor) -> LossTerms:
    mask = labels != IGNORE_INDEX
    stats = [("mse_mean", mean_of(per_seq, seq_mask)), stats_of("mse", per_seq, seq_mask)[2],
             ("token_mse_mean", mean_of(per_token, mask))]  # fmt: skip
    return finish(per_seq.sum(), seq_mask.sum(), "sequence", per_seq, seq_mask.to(per_seq.dtype), stats)


def rmu(
    hidden: torch.Tensor,
    direction: torch.Tensor,
    labels: torch.Tensor,
    *,
    layer: LayerIndex = 7,
    steering_coeff: SteeringCoeff = 6.5,
    train_layers: LayerCount = 3,
    train_params: str = r"mlp\.down_proj\.weight",
) -> LossTerms:
    """RMU forget loss (minimised): L_f = mean over sequences of mean_{labelled t} ||h_t - c u||^2 / d.

    Gradient: d L_f / d h_t = 2 (h_t - c u) / (d n_b B) at a labelled position of sequence b (n_b its labelled
    positions, B the sequences): the forget hidden states are pulled onto c u, a fixed direction that carries no
    information, which scrambles what later layers read from them.

    Args:
        hidden: [B, T, d] output of decoder layer ``layer`` of the model being trained, on forget text.
        direction: [d] the unit vector u (``control_direction``), a constant.
        labels: [B, T] int64, -100 where a position does not count (prompt, padding).
        layer: k, the decoder layer (0-based) whose output ``hidden`` is; the paper's 7 for Zephyr-7B.
        steering_coeff: c; the paper's 6.5 for Zephyr-7B (open-unlearning's `RMU` class default is 20, its
            configs/trainer/RMU.yaml 2).
        train_layers: how many layers up to k train: layers k - train_layers + 1 .. k (the paper: 5, 6, 7).
        train_params: a regular expression for the parameter names inside those layers that train (the part after
            ``layers.N.``, matched whole): the paper's ``mlp.down_proj.weight``.
        (``layer``, ``train_layers``, ``train_params`` are read by the loop; this function only takes them.)

    Returns:
        Sequence-level ``LossTerms`` (one unit per sequence with a label; ``per_item`` [B]); metrics ``mse_mean``,
        ``mse_max``, ``token_mse_mean``.

    Example (d = 2, one sequence, one labelled position, u = (0.6, 0.8), c = 5: c u = (3, 4))::

        h = (3, 2)  ->  ||h - c u||^2 / d = (0 + 4) / 2 = 2.0;  d L / d h = 2 (h - c u) / d = (0, -2)
    """
    _check("rmu", hidden, labels)
    if direction.shape != hidden.shape[-1:]:
        raise ValueError(f"rmu: direction must be [d] = [{hidden.shape[-1]}], got {tuple(direction.shape)}")
    if not steering_coeff > 0:
        raise ValueError(f"rmu: steering_coeff must be > 0, got {steering_coeff}")
    return _terms(*activation_mse(hidden, steering_coeff * direction.double(), labels), labels)


def embed_diff(hidden: torch.Tensor, ref_hidden: torch.Tensor, labels: torch.Tensor) -> LossTerms:
    """RMU's retain regulariser (open-unlearning's ``retain_loss_type: EMBED_DIFF``): mean over sequences of
    mean_{labelled t} ||h_t(theta) - h_t(theta_o)||^2 / d, at the layer RMU reads.

    Args:
        hidden: [B, T, d] the trained model's layer-k output on retain text.
        ref_hidden: [B, T, d] the frozen model's layer-k output on the same batch (a constant).
        labels: [B, T] int64, -100 where a position does not count.

    Example (d = 2): h = (1, 1), h_o = (1, 3) at the only labelled position -> (0 + 4) / 2 = 2.0.
    """
    _check("embed_diff", hidden, labels)
    if ref_hidden.shape != hidden.shape:
        raise ValueError(f"embed_diff: ref_hidden {tuple(ref_hidden.shape)} != hidden {tuple(hidden.shape)}")
    return _terms(*activation_mse(hidden, ref_hidden, labels), labels)
