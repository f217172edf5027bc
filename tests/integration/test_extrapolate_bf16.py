"""UIPE after bf16 training: DeepSpeed's fp32 master starts from the bf16-rounded original, so deltas are
relative to bf16(theta_o); alpha = 0 gives the fp32 master theta_u, written in the training dtype (bf16): the
saved model bit for bit."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers.tiny_model import SMALL_DATA, make_tiny_model

pytestmark = pytest.mark.slow


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "dsunlearn", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_bf16_alpha0_reproduces_the_saved_model(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    run = tmp_path / "run"
    _cli("unlearn", "--config", "tiny_npo_gru", "--output-dir", str(run), f"model.name_or_path={model}",
         "engine.precision=bf16", "engine.zero_stage=2", "engine.max_steps=3", "engine.micro_batch_size=4",
         "engine.global_batch_size=4", "eval.at_end=false", *SMALL_DATA)  # fmt: skip
    _cli("extrapolate", "--run", str(run), "--alpha", "0")
    _cli("extrapolate", "--run", str(run), "--alpha", "1")
    saved = load_file(str(run / "model" / "model.safetensors"))
    a0 = load_file(str(run / "uipe" / "alpha_0" / "model.safetensors"))
    a1 = load_file(str(run / "uipe" / "alpha_1" / "model.safetensors"))
    orig = load_file(str(model / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {t.dtype for t in a0.values()} == {torch.bfloat16}
    for k in saved:
        assert torch.equal(a0[k].view(torch.int16), saved[k].view(torch.int16)), k
        # alpha = 1 doubles the step taken from bf16(theta_o): theta = bf16(o) + 2 (theta_u - bf16(o)), within
        # the bf16 roundings of theta_u (half an ulp, doubled) and of the result (half an ulp)
        base, u, got = (t.double() for t in (orig[k].to(torch.bfloat16), a0[k], a1[k]))
        err = (got - (base + 2 * (u - base))).abs()
        assert bool((err <= 2.0**-8 * (2 * u.abs() + got.abs()) + 1e-30).all()), k
    assert any(not torch.equal(a0[k], orig[k]) for k in saved)  # the run really moved the weights
