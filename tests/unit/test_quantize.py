"""Group-wise RTN quantization (dsunlearn/models/quantize.py) against hand-worked groups and an independent
float64 implementation written from the formulas (`helpers/rtn_reference.py`: plain Python floats, one group at a
time)."""

from __future__ import annotations

import math

import pytest
import torch

from dsunlearn.models.quantize import fake_quantize, quantize_model, quantize_weight
from helpers.arch_models import build
from helpers.rtn_reference import ref_weight

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hand_worked_symmetric_int4():
    # s = 1.75 / 7 = 0.25; w / s = [1, -3.5, 7, 0] -> round half to even [1, -4, 7, 0]
    w = torch.tensor([[0.25, -0.875, 1.75, 0.0]])
    q = quantize_weight(w, 4, group_size=4, symmetric=True)
    assert q.codes.tolist() == [[[1, -4, 7, 0]]]
    assert q.scales.tolist() == [[0.25]]
    assert q.dequantize().tolist() == [[0.25, -1.0, 1.75, 0.0]]  # the -0.875 is off by s/2 = 0.125


def test_hand_worked_asymmetric_int4():
    # lo=-0.5, hi=3.25: s = 3.75 / 15 = 0.25, z = round(2) = 2; round(w / s) + z = [0, 1+2, 4+2, 13+2]
    w = torch.tensor([[-0.5, 0.3, 1.0, 3.25]])
    q = quantize_weight(w, 4, group_size=4, symmetric=False)
    assert q.codes.tolist() == [[[0, 3, 6, 15]]]
    assert q.zeros.tolist() == [[2]] and q.scales.tolist() == [[0.25]]
    assert q.dequantize().tolist() == [[-0.5, 0.25, 1.0, 3.25]]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_against_float64_reference_with_ragged_last_group(bits, symmetric):
    torch.manual_seed(bits + symmetric)
    w = torch.randn(5, 23) * 0.1  # 23 = 2 x 8 + 7: the last group of every row is ragged
    w[1, 8:16] = 0.0  # an all-zero group
    w[2, :8] = 0.3  # a constant group
    q = quantize_weight(w, bits, group_size=8, symmetric=symmetric)
    codes, scales, w_hat = ref_weight(w, bits, 8, symmetric)
    for r in range(5):
        for j in range(3):
            n = len(codes[r][j])
            assert q.codes[r, j, :n].tolist() == codes[r][j]  # exact integer codes
            assert q.scales[r, j].item() == scales[r][j]
    assert torch.equal(q.dequantize().double(), w_hat.float().double())
    step = torch.tensor([[s for s in row for _ in range(8)][:23] for row in scales], dtype=torch.float64)
    assert ((w.double() - w_hat).abs() <= step / 2 * (1 + 1e-12)).all()  # within half a step
    assert q.dequantize()[1, 8:16].abs().max().item() == 0.0  # all-zero group stays zero
    if not symmetric:
        assert torch.allclose(q.dequantize()[2, :8], torch.full((8,), 0.3))  # constant >0: hi is a code


def test_bf16_weights():
    torch.manual_seed(0)
    w = (torch.randn(4, 40) * 0.05).to(torch.bfloat16)
    w_hat = fake_quantize(w, 4, group_size=16, symmetric=False)
    assert w_hat.dtype == torch.bfloat16 and w_hat.shape == w.shape
    codes, _, ref = ref_weight(w, 4, 16, False)  # the bf16 values, exactly, in float64
    q = quantize_weight(w, 4, group_size=16, symmetric=False)
    assert q.codes[0, 2, :8].tolist() == codes[0][2]
    assert torch.equal(w_hat, ref.to(torch.bfloat16))


def test_default_group_size_and_bad_settings():
    w = torch.randn(2, 300)
    q = quantize_weight(w, 8)
    assert q.codes.shape == (2, 3, 128)  # 300 = 128 + 128 + 44
    for bits, g in [(3, 128), (16, 128), (4, 0), (4, 1 << 17)]:
        with pytest.raises(ValueError):
            quantize_weight(w, bits, g)
    with pytest.raises(ValueError):
        quantize_weight(torch.randn(3), 4, 4)


@pytest.mark.parametrize("arch", ["llama_untied", "gpt2", "qwen2"])
def test_quantize_model_layers(arch):
    model = build(arch, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    report = quantize_model(model, 4, group_size=16)
    after = dict(model.named_parameters())
    assert report.names and report.numel > 0
    # lm_head and the embeddings (tied or not), biases and norms: untouched
    assert not any(p is emb or p is head for n, p in model.named_parameters() if n in report.names)
    for n, p in model.named_parameters():
        if n not in report.names:
            assert torch.equal(p, before[n]), n
    for name in report.names:
        w0 = before[name]
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        transposed = type(mod).__name__ == "Conv1D"  # GPT-2: [in, out], grouped along dim 0
        src = w0.t() if transposed else w0
        _, _, ref = ref_weight(src, 4, 16, True)
        ref = ref.float()
        assert torch.equal(after[name], ref.t() if transposed else ref), name
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.weight is not head]
    assert all(f"{n}.weight" in report.names for n in linear)
    assert arch != "gpt2" or any("c_attn" in n for n in report.names)
    assert report.max_abs_error > 0


def test_include_embeddings_and_int8_closer_than_int4():
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    ref_model = build("llama_untied", seed=2)
    with torch.no_grad():
        ref = ref_model(input_ids=ids).logits
    errs = {}
    for bits in (8, 4):
        m = build("llama_untied", seed=2)
        r = quantize_model(m, bits, group_size=16, include_embeddings=True)
        assert "lm_head.weight" in r.names and "model.embed_tokens.weight" in r.names
        with torch.no_grad():
            errs[bits] = (m(input_ids=ids).logits - ref).abs().max().item()
    assert 0 < errs[8] < errs[4] / 4
    assert math.isfinite(errs[4])
