"""MUSE through the CLI on the synthetic corpus: `dsunlearn finetune` trains a target and a retrained model on
text windows, `dsunlearn unlearn` runs NPO + retain NLL with GRU and the G-effect on forget/retain windows
(2 ranks, ZeRO-2) and evaluates against the retrained model's log, `dsunlearn eval --from-log` summarizes,
`dsunlearn extrapolate --sweep` chooses a UIPE alpha by MUSE's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dsunlearn.recipes.uipe_sweep import select_alpha
from dsunlearn.suites import get_suite

pytestmark = pytest.mark.slow

DATA = ["data.suite=muse", "data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4",
        "data.muse.n_icl=2", "data.muse.verbmem_max_new_tokens=8", "data.muse.knowmem_max_new_tokens=6",
        "data.max_length=64", "eval.batch_size=8"]  # fmt: skip
FINETUNE = ["model.tiny.hidden_size=48", "model.tiny.num_layers=2", "model.tiny.intermediate_size=96",
            "model.tiny.vocab_size=400", "model.tiny.max_position_embeddings=256", "engine.epochs=8",
            "engine.lr=3e-3", "engine.micro_batch_size=8", "engine.global_batch_size=8",
            "engine.grad_accum_steps=1"]  # fmt: skip


def _cli(*args, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TQDM_DISABLE": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m"] if nproc > 1 else [
        sys.executable, "-m"]  # fmt: skip
    return subprocess.run([*launcher, "dsunlearn", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=900)  # fmt: skip


def test_finetune_unlearn_evaluate_on_windows(tmp_path):
    ft = tmp_path / "ft"
    r = _cli("finetune", "--config", "tiny_muse_finetune", f"run.output_dir={ft}", *DATA, *FINETUNE)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((ft / "finetune.json").read_text())
    assert summary["models"]["full"]["train_items"] > summary["models"]["retain"]["train_items"]  # windows
    for target in ("full", "retain"):
        assert (ft / target / "eval" / "MUSE_EVAL.json").is_file()
    full = json.loads((ft / "full" / "eval" / "summary.json").read_text())
    # the target's PrivLeak is measured against the retrained model trained alongside it
    log = json.loads((ft / "full" / "eval" / "MUSE_EVAL.json").read_text())
    assert log["privleak"]["reference"] == "retain_log (privleak)" and "verbmem_f" in full

    run = tmp_path / "npo_gru"
    r = _cli("unlearn", "--config", "tiny_npo_gru", f"model.name_or_path={ft / 'full' / 'model'}",
             f"run.output_dir={run}", f"eval.retain_log={ft / 'retain' / 'eval'}", "data.forget_split=forget",
             "data.retain_split=retain1", "engine.max_steps=3", "engine.micro_batch_size=2",
             "engine.global_batch_size=4", "engine.grad_accum_steps=0", "geometry.geffect_every=1", *DATA,
             # MUSE generates under data.muse's caps only: an eval.max_length past the 256 positions is not read
             # and not refused (TOFU's is: test_bad_input_values)
             "eval.max_length=100000", "eval.max_new_tokens=null", nproc=2)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e.get("event") == "unlearn_step"]
    assert len(steps) == 3 and all("geffect_u" in e for e in steps)
    out = json.loads((run / "eval" / "summary.json").read_text())
    assert {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"} <= set(out)
    unlearned = json.loads((run / "eval" / "MUSE_EVAL.json").read_text())
    assert unlearned["privleak"]["reference"] == "retain_log (privleak)"

    r = _cli("eval", "--from-log", run / "eval", "--suite", "muse", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["verbmem_f"] == pytest.approx(out["verbmem_f"])

    # UIPE's sweep of a MUSE run: rows in MUSE's keys, PrivLeak against the run's eval.retain_log
    r = _cli("extrapolate", "--run", run, "--sweep", "0.5")
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = json.loads((run / "uipe" / "sweep.json").read_text())
    assert sweep["suite"] == "muse" and [row["alpha"] for row in sweep["rows"]] == [0.0, 0.5]
    assert sweep["rows"][0]["verbmem_f"] == pytest.approx(out["verbmem_f"])  # alpha 0: the unlearned model
    assert all(row["privleak"] is not None and "knowmem_r" in row for row in sweep["rows"])
    assert sweep["selected_alpha"] == select_alpha(sweep["rows"], 0.9, get_suite("muse").HEADLINE)[0]
    assert "KnowMem retain" in (run / "uipe" / "sweep.md").read_text() and (run / "uipe" / "sweep.png").is_file()
