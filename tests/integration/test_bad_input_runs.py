"""Faults that need a real run: NaN loss mid-run, resume, extrapolate on a diverged run, W&B secrets, the
original model never written, the batch check on 2 ranks, truncation. Same contract as test_bad_input.py:
one `dsunlearn <cmd>: error:` line, exit 2, no traceback, nothing lost or overwritten.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_bad_input import (
    SMALL,
    assert_words,
    cli,
    cli_env,
    error_line,
    local_data,
    long_question_lengths,
    qa,
    snapshot,
    tiny_model,  # noqa: F401  (fixture)
    unlearn_args,
    write_tofu_dir,
)

pytestmark = pytest.mark.slow

# SGD at lr 1e20 on the untrained tiny model: step 1 is finite, its update sends the weights to ~1e18 and the
# forward of step 2 overflows (inf - inf = nan). save_every=1 leaves checkpoint step000001 before that.
NAN_RUN = ["engine.optimizer=sgd", "engine.lr=1e20", "engine.scheduler=constant", "engine.max_steps=3",
           "run.save_every=1"]  # fmt: skip
LOSS_RE = re.compile(r"(loss_forget|loss_retain) is (nan|-?inf) at step (\d+)")


def _finite_weights(model_dir: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for f in model_dir.glob("*.safetensors") for t in load_file(f).values())


@pytest.fixture(scope="module")
def nan_run(tiny_model, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("nan")
    args = unlearn_args(tiny_model, root / "run", *NAN_RUN)
    return args, cli(*args, cwd=root), root / "run"


def test_nan_loss_stops_names_step_and_loss_keeps_last_checkpoint(nan_run):
    args, r, out = nan_run
    line = error_line(r, "unlearn")
    m = LOSS_RE.search(line)
    assert m, line
    step = int(m.group(3))
    assert step >= 2, f"diverged at step {step}: no checkpoint can exist before it ({line})"
    assert_words(line, ("lower engine.lr", "checkpoint"))
    ckpt = out / "checkpoints"
    assert (ckpt / "LATEST").read_text().strip() == f"step{step - 1:06d}"
    tag = ckpt / f"step{step - 1:06d}"
    assert (tag / "extra_rank0.safetensors").is_file() and (tag / "delta" / "rank0.safetensors").is_file()
    assert not (ckpt / ".staging").exists()
    # No final outputs from a diverged run: no model/, no delta/, no eval/.
    assert not any((out / d).exists() for d in ("model", "delta", "eval"))
    steps = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    logged = [e["step"] for e in steps if e["event"] == "unlearn_step"]
    assert logged == list(range(1, step)), logged


def test_nan_run_last_checkpoint_loads_and_resume_continues_same_run_only(nan_run, tmp_path):
    """--resume with the same config loads checkpoints/LATEST and diverges again at the same step (the run is
    deterministic); with another config it is refused before anything is loaded."""
    args, r, out = nan_run
    step = int(LOSS_RE.search(error_line(r, "unlearn")).group(3))
    ckpts = snapshot(out / "checkpoints")
    other = cli(*args, "engine.lr=1e19", "--resume", cwd=tmp_path)
    assert_words(error_line(other, "unlearn"), ("cannot --resume", "different config", "engine.lr: 1e+20 -> 1e+19"))
    again = cli(*args, "--resume", cwd=tmp_path)
    line = error_line(again, "unlearn")
    assert LOSS_RE.search(line).group(3) == str(step), line
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["from_step"] == step - 1  # LATEST loaded
    assert snapshot(out / "checkpoints") == ckpts  # the good checkpoint is kept as it was


def test_extrapolate_a_run_without_deltas(nan_run, tmp_path):
    _, _, out = nan_run
    before = snapshot(out)
    r = cli("extrapolate", "--run", out, "--alpha", "1", cwd=tmp_path)
    assert_words(error_line(r, "extrapolate"), (str(out), "no delta shards", "not a finished"))
    assert snapshot(out) == before


def test_extrapolate_with_an_original_whose_hash_differs(nan_run, tiny_model, tmp_path):  # noqa: F811
    _, r, out = nan_run
    tag = f"step{int(LOSS_RE.search(error_line(r, 'unlearn')).group(3)) - 1:06d}"
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["rms_norm_eps"] = cfg.get("rms_norm_eps", 1e-6) * 10
    (other / "config.json").write_text(json.dumps(cfg))
    before = snapshot(out)
    dest = tmp_path / "uipe"
    bad = cli("extrapolate", "--run", out, "--checkpoint", tag, "--alpha", "1", "--original", other,
              "--output-dir", dest, cwd=tmp_path)  # fmt: skip
    assert_words(error_line(bad, "extrapolate"), (str(other), "not the one the run started from", "hash",
                                                  "the model the run unlearned from"))  # fmt: skip
    assert not dest.exists() and not list(tmp_path.glob(".uipe*")) and snapshot(out) == before
    # The right original (from the run's config.yaml): the kept checkpoint's deltas load and give finite weights.
    ok = cli("extrapolate", "--run", out, "--checkpoint", tag, "--alpha", "0", "--output-dir", dest, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert _finite_weights(dest)


SECRET_KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key (40 hex)
SECRET_TOKEN = "hf_bAdInPuTtEsTtOkEnNeVeRwRiTtEn0123456"


@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory):  # noqa: F811
    """An NPO run from the tiny model with checkpoints, final eval and W&B offline, secrets in the env."""
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("finished")
    out = root / "run"
    args = unlearn_args(tiny_model, out, "objective.name=npo", "engine.max_steps=2", "run.save_every=1",
                        "eval.at_end=true", "tracking.wandb=true", "tracking.mode=offline")  # fmt: skip
    r = cli(*args, cwd=root, env=cli_env(WANDB_API_KEY=SECRET_KEY, HF_TOKEN=SECRET_TOKEN))
    assert r.returncode == 0, r.stderr[-3000:]
    return r, out


def test_wandb_key_and_tokens_never_written(finished_run):
    r, out = finished_run
    assert list((out / "wandb").glob("offline-run-*")), "no W&B run was written: the test would prove nothing"
    needles = [s.encode() for s in (SECRET_KEY, SECRET_KEY[8:32], SECRET_TOKEN, SECRET_TOKEN[6:30])]
    files = [f for f in out.rglob("*") if f.is_file()]
    assert any(f.name == "config.yaml" for f in files) and any(f.suffix == ".wandb" for f in files)
    for f in files:
        data = f.read_bytes()
        leaked = [n.decode() for n in needles if n in data]
        assert not leaked, f"{leaked} written to {f}"
    assert not any(n.decode() in r.stdout + r.stderr for n in needles)


def test_original_model_never_written(tiny_model, finished_run, tmp_path):  # noqa: F811
    """finetune from it, unlearn from it (finished_run), extrapolate against it, evaluate it: byte for byte
    the same files as when it was built, and no file added."""
    _, run = finished_run
    ft = cli("finetune", f"model.name_or_path={tiny_model}", "run.finetune_targets=[full]", "engine.max_steps=1",
             "engine.micro_batch_size=2", "engine.global_batch_size=2", *SMALL, f"run.output_dir={tmp_path / 'ft'}",
             cwd=tmp_path)  # fmt: skip
    assert ft.returncode == 0, ft.stderr[-3000:]
    ex = cli("extrapolate", "--run", run, "--alpha", "0.5", "--original", tiny_model, cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr[-3000:]
    ev = cli("eval", "--model", tiny_model, *SMALL, "--output-dir", tmp_path / "ev", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert (tmp_path / "ft" / "full" / "model").is_dir() and (tmp_path / "ev" / "eval" / "summary.json").is_file()
    built = json.loads((tiny_model.parent / "snapshot.json").read_text())
    assert snapshot(tiny_model) == built


def test_batch_mismatch_on_two_ranks(tiny_model, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = cli(*unlearn_args(tiny_model, out, "engine.micro_batch_size=2", "engine.global_batch_size=2",
                          "engine.grad_accum_steps=1"), nproc=2, cwd=tmp_path)  # fmt: skip
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if "dsunlearn unlearn: error:" in ln]
    rank0 = [ln for ln in lines if ln.startswith("dsunlearn unlearn: error:")]
    assert len(rank0) == 1 and 1 <= len(lines) <= 2, r.stderr[-3000:]  # once per rank at most
    assert all(ln == "[rank 1] " + rank0[0] for ln in lines if ln != rank0[0])
    assert_words(rank0[0], ("engine.global_batch_size=2", "world size 2", "= 4", "set engine.micro_batch_size=1"))
    # torchrun prints its own ChildFailedError traceback; none comes from dsunlearn.
    assert not re.search(r'File ".*dsunlearn/', r.stderr), r.stderr[-3000:]
    assert not out.exists()


def test_truncate_warns_and_proceeds(tiny_model, tmp_path):  # noqa: F811
    item, n_prompt = long_question_lengths(tiny_model)
    data = write_tofu_dir(tmp_path / "data", forget01=[item, qa(1)])
    out = tmp_path / "out"
    r = cli(*unlearn_args(tiny_model, out, *local_data(data), f"data.max_length={n_prompt + 4}",
                          "data.truncation=truncate"), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "split 'forget01' item 0: answer truncated" in r.stderr and "data.truncation=truncate" in r.stderr
    assert (out / "model" / "model.safetensors").is_file()


def test_finetune_too_long_item_leaves_nothing(tiny_model, tmp_path):  # noqa: F811
    item, n_prompt = long_question_lengths(tiny_model)
    data = write_tofu_dir(tmp_path / "data", forget01=[item, qa(1)], retain99=[item, qa(2)])
    out = tmp_path / "out"
    r = cli("finetune", f"model.name_or_path={tiny_model}", *local_data(data), f"data.max_length={n_prompt + 4}",
            "run.finetune_targets=[retain]", "engine.max_steps=1", "engine.micro_batch_size=2",
            "engine.global_batch_size=2", f"run.output_dir={out}", cwd=tmp_path)  # fmt: skip
    assert_words(error_line(r, "finetune"), ("longer than data.max_length", "data.truncation=truncate"))
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_unlearn_missing_eval_split_fails_before_training(tiny_model, tmp_path):  # noqa: F811
    data = write_tofu_dir(tmp_path / "data", retain_perturbed=None)
    out = tmp_path / "out"
    r = cli(*unlearn_args(tiny_model, out, *local_data(data), "eval.at_end=true"), cwd=tmp_path)
    assert_words(error_line(r, "unlearn"), ("retain_perturbed", "not found"))
    assert not out.exists(), sorted(p.name for p in out.iterdir())
