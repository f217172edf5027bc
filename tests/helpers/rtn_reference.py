"""An independent float64 reference of group-wise RTN quantization (tests only), written from the formulas of
docs/attacks.md in plain Python floats, one group at a time, not from `dsunlearn/models/quantize.py`."""

from __future__ import annotations


def ref_group(values: list[float], bits: int, symmetric: bool) -> tuple[list[int], float, int, list[float]]:
    """(codes, scale, zero, w_hat) of one group, in Python floats (float64), from the formulas."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        s = max(abs(v) for v in values) / qmax
        s = s if s > 0 else 1.0
        codes = [int(min(max(round(v / s), -qmax), qmax)) for v in values]
        return codes, s, 0, [c * s for c in codes]
    levels = 2**bits - 1
    lo, hi = min(min(values), 0.0), max(max(values), 0.0)
    s = (hi - lo) / levels
    s = s if s > 0 else 1.0
    z = round(-lo / s)
    codes = [int(min(max(round(v / s) + z, 0), levels)) for v in values]
    return codes, s, z, [(c - z) * s for c in codes]


def ref_weight(w, bits: int, g: int, symmetric: bool):
    """(codes per row and group, scales, w_hat [out, in] float64) of a 2-D torch weight `w` [out, in], grouped
    along its input dimension by looping over rows and groups of `g` entries (the last one shorter)."""
    import torch

    rows = w.double().tolist()
    codes, scales, w_hat = [], [], []
    for row in rows:
        rc, rs, rw = [], [], []
        for start in range(0, len(row), g):
            c, s, _, wh = ref_group(row[start : start + g], bits, symmetric)
            rc.append(c)
            rs.append(s)
            rw += wh
        codes.append(rc)
        scales.append(rs)
        w_hat.append(rw)
    return codes, scales, torch.tensor(w_hat, dtype=torch.float64)
