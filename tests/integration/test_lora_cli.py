"""`dsunlearn unlearn` with a LoRA adapter through the command line, 2 ranks, ZeRO-3 (issue 17).

npo + GRU with a KL retain term (theta_o's logits from the same module with the adapter disabled, every retain
micro-batch), AdamW, 4 steps, a checkpoint every 2, the TOFU evaluation at the end on the adapter model, the
merged model on request. Two lineages: A uninterrupted; B killed on rank 1 at the start of step index 3, then
`--resume`d from step000002. Checked: B's final adapter equals A's bit for bit (the resumed optimizer state and
GRU EMA of the adapter parameters), A's run dir holds adapter/ (peft's format), model/ (merged), delta/ and the
evaluation; `dsunlearn extrapolate --alpha 0` of A equals A's merged model bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.conftest_model import SMALL_DATA, cli_env, load_weights, run_cli, tiny_model, zero3_config  # noqa: F401

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _args(model, z3, out: Path, *extra: str) -> list[str]:
    return [
        "unlearn", "--config", "tiny_npo", f"model.name_or_path={model}", *SMALL_DATA,
        "model.adapter.type=lora", "model.adapter.r=4", "model.adapter.alpha=8",
        "model.adapter.target_modules=[q_proj,v_proj,up_proj]", "model.adapter.save_merged=true",
        "engine.max_steps=4", "engine.optimizer=adamw", "engine.lr=1e-2", f"engine.ds_config={z3}",
        "objective.name=npo", "objective.retain_loss=kl", "geometry.gru=true", "run.save_every=2",
        "eval.at_end=true", "eval.max_items=4", "eval.retain_log=null", "eval.mia=false",
        "--output-dir", str(out), *extra,
    ]  # fmt: skip


def test_lora_run_resume_eval_and_extrapolate(tiny_model, zero3_config, tmp_path):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    proc = run_cli(_args(tiny_model, zero3_config, a), nproc=2, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = run_cli(
        _args(tiny_model, zero3_config, b), nproc=2, env=cli_env(DSUNLEARN_TEST_KILL="step:1:3"), timeout=900
    )
    assert killed.returncode != 0 and (b / "checkpoints" / "LATEST").read_text().strip() == "step000002"
    resumed = run_cli(_args(tiny_model, zero3_config, b, "--resume"), nproc=2, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    adapter_a = load_file(str(a / "adapter" / "adapter_model.safetensors"))
    adapter_b = load_file(str(b / "adapter" / "adapter_model.safetensors"))
    assert set(adapter_a) == set(adapter_b) and all(torch.equal(adapter_a[k], adapter_b[k]) for k in adapter_a)
    assert any(float(t.abs().max()) > 0 for k, t in adapter_a.items() if ".lora_B." in k), "the adapter did not move"
    assert json.loads((a / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert {"adapter", "model", "delta", "eval", "checkpoints"} <= {p.name for p in a.iterdir()}
    events = [json.loads(line) for line in (a / "events.jsonl").read_text().splitlines()]
    final_eval = [e for e in events if e.get("event") == "eval" and e.get("final")]
    assert final_eval, "no final evaluation of the adapter model"

    x = run_cli(["extrapolate", "--run", str(a), "--alpha", "0", "--output-dir", str(tmp_path / "x0")])
    assert x.returncode == 0, x.stderr[-3000:]
    merged, x0 = load_weights(a / "model"), load_weights(tmp_path / "x0")
    assert set(merged) == set(x0) and all(torch.equal(merged[k], x0[k]) for k in merged)
    base = load_weights(Path(tiny_model))
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert sorted({k.split(".")[-2] for k in changed}) == ["q_proj", "up_proj", "v_proj"]
