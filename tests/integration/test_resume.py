"""Crash and resume on 2 ranks (`torch.distributed.run` subprocesses, SIGKILL via DSUNLEARN_TEST_KILL).

npo + GRU, AdamW, ZeRO-2, 6 steps, a checkpoint every 2 steps (step000002, step000004). Two lineages:

- A: uninterrupted (the reference).
- C: C1 is killed on rank 0 inside the step-4 save (`save:0:4`: files staged, nothing published yet);
  C2 resumes from step000002, writes a new step-4 checkpoint and is killed on rank 1 at the start of step
  index 5 (`step:1:5`); C3 resumes from step000004 and finishes.
  (One chain covers both crash points with 4 launches instead of 5.)

Checked: after C1 LATEST still names step000002, that directory is complete and loads, no step000004 is
published (its parts stay under .staging); after C2 LATEST names step000004 and nothing final was written;
C3's final weights and delta shards equal A's bit for bit, its GRU inner products after the resume equal
A's (they read the restored EMA); events.jsonl has "resume" events from steps 2 and 4. A `--resume` with a
changed config (engine.lr), or on 1 process instead of 2, is refused: exit 2, one line, nothing touched.
A runs beside the C chain (independent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsunlearn.engine.checkpoint import RankState
from dsunlearn.manifest import verify_manifest
from dsunlearn.uipe.delta_format import read_delta_meta
from helpers.conftest_model import SMALL_DATA, bits, cli_env, load_weights, run_cli, tiny_model  # noqa: F401

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS, SAVE_EVERY = 6, 2


def _args(model, out: Path, *extra: str) -> list[str]:
    return [
        "unlearn", "--config", "tiny_npo", f"model.name_or_path={model}", *SMALL_DATA,
        f"engine.max_steps={STEPS}", "engine.optimizer=adamw", "engine.lr=1e-3", "engine.zero_stage=2",
        "objective.name=npo", "geometry.gru=true", "eval.at_end=false", f"run.save_every={SAVE_EVERY}",
        "--output-dir", str(out), *extra,
    ]  # fmt: skip


def _state(out: Path) -> dict:
    ck = out / "checkpoints"
    return {
        "latest": (ck / "LATEST").read_text() if (ck / "LATEST").is_file() else None,
        "checkpoints": sorted(p.name for p in ck.iterdir()) if ck.is_dir() else [],
        "staging": sorted(str(p.relative_to(ck / ".staging")) for p in (ck / ".staging").rglob("*"))
        if (ck / ".staging").is_dir()
        else [],
        "top": sorted(p.name for p in out.iterdir()),
        "events": _events(out),
    }


def _killed(proc) -> bool:
    """torchrun reports the SIGKILLed rank with exit code -9."""
    return proc.returncode != 0 and "exitcode  : -9" in proc.stderr


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def _refused_resume(model, out: Path, change_lr: bool) -> dict:
    """`--resume` of the 2-rank run `out` on 1 process, with engine.lr changed or the same config."""
    watched = [out / "events.jsonl", out / "config.yaml", out / "run.json", out / "checkpoints" / "LATEST"]
    before = [p.read_bytes() for p in watched]
    args = _args(model, out, "--resume")
    if change_lr:
        args[args.index("engine.lr=1e-3")] = "engine.lr=5e-4"
    proc = run_cli(args, nproc=1)
    return {"proc": proc, "untouched": [p.read_bytes() for p in watched] == before}


def _chain(model, c: Path) -> dict:
    res = {"C1": run_cli(_args(model, c), nproc=2, env=cli_env(DSUNLEARN_TEST_KILL="save:0:4"))}
    res["C1_state"] = _state(c)
    res["refused"] = _refused_resume(model, c, change_lr=True)
    res["refused_world"] = _refused_resume(model, c, change_lr=False)
    res["C2"] = run_cli(_args(model, c, "--resume"), nproc=2, env=cli_env(DSUNLEARN_TEST_KILL="step:1:5"))
    res["C2_state"] = _state(c)
    res["C3"] = run_cli(_args(model, c, "--resume"), nproc=2)
    return res


@pytest.fixture(scope="module")
def lineages(tiny_model, tmp_path_factory) -> dict:  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("resume")
    a, c = base / "A", base / "C"
    # A and the C chain are independent: run them side by side (each 2-rank launch leaves a core mostly idle)
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(run_cli, _args(tiny_model, a), 2)
        fc = pool.submit(_chain, tiny_model, c)
        return {"A_dir": a, "C_dir": c, "A": fa.result(), **fc.result()}


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_uninterrupted_run_keeps_the_newest_two_checkpoints(lineages):
    _ok(lineages["A"])
    st = _state(lineages["A_dir"])
    assert st["latest"] == "step000004\n" and st["checkpoints"] == ["LATEST", "step000002", "step000004"]
    assert {"model", "delta", "events.jsonl", "run.json", "config.yaml"} <= set(st["top"])
    assert ".delta.tmp" not in st["top"]


def test_kill_inside_save_keeps_the_previous_checkpoint(lineages):
    c1, st = lineages["C1"], lineages["C1_state"]
    assert _killed(c1), c1.stderr[-3000:]
    assert st["latest"] == "step000002\n"
    published = [n for n in st["checkpoints"] if n.startswith("step")]
    assert published == ["step000002"]  # no half step000004
    # the step-4 parts were staged (rank 0 was killed after writing them), never published
    assert "step000004/extra_rank0.safetensors" in st["staging"]
    assert "step000004/delta/rank0.safetensors" in st["staging"]
    assert "model" not in st["top"] and "delta" not in st["top"]
    # the events stop at the step-4 checkpoint: logged after a publish that never happened
    assert [e["step"] for e in st["events"] if e["event"] == "checkpoint"] == [2]


def test_previous_checkpoint_is_complete_and_loadable(lineages):
    # C2 resumed from it; here, its files as C1 left them (C2 does not rewrite step000002)
    d = lineages["C_dir"] / "checkpoints" / "step000002"
    names = {p.name for p in d.iterdir()}
    assert {"extra_rank0.safetensors", "extra_rank1.safetensors", "mp_rank_00_model_states.pt", "delta"} <= names
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= names
    verify_manifest(d, collective=False)  # every file as written (sizes and sha256)
    for r in (0, 1):
        rank_state = RankState.read(d / f"extra_rank{r}.safetensors")
        assert rank_state.step == 2 and rank_state.world_size == 2 and rank_state.gru_ema is not None
    assert [m["rank"] for m in read_delta_meta(d / "delta")] == [0, 1]


def test_resume_from_step2_checkpoints_again_then_second_kill(lineages):
    c2, st = lineages["C2"], lineages["C2_state"]
    assert "Gradients are only available" not in c2.stderr, "resume failed restoring GRU's EMA (ZeRO-2)"
    assert _killed(c2), c2.stderr[-3000:]
    assert [e["from_step"] for e in st["events"] if e["event"] == "resume"] == [2]
    assert [e["step"] for e in st["events"] if e["event"] == "checkpoint"] == [2, 4]
    assert st["latest"] == "step000004\n"
    assert [n for n in st["checkpoints"] if n != "LATEST"] == ["step000002", "step000004"]  # .staging cleared
    assert "model" not in st["top"] and "delta" not in st["top"]


def test_resumed_run_equals_uninterrupted_run(lineages):
    _ok(lineages["C3"])
    a, c = lineages["A_dir"], lineages["C_dir"]
    wa, wc = load_weights(a / "model"), load_weights(c / "model")
    assert sorted(wa) == sorted(wc)
    diff = max(float((wa[k] - wc[k]).abs().max()) for k in wa)
    print(f"\nresume: max |theta_resumed - theta_uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6
    assert all(torch.equal(bits(wa[k]), bits(wc[k])) for k in wa), f"not bitwise (max abs diff {diff:.3g})"
    # the delta shards survive the resume: theta_o was snapshotted from the original model, not the checkpoint
    for r in (0, 1):
        da, dc = (load_file(str(d / "delta" / f"rank{r}.safetensors")) for d in (a, c))
        assert sorted(da) == sorted(dc)
        for k in da:
            same = torch.equal(bits(da[k]), bits(dc[k])) if da[k].is_floating_point() else torch.equal(da[k], dc[k])
            assert same, (r, k)


def test_events_show_resumes_and_restored_gru_ema(lineages):
    _ok(lineages["C3"])
    ev = _events(lineages["C_dir"])
    resumes = [e for e in ev if e["event"] == "resume"]
    assert [e["from_step"] for e in resumes] == [2, 4] and all(e["world"] == 2 for e in resumes)
    assert ev[-1]["event"] == "done"
    ref = {e["step"]: e for e in _events(lineages["A_dir"]) if e["event"] == "unlearn_step"}
    after = [e for e in ev[ev.index(resumes[-1]) :] if e["event"] == "unlearn_step"]
    assert [e["step"] for e in after] == [5, 6]
    for e in after:  # <g_u, EMA> and the projection use the EMA restored from step000004
        assert e["gru_projected"] == ref[e["step"]]["gru_projected"]
        assert e["gru_dot"] == ref[e["step"]]["gru_dot"] and e["gru_coef"] == ref[e["step"]]["gru_coef"]
        assert e["loss_forget"] == ref[e["step"]]["loss_forget"]


def test_resume_with_a_changed_config_is_refused(lineages):
    proc = lineages["refused"]["proc"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "dsunlearn unlearn" in ln]
    assert len(lines) == 1 and lines[0].startswith("dsunlearn unlearn: error: cannot --resume")
    assert "different config" in lines[0] and "Traceback" not in proc.stderr
    assert lineages["refused"]["untouched"]


def test_resume_on_another_world_size_is_refused(lineages):
    proc = lineages["refused_world"]["proc"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "dsunlearn unlearn" in ln]
    assert len(lines) == 1 and lines[0].startswith("dsunlearn unlearn: error: cannot --resume")
    assert "on 1 processes" in lines[0] and "checkpointed on 2" in lines[0] and "Traceback" not in proc.stderr
    assert lineages["refused_world"]["untouched"]
