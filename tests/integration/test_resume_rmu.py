"""Crash and resume of an RMU run on 2 ranks, partitioned ZeRO-3 (`torch.distributed.run` subprocesses, SIGKILL via
DSUNLEARN_TEST_KILL, as tests/integration/test_resume.py does for NPO + GRU at ZeRO-2).

tiny_rmu on the synthetic WMDP documents (forget bio-forget+cyber-forget, retain wikitext), a 4-layer tiny Llama
with MLP biases (`helpers.reference_rmu.tiny_deep_model_dir`): layer 2 hooked, layers 1-2's mlp.down_proj.weight
trained (the biases beside them frozen), embed_diff against theta_o's layer-2 states, AdamW, 4 steps, a
checkpoint after step 2. Two lineages side by side:

- A: uninterrupted;
- C: C1 is killed on rank 1 at the start of step index 3 (step 3 done, its checkpoint step000002 published);
  C2 resumes from step000002 (steps 3 and 4 again) and finishes.

Checked: C's final weights and delta shards equal A's bit for bit; every frozen tensor is theta_o's bits in both,
the subset moved; C2's losses of steps 3 and 4 (which read the restored hooked layer, the seeded direction and
theta_o's reference states) equal A's exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.conftest_model import ZERO3_PARTITIONED, bits, cli_env, load_weights, run_cli
from helpers.reference_rmu import tiny_deep_model_dir

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SUBSET = {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
WMDP = ["data.suite=wmdp", "data.forget_split=bio-forget+cyber-forget", "data.retain_split=wikitext",
        "data.wmdp.n_hazard=4", "data.wmdp.n_general=4", "data.max_length=64", "eval.retain_log=null"]  # fmt: skip


def _args(model, z3: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", "--config", "tiny_rmu", f"model.name_or_path={model}", *WMDP, "objective.layer=2",
            "objective.train_layers=2", "engine.max_steps=4", "engine.micro_batch_size=2",
            "engine.global_batch_size=4", f"engine.ds_config={z3}", "eval.at_end=false", "run.save_every=2",
            "--output-dir", str(out), *extra]  # fmt: skip


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def _chain(model, z3: Path, c: Path) -> dict:
    c1 = run_cli(_args(model, z3, c), nproc=2, env=cli_env(TQDM_DISABLE="1", DSUNLEARN_TEST_KILL="step:1:3"))
    ck = c / "checkpoints"
    state = {"latest": (ck / "LATEST").read_text() if (ck / "LATEST").is_file() else None,
             "top": sorted(p.name for p in c.iterdir()), "events": _events(c)}  # fmt: skip
    c2 = run_cli(_args(model, z3, c, "--resume"), nproc=2, env=cli_env(TQDM_DISABLE="1"))
    return {"C1": c1, "C1_state": state, "C2": c2}


@pytest.fixture(scope="module")
def lineages(tmp_path_factory) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("resume_rmu")
    model = tiny_deep_model_dir(base / "model4")
    z3 = base / "z3.json"
    z3.write_text(json.dumps(ZERO3_PARTITIONED))
    a, c = base / "A", base / "C"
    with ThreadPoolExecutor(2) as pool:  # independent: each 2-rank launch leaves a core mostly idle
        fa = pool.submit(run_cli, _args(model, z3, a), 2, cli_env(TQDM_DISABLE="1"))
        fc = pool.submit(_chain, model, z3, c)
        return {"model": Path(model), "A_dir": a, "C_dir": c, "A": fa.result(), **fc.result()}


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_kill_left_only_the_step2_checkpoint(lineages):
    c1, st = lineages["C1"], lineages["C1_state"]
    assert c1.returncode != 0 and "exitcode  : -9" in c1.stderr, c1.stderr[-3000:]
    assert st["latest"] == "step000002\n"
    assert "model" not in st["top"] and "delta" not in st["top"]
    assert [e["step"] for e in st["events"] if e["event"] == "unlearn_step"] == [1, 2, 3]


def test_resumed_rmu_run_equals_the_uninterrupted_one(lineages):
    _ok(lineages["A"])
    _ok(lineages["C2"])
    a, c = lineages["A_dir"], lineages["C_dir"]
    theta_o, wa, wc = load_weights(lineages["model"]), load_weights(a / "model"), load_weights(c / "model")
    assert sorted(wa) == sorted(wc) == sorted(theta_o)
    diff = max(float((wa[k] - wc[k]).abs().max()) for k in wa)
    print(f"\nRMU resume: max |theta_resumed - theta_uninterrupted| = {diff:.3g}")
    assert all(torch.equal(bits(wa[k]), bits(wc[k])) for k in wa), f"not bitwise (max abs diff {diff:.3g})"
    for k in theta_o:  # the frozen tensors (down_proj.bias among them) are theta_o's bits; the subset moved
        assert torch.equal(bits(wc[k]), bits(theta_o[k])) == (k not in SUBSET), k
    for r in (0, 1):  # the UIPE deltas hold the subset only, and survive the resume
        da, dc = (load_file(str(d / "delta" / f"rank{r}.safetensors")) for d in (a, c))
        assert sorted(da) == sorted(dc) and {k.split("::")[0] for k in da} <= SUBSET
        for k in da:
            same = torch.equal(bits(da[k]), bits(dc[k])) if da[k].is_floating_point() else torch.equal(da[k], dc[k])
            assert same, (r, k)


def test_the_resumed_steps_repeat_the_uninterrupted_losses(lineages):
    _ok(lineages["C2"])
    ev = _events(lineages["C_dir"])
    resumes = [e for e in ev if e["event"] == "resume"]
    assert [(e["from_step"], e["world"], e["zero_stage"]) for e in resumes] == [(2, 2, 3)]
    assert ev[-1]["event"] == "done"
    ref = {e["step"]: e for e in _events(lineages["A_dir"]) if e["event"] == "unlearn_step"}
    after = [e for e in ev[ev.index(resumes[0]) :] if e["event"] == "unlearn_step"]
    assert [e["step"] for e in after] == [3, 4]
    for e in after:  # the forget MSE to c u and the retain MSE to theta_o's states, exactly as uninterrupted
        assert e["loss_forget"] == ref[e["step"]]["loss_forget"] and e["loss_retain"] == ref[e["step"]]["loss_retain"]
        assert e["loss_retain"] > 0.0  # the subset moved before these steps: the retain term is live
