"""Group-wise round-to-nearest (RTN) weight quantization, de-quantized back into the model's dtype in memory.

The quantization attack on unlearning (Zhang et al., ICLR 2025, "Catastrophic failure of LLM unlearning via
quantization"): an unlearned model whose weights moved only a little from the target's may round back to the
target's grid, so 4-bit quantization brings forgotten knowledge back (8-bit much less). No kernels are needed to
measure that: every weight is replaced by its de-quantized value w_hat and the model is evaluated as usual.

Groups: a weight W [out, in] is cut along its input dimension into groups of G consecutive entries of one row
(the last group of a row is shorter when G does not divide `in`). Per group g of b-bit RTN:

    symmetric:   s = max_g |w| / (2^(b-1) - 1),            q = clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1),
                 w_hat = q * s
    asymmetric:  lo = min(min_g w, 0), hi = max(max_g w, 0),  s = (hi - lo) / (2^b - 1),  z = round(-lo / s),
                 q = clamp(round(w / s) + z, 0, 2^b - 1),       w_hat = (q - z) * s

(the asymmetric range includes 0, as GPTQ's quantizer does, so z is an integer code and 0 maps to 0 exactly).
A group with s = 0 (all zeros) gets s = 1: codes z, w_hat = 0. Every |w - w_hat| <= s / 2. The arithmetic is
float64 whatever the weight's dtype (the codes do not depend on the device's float32 rounding), and w_hat is
cast back to the weight's dtype (bf16 adds its own rounding of w_hat).

What is quantized (`quantize_model`): the weight of every `nn.Linear` (and transformers' `Conv1D`, GPT-2's
linear layer with W stored [in, out], grouped along its input dimension too), each distinct tensor once. The
output head and the input embeddings are left alone unless `include_embeddings` is set, as the quantizers of
the published attack leave them by default (GPTQ/AWQ keep lm_head in full precision, bitsandbytes skips
lm_head); a tied head is the embedding matrix and follows the same setting. Biases are never quantized.
"""

from __future__ import annotations

import dataclasses

import torch

BITS = (4, 8)
DEFAULT_GROUP_SIZE = 128
GROUP_SIZE_MAX = 1 << 16


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """The RTN codes of one weight [out, in] in n = ceil(in / G) groups per row.

    codes: int16 [out, n, G] (entries past `in` in the last group are padding, code z), scales: float64 [out, n],
    zeros: int16 [out, n] (0 for symmetric), plus what is needed to rebuild w_hat [out, in] in `dtype`."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    in_features: int
    dtype: torch.dtype

    def dequantize(self) -> torch.Tensor:
        """w_hat [out, in] = (q - z) * s, in the original dtype."""
        w = (self.codes.double() - self.zeros.double().unsqueeze(-1)) * self.scales.unsqueeze(-1)
        return w.reshape(w.shape[0], -1)[:, : self.in_features].to(self.dtype)


def check_settings(bits: int, group_size: int) -> None:
    """ValueError for bits outside BITS or a group size outside [1, GROUP_SIZE_MAX] (callers word it)."""
    if bits not in BITS:
        raise ValueError(f"bits={bits}: RTN here quantizes to one of {BITS} bits")
    if not 1 <= group_size <= GROUP_SIZE_MAX:
        raise ValueError(f"group_size={group_size}: must lie in [1, {GROUP_SIZE_MAX}]")


def quantize_weight(w: torch.Tensor, bits: int, group_size: int = DEFAULT_GROUP_SIZE, symmetric: bool = True):
    """The `QuantizedWeight` of a 2-D weight `w` [out, in] (module docstring's formulas)."""
    check_settings(bits, group_size)
    if w.dim() != 2:
        raise ValueError(f"quantize_weight takes a 2-D weight [out, in], got shape {tuple(w.shape)}")
    out, n_in = w.shape
    n = -(-n_in // group_size)
    x = torch.zeros(out, n * group_size, dtype=torch.float64, device=w.device)
    x[:, :n_in] = w.detach().double()
    g = x.view(out, n, group_size)  # zero padding changes neither max|w| nor the 0-including [lo, hi]
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = g.abs().amax(dim=-1) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        codes = torch.clamp(torch.round(g / scale.unsqueeze(-1)), -qmax, qmax)
        zeros = torch.zeros_like(scale)
    else:
        levels = 2**bits - 1
        lo, hi = g.amin(dim=-1).clamp(max=0.0), g.amax(dim=-1).clamp(min=0.0)
        scale = (hi - lo) / levels
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zeros = torch.round(-lo / scale)
        codes = torch.clamp(torch.round(g / scale.unsqueeze(-1)) + zeros.unsqueeze(-1), 0, levels)
    return QuantizedWeight(codes.to(torch.int16), scale, zeros.to(torch.int16), n_in, w.dtype)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int = DEFAULT_GROUP_SIZE, symmetric: bool = True):
    """w_hat: `w` [out, in] quantized and de-quantized, same shape and dtype."""
    return quantize_weight(w, bits, group_size, symmetric).dequantize()


@dataclasses.dataclass(frozen=True)
class QuantizeReport:
    """What `quantize_model` did: the quantized weights' names, how many entries, and the largest |w - w_hat|."""

    names: tuple[str, ...]
    numel: int
    max_abs_error: float


def _targets(model: torch.nn.Module, include_embeddings: bool) -> list[tuple[str, torch.nn.Parameter, bool]]:
    """(name, weight, stored_transposed) of each distinct weight to quantize, in module order."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        Conv1D = ()  # noqa: N806
    skip = set()
    if not include_embeddings:
        for get in ("get_input_embeddings", "get_output_embeddings"):
            mod = getattr(model, get, lambda: None)()
            if mod is not None and getattr(mod, "weight", None) is not None:
                skip.add(id(mod.weight))  # a tied head is the embedding: one id, skipped together
    seen, out = set(), []
    for name, mod in model.named_modules():
        is_linear, is_conv1d = isinstance(mod, torch.nn.Linear), bool(Conv1D) and isinstance(mod, Conv1D)
        is_embedding = include_embeddings and isinstance(mod, torch.nn.Embedding)
        w = getattr(mod, "weight", None)
        if not (is_linear or is_conv1d or is_embedding) or w is None or id(w) in skip or id(w) in seen:
            continue
        seen.add(id(w))
        out.append((f"{name}.weight", w, is_conv1d))  # Embedding [vocab, hidden]: grouped along hidden
    return out


@torch.no_grad()
def quantize_model(
    model: torch.nn.Module, bits: int, group_size: int = DEFAULT_GROUP_SIZE, symmetric: bool = True,
    include_embeddings: bool = False,
) -> QuantizeReport:  # fmt: skip
    """Replace, in place, each weight `_targets` names by its w_hat (same dtype, device); the report."""
    check_settings(bits, group_size)
    names, numel, worst = [], 0, 0.0
    for name, w, transposed in _targets(model, include_embeddings):
        src = w.t() if transposed else w  # Conv1D stores [in, out]: its input dimension is dim 0
        w_hat = fake_quantize(src, bits, group_size, symmetric)
        worst = max(worst, (src.double() - w_hat.double()).abs().max().item())
        w.copy_(w_hat.t() if transposed else w_hat)
        names.append(name)
        numel += w.numel()
    return QuantizeReport(tuple(names), numel, worst)
