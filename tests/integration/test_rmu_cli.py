"""`dsunlearn unlearn` with RMU through the CLI on 2 ranks, partitioned ZeRO-3, on MUSE-format text windows (the
synthetic corpus), then `dsunlearn extrapolate`: the saved model differs from theta_o exactly in the trainable
subset (layers 1-2's mlp.down_proj.weight of a 4-layer Llama) and is theta_o's fp32 bits everywhere else; the
UIPE deltas hold the subset only, and extrapolation at alpha = 1 leaves every frozen tensor bit-identical."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.conftest_model import ZERO3_PARTITIONED, bits, cli_env, load_weights, run_cli
from helpers.reference_rmu import tiny_deep_model_dir

pytestmark = pytest.mark.slow

SUBSET = {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}


def test_rmu_unlearn_trains_only_the_subset_and_extrapolation_keeps_the_rest(tmp_path):
    from safetensors import safe_open

    from dsunlearn.cli import main

    model = tiny_deep_model_dir(tmp_path / "model4")
    z3 = tmp_path / "z3.json"
    z3.write_text(json.dumps(ZERO3_PARTITIONED))
    run = tmp_path / "rmu"
    args = ["unlearn", "--config", "tiny_muse_unlearn", f"model.name_or_path={model}", f"run.output_dir={run}",
            "data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4", "data.max_length=64",
            "objective.name=rmu", "objective.retain_loss=auto", "objective.layer=2", "objective.train_layers=2",
            "objective.lambda=1200", "engine.max_steps=3", "engine.optimizer=sgd", "engine.lr=5.0",
            "engine.micro_batch_size=2", "engine.global_batch_size=4", "engine.grad_accum_steps=1",
            f"engine.ds_config={z3}", "eval.at_end=false", "geometry.geffect_every=1", "run.save_every=2"]  # fmt: skip
    r = run_cli(args, nproc=2, env=cli_env(TQDM_DISABLE="1"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e.get("event") == "unlearn_step"]
    assert len(steps) == 3 and all(s["geffect_groups"] == ["layers.1", "layers.2"] for s in steps)
    assert steps[0]["loss_retain"] == 0.0 and steps[-1]["loss_retain"] > 0.0  # theta_o at step 1, then it moved

    theta_o, theta_u = load_weights(model), load_weights(run / "model")
    assert set(theta_u) == set(theta_o)
    for k in theta_o:
        same = torch.equal(bits(theta_u[k]), bits(theta_o[k]))
        assert same == (k not in SUBSET), k  # the subset moved; everything else is theta_o's bits

    delta_names = set()
    for f in sorted((run / "delta").glob("rank*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            delta_names |= {k.split("::")[0] for k in fh.keys()}
    assert delta_names == SUBSET

    out = tmp_path / "alpha1"
    assert main(["extrapolate", "--run", str(run), "--alpha", "1", "--output-dir", str(out)]) == 0
    extra = load_weights(out)
    for k in theta_o:
        if k in SUBSET:
            want = theta_o[k] + 2.0 * (theta_u[k] - theta_o[k])  # theta_o + (1 + alpha) delta
            assert torch.allclose(extra[k], want, rtol=0, atol=1e-6), k
            assert not torch.equal(extra[k], theta_u[k])
        else:
            assert torch.equal(bits(extra[k]), bits(theta_o[k])), k

    # the offline G-effect of the run's states (theta_o, step 2, the end) on the subset: its hook and subset too
    assert main(["geffect", "--run", str(run), "--probe-size", "4"]) == 0
    result = json.loads((run / "geffect" / "geffect.json").read_text())
    assert result["groups"] == ["layers.1", "layers.2"]
    assert result["steps"] == [0, 2, 3]
    assert all(
        abs(sum(r["geffect_u_groups"]) - r["geffect_u"]) <= 1e-9 * (1 + abs(r["geffect_u"]))
        for r in result["checkpoints"]
    )


def test_a_layer_the_model_does_not_have_is_one_line_exit_2(tmp_path):
    model = tiny_deep_model_dir(tmp_path / "model4")
    out = tmp_path / "r"
    args = ["unlearn", "--config", "tiny_muse_unlearn", f"model.name_or_path={model}", f"run.output_dir={out}",
            "data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4", "data.max_length=64",
            "objective.name=rmu", "objective.layer=9", "eval.at_end=false"]  # fmt: skip
    r = run_cli(args, nproc=1, env=cli_env(TQDM_DISABLE="1"), timeout=300)
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "objective.layer=9 is out of range: this model has 4 decoder layers (0..3)" in err
    assert not out.exists()
