"""`dsunlearn extrapolate` refuses out-of-range alpha and non-finite results before anything is written.

CLI level (`python -m dsunlearn extrapolate`): a real tiny Llama as theta_o and a one-rank delta shard in
`save_delta_shard`'s format, once finite (alpha = 1e300 refused by the bound) and once with a NaN in one tensor
(refused at alpha = 0.5, naming the tensor). (a NaN alpha: tests/unit/test_delta.py; finite deltas
extrapolate in tests/integration/test_extrapolate.py.) Each refusal: exit
2, one `dsunlearn extrapolate: error:` line naming the tensor (or the bound), no traceback, no output dir, no
temporary dir, every pre-existing file byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dsunlearn.manifest import write_manifest
from dsunlearn.uipe.delta_format import META_KEY, model_hash
from helpers.tiny_model import make_tiny_model

NAME = "model.layers.0.mlp.up_proj.weight"


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _run_dir(tmp: Path, model: Path, name: str, poison: bool) -> Path:
    from safetensors import safe_open

    run = tmp / name
    (run / "delta").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  name_or_path: {model}\n")
    with safe_open(str(model / "model.safetensors"), framework="pt") as fh:
        w = fh.get_tensor(NAME)
    d = torch.full((w.numel(),), 1e-3)
    if poison:
        d[5] = float("nan")
    pm = {"shape": list(w.shape), "numel": w.numel(), "start": 0, "fragment_numel": w.numel()}
    meta = {"world_size": 1, "rank": 0, "dtype": "float32", "base_dtype": "float32", "inexact": 0,
            "original_hash": model_hash(model), "params": {NAME: pm}}  # fmt: skip
    save_file({NAME: d}, str(run / "delta" / "rank0.safetensors"), metadata={META_KEY: json.dumps(meta)})
    write_manifest(run / "delta")  # consistent checksums: the refusal must come from the values
    return run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nonfinite")
    model = make_tiny_model(tmp / "orig", hidden=16, layers=1)
    return tmp, model, _run_dir(tmp, model, "ok", False), _run_dir(tmp, model, "nan", True)


@pytest.mark.parametrize(
    "case,alpha,needle",
    [("ok", "1e300", "|alpha| <= 100"), ("nan", "0.5", NAME)],
)
def test_refused_with_one_line_and_nothing_written(setup, case, alpha, needle):
    tmp, model, ok, nan = setup
    run = ok if case == "ok" else nan
    out = tmp / f"out_{case}_{alpha}" / "model"
    before = _tree(tmp)
    r = subprocess.run([sys.executable, "-m", "dsunlearn", "extrapolate", "--run", str(run), f"--alpha={alpha}",
                        "--original", str(model), "--output-dir", str(out)], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert err[-1].startswith("dsunlearn extrapolate: error:") and needle in err[-1], err
    assert "Traceback" not in r.stderr
    assert not out.exists() and not out.parent.exists() and _tree(tmp) == before
