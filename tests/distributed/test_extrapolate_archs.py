"""`extrapolate --alpha 0` reproduces `model/` bit for bit on every checkpoint layout, 1 and 2 ranks ZeRO-3,
fp32 and bf16 training (fp32 originals, model.dtype=float32).

GPT-2, GPT-NeoX (`embed_out` on file, `lm_head` in memory), OPT, Qwen2, Mistral, Phi, Gemma, Falcon, Mixtral
(per-expert w1/w2/w3 on file, fused `gate_up_proj`/`down_proj` in memory in transformers 5), MPT, untied Llama.
One spawned 2-rank job loops over all of them (real partitioned ZeRO-3 engines, 2 AdamW steps on random
tokens), then a 1-rank pass; `model/` is written by `save_hf_model`, deltas by `save_delta_shard`. Checked:
- the extrapolated files hold the same tensor names, dtypes and bits as `model/`;
- `model/` is in the layout `save_pretrained` writes (same tensor names as the original checkpoint) and loads
  with `from_pretrained` without missing or unexpected keys, to the same weights as the extrapolated model;
- the run moved the weights (alpha = 0 is not just a copy of the original).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsunlearn.uipe.extrapolate import extrapolate
from helpers.arch_models import ARCHS, save_archs, train_and_save
from helpers.spawn import run_distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
PRECISIONS = ("fp32", "bf16")


def _files(d: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    origs = save_archs(root / "orig")
    cases2 = [(a, p) for a in ARCHS for p in PRECISIONS]
    cases1 = [(a, PRECISIONS[i % 2]) for i, a in enumerate(ARCHS)]  # 1 rank: each arch once, dtypes alternating
    dirs = run_distributed(train_and_save, 2, origs, str(root / "runs"), cases2)[0]
    dirs += run_distributed(train_and_save, 1, origs, str(root / "runs"), cases1)[0]
    return origs, [(c, Path(d)) for c, d in zip(cases2 + cases1, dirs, strict=True)]


def test_alpha0_reproduces_model_dir_on_every_layout(runs, tmp_path):
    from transformers import AutoModelForCausalLM

    origs, cases = runs
    for (arch, precision), run in cases:
        case = f"{arch} {precision} {run.name}"
        a0 = extrapolate(origs[arch], run / "delta", 0.0, tmp_path / run.name)
        got, want, orig = _files(a0), _files(run / "model"), _files(origs[arch])
        assert sorted(got) == sorted(want) == sorted(orig), case  # save_pretrained's layout, both
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for k in want:
            assert got[k].dtype == want[k].dtype, (case, k)
            if want[k].is_floating_point():
                assert want[k].dtype == dtype, (case, k)
            assert torch.equal(_bits(got[k]), _bits(want[k])), (case, k)
        moved = sum(int((want[k].float() != orig[k].float()).sum()) for k in want)
        assert moved > 0.3 * sum(t.numel() for t in want.values()), case
        m, info = AutoModelForCausalLM.from_pretrained(run / "model", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], (case, info)
        m2 = AutoModelForCausalLM.from_pretrained(a0)
        sd, sd2 = m.state_dict(), m2.state_dict()
        assert all(torch.equal(sd[k], sd2[k]) for k in sd), case
