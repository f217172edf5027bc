"""UIPE end to end: real unlearning runs (npo + GRU, AdamW, 4 steps) on 1 and 2 ranks at ZeRO-2 and
partitioned ZeRO-3 (`stage3_param_persistence_threshold: 0`), then `extrapolate` in this single process
(so the 2-rank deltas are reassembled at a different world size).

- alpha = 0 reproduces `<out>/model` (theta_u, consolidated by the run) bit for bit, fix-up elements included.
- alpha = 0.5 is exactly the fp32 formula o + fl32(1.5) d (u + fl32(0.5) d at fix-ups) with the stored
  delta, and theta_o + 1.5 (theta_u - theta_o) computed here in float64 from the two saved models within
  2 fp32 ulps of the largest magnitude involved.
- `dsunlearn extrapolate` (in process): original from config.yaml, default output dir, --checkpoint, and an
  existing output dir refused with exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsunlearn.uipe.delta_format import read_delta_meta
from dsunlearn.uipe.extrapolate import extrapolate
from helpers.conftest_model import SMALL_DATA, bits, load_weights, tiny_model, unlearn_runs, zero3_config  # noqa: F401
from helpers.spawn import run_distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STAGES = ("z2", "z3")
WORLDS = (1, 2)


def _overrides(model, z3, stage: str, out: Path) -> list[str]:
    return [
        f"model.name_or_path={model}",
        *SMALL_DATA,
        "engine.max_steps=4",
        "engine.optimizer=adamw",
        "engine.lr=1e-3",
        "objective.name=npo",
        "geometry.gru=true",
        "eval.at_end=false",
        "run.save_every=2",
        f"run.output_dir={out}",
        f"engine.ds_config={z3}" if stage == "z3" else "engine.zero_stage=2",
    ]


@pytest.fixture(scope="module")
def runs(tiny_model, zero3_config, tmp_path_factory) -> dict:  # noqa: F811
    base = tmp_path_factory.mktemp("uipe_runs")
    out = {}
    for world in WORLDS:
        todo = [(_overrides(tiny_model, zero3_config, s, base / f"w{world}_{s}"), False) for s in STAGES]
        dirs = run_distributed(unlearn_runs, world, todo)[0]
        out.update({(world, s): Path(d) for s, d in zip(STAGES, dirs, strict=True)})
    return out


def _assemble(delta_dir: Path, name: str, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(full fp32 delta, bool fix-up mask) of `name`, checking the rank fragments tile it exactly once."""
    d, fix = torch.zeros(numel), torch.zeros(numel, dtype=torch.bool)
    cover = torch.zeros(numel, dtype=torch.int64)
    for m in read_delta_meta(delta_dir):
        if name not in m["params"]:
            continue
        pm, t = m["params"][name], load_file(m["file"])
        a, k = pm["start"], pm["fragment_numel"]
        assert pm["numel"] == numel and t[name].dtype == torch.float32
        d[a : a + k] = t[name]
        cover[a : a + k] += 1
        if f"{name}::fix_idx" in t:
            fix[a + t[f"{name}::fix_idx"]] = True
    assert bool((cover == 1).all()), f"{name}: fragments do not tile the parameter"
    return d, fix


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("world", WORLDS)
def test_delta_shards_describe_the_run(runs, tiny_model, world, stage):  # noqa: F811
    metas = read_delta_meta(runs[world, stage] / "delta")
    assert [m["rank"] for m in metas] == list(range(world)) and {m["world_size"] for m in metas} == {world}
    names = set(load_weights(tiny_model))
    covered = {n for m in metas for n in m["params"]}
    assert covered == names  # every trainable tensor (the tied lm_head is stored once)
    if world == 2 and stage == "z3":  # real partitioning: every parameter has elements on both ranks
        assert all(set(m["params"]) == names for m in metas)
    print(f"\nw{world} {stage}: fix-up elements per rank {[m['inexact'] for m in metas]}")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("world", WORLDS)
def test_alpha0_is_the_unlearned_model_bit_for_bit(runs, tiny_model, tmp_path, world, stage):  # noqa: F811
    run = runs[world, stage]
    got = load_weights(extrapolate(tiny_model, run / "delta", 0.0, tmp_path / "a0"))
    want = load_weights(run / "model")
    assert sorted(got) == sorted(want)
    changed = 0
    for k in want:
        assert got[k].dtype == want[k].dtype == torch.float32
        assert torch.equal(bits(got[k]), bits(want[k])), k
        changed += int((want[k] != load_weights(tiny_model)[k]).sum())
    assert changed > 0.5 * sum(t.numel() for t in want.values())  # the run did move the weights


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("world", WORLDS)
def test_alpha_half_is_theta_o_plus_1p5_delta(runs, tiny_model, tmp_path, world, stage):  # noqa: F811
    run = runs[world, stage]
    got = load_weights(extrapolate(tiny_model, run / "delta", 0.5, tmp_path / "a05"))
    o, u = load_weights(tiny_model), load_weights(run / "model")
    max_abs, max_rel = 0.0, 0.0
    for k in o:
        ov, uv, gv = o[k].reshape(-1), u[k].reshape(-1), got[k].reshape(-1)
        d, fix = _assemble(run / "delta", k, ov.numel())
        want = torch.where(fix, uv + torch.tensor(0.5) * d, ov + torch.tensor(1.5) * d)
        assert torch.equal(bits(gv), bits(want)), k
        ref = ov.double() + 1.5 * (uv.double() - ov.double())
        err = (gv.double() - ref).abs()
        scale = torch.stack([ov.double().abs(), uv.double().abs(), ref.abs()]).amax(0)
        assert bool((err <= scale * 2.0**-22).all()), (k, float((err / scale).max()))
        max_abs = max(max_abs, float(err.max()))
        max_rel = max(max_rel, float((err / scale.clamp_min(1e-30)).max()))
    print(f"\nw{world} {stage}: alpha=0.5 vs float64 max abs err {max_abs:.3g}, max err / magnitude {max_rel:.3g}")


def test_cli_extrapolate(runs, tiny_model, capsys):  # noqa: F811
    from dsunlearn.cli import main

    run = runs[1, "z2"]
    assert main(["extrapolate", "--run", str(run), "--alpha", "0"]) == 0  # original from config.yaml
    out = run / "uipe" / "alpha_0"
    got, want = load_weights(out), load_weights(run / "model")
    assert all(torch.equal(bits(got[k]), bits(want[k])) for k in want)
    # written by the same writer as model/ (config with the 4.4x keys added: models/compat.py)
    assert json.loads((out / "config.json").read_text()) == json.loads((run / "model" / "config.json").read_text())
    assert (out / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["extrapolate", "--run", str(run), "--alpha", "0"]) == 2  # exists: never replaced
    err = capsys.readouterr().err.strip()
    assert err.startswith("dsunlearn extrapolate: error:") and "exists" in err and "\n" not in err
    ck = run.parent / "from_step2"
    args = ["extrapolate", "--run", str(run), "--alpha", "0", "--checkpoint", "step000002", "--output-dir", str(ck)]
    assert main([*args, "--original", str(tiny_model)]) == 0
    mid = load_weights(ck)
    assert any(not torch.equal(mid[k], want[k]) for k in want)  # theta after 2 of 4 steps
    assert main(["extrapolate", "--run", str(run), "--alpha", "0", "--checkpoint", "step000099"]) == 2
