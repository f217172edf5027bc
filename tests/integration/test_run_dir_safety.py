"""Run and model directories are untrusted input: nothing in them runs code, nothing outside a run is written or
deleted, damaged files are named in one line. Typed at the CLI (`python -m dsunlearn ...`), each case checks
exit 2, one `dsunlearn <cmd>: error:` line (the last line of stderr) with the case's key words, no traceback,
no planted payload executed (its marker file never appears) and every pre-existing file byte for byte unchanged.

One real run is made once (1 process, ZeRO-2, GRU, 3 steps, killed after its step-2 checkpoint so that it can be
resumed, then a finished copy): every case works on its own copy. Cases run two at a time (2 cores).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from test_bad_input import SMALL, assert_words, cli, cli_env, error_line, snapshot, tiny_model  # noqa: F401

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling this runs `exec`: it writes the file MARKER names (the test's proof that code ran)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def plant(path: Path, marker: Path, zip_format: bool = True) -> None:
    """Replace `path` by a pickle that runs code when loaded (torch's zip format, or a raw pickle)."""
    if zip_format:
        torch.save({"module": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def rewrite_manifest(tag_dir: Path) -> None:
    """What an attacker would do: make the checksums match the planted files (safety must not rest on them)."""
    from dsunlearn.manifest import write_manifest

    write_manifest(tag_dir)


def base_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", f"model.name_or_path={model}", "objective.name=ga", "geometry.gru=true", "eval.at_end=false",
            "engine.max_steps=3", "engine.micro_batch_size=2", "engine.global_batch_size=2", "run.save_every=1",
            *SMALL, *extra, f"run.output_dir={out}"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):  # noqa: F811
    """{'resumable': run killed after its step-2 checkpoint, 'finished': a run that reached its end}."""
    root = tmp_path_factory.mktemp("safety_runs")
    resumable, finished = root / "resumable", root / "finished"
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cli, *base_args(tiny_model, resumable), env=cli_env(DSUNLEARN_TEST_KILL="step:0:2"))
        b = pool.submit(cli, *base_args(tiny_model, finished))
        ra, rb = a.result(), b.result()
    assert ra.returncode != 0 and (resumable / "checkpoints" / "LATEST").read_text().strip() == "step000002", ra.stderr
    assert rb.returncode == 0, rb.stderr[-3000:]
    return {"resumable": resumable, "finished": finished, "model": tiny_model}


def copy_run(runs, kind: str, dst: Path) -> Path:
    shutil.copytree(runs[kind], dst, symlinks=True)
    return dst


def resume(runs, out: Path, *extra: str, cwd: Path | None = None):
    return cli(*base_args(runs["model"], out, *extra), "--resume", cwd=cwd)


def refused(r, cmd: str, words, before: dict | None = None, after: dict | None = None, marker: Path | None = None):
    line = error_line(r, cmd)
    assert_words(line, words)
    if marker is not None:
        assert not marker.exists(), "the planted payload ran"
    if before is not None:
        assert after == before, "a pre-existing file changed"
    return line


# ------------------------------------------------------------------------------------ 1. pickle never runs


def test_resume_never_unpickles_code(runs, tmp_path):
    cases = [("mp_rank_00_model_states.pt", True), ("zero_pp_rank_0_mp_rank_00_optim_states.pt", True),
             ("mp_rank_00_model_states.pt", False)]  # fmt: skip
    prepared = []
    for k, (victim, zip_format) in enumerate(cases):
        out = copy_run(runs, "resumable", tmp_path / f"run{k}")
        tag = out / "checkpoints" / "step000002"
        plant(tag / victim, tmp_path / "PWNED", zip_format)
        rewrite_manifest(tag)  # checksums consistent: only the loader's restriction stands in the way
        prepared.append((out, victim, zip_format, snapshot(out)))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: resume(runs, c[0]), prepared))
    for (out, victim, zip_format, before), r in zip(prepared, results, strict=True):
        words = [victim, "refusing" if zip_format else "cannot read"]
        refused(r, "unlearn", words, before, snapshot(out), tmp_path / "PWNED")


def test_payload_in_every_file_never_runs(runs, tmp_path):
    """Every file of a finished run that a loader could open as pickle is a payload (plus pickle weights planted
    beside the safetensors): --resume, geffect, extrapolate and eval refuse or ignore them; none executes."""
    out = copy_run(runs, "finished", tmp_path / "run")
    (out / "checkpoints" / "LATEST").write_text("step000002\n")
    marker = tmp_path / "PWNED"
    for f in [p for p in out.rglob("*") if p.is_file() and p.suffix in (".pt", ".bin", ".safetensors")]:
        plant(f, marker)
    for extra in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        plant(out / "model" / extra, marker)
    for tag in (out / "checkpoints").glob("step*"):
        rewrite_manifest(tag)
    before = snapshot(out)
    model = runs["model"]
    with ThreadPoolExecutor(2) as pool:
        jobs = {
            "unlearn": pool.submit(resume, runs, out),
            "geffect": pool.submit(cli, "geffect", "--run", out, "--original", model),
            "extrapolate": pool.submit(
                cli, "extrapolate", "--run", out, "--alpha", "0.5", "--original", model, "--output-dir", tmp_path / "x"
            ),  # fmt: skip
            "eval": pool.submit(cli, "eval", "--model", out / "model", *SMALL, "--output-dir", tmp_path / "e"),
        }
        results = {k: v.result() for k, v in jobs.items()}
    for cmd, r in results.items():
        error_line(r, cmd)
    assert not marker.exists(), "a planted payload ran"
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------ 2. LATEST is not a path


def test_latest_must_name_a_checkpoint_of_this_run(runs, tmp_path):
    (tmp_path / "outside").mkdir()
    prepared = []
    for k, latest in enumerate(["/etc", "../../outside", "step000001/../../..", "\x00\xff garbage", "step1"]):
        out = copy_run(runs, "resumable", tmp_path / f"run{k}")
        (out / "checkpoints" / "LATEST").write_bytes(latest.encode("utf-8", "surrogateescape") + b"\n")
        prepared.append((out, snapshot(out)))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: resume(runs, c[0]), prepared))
    for (out, before), r in zip(prepared, results, strict=True):
        refused(r, "unlearn", ["LATEST", "checkpoint"], before, snapshot(out))


def test_latest_symlinked_checkpoint_out_of_the_run_is_refused(runs, tmp_path):
    out = copy_run(runs, "resumable", tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "checkpoints" / "step000002", elsewhere)
    (out / "checkpoints" / "step000002").symlink_to(elsewhere)
    before = snapshot(out)
    refused(resume(runs, out), "unlearn", ["LATEST", "not a directory inside"], before, snapshot(out))


def test_deleted_latest_names_the_checkpoints_that_exist(runs, tmp_path):
    out = copy_run(runs, "resumable", tmp_path / "run")
    (out / "checkpoints" / "LATEST").unlink()
    before = snapshot(out)
    refused(resume(runs, out), "unlearn", ["LATEST", "step000002", "echo step000002"], before, snapshot(out))


# ------------------------------------------------------------------------- 3. --overwrite removes only runs


def test_overwrite_refuses_a_directory_whose_run_json_is_not_a_marker(runs, tmp_path):
    victim = tmp_path / "mine"
    victim.mkdir()
    (victim / "run.json").write_text('{"command": "unlearn"}')
    (victim / "thesis.tex").write_text("years of work")
    before = snapshot(victim)
    r = cli(*base_args(runs["model"], victim), "--overwrite")
    refused(r, "unlearn", ["not", "never deletes"], before, snapshot(victim))


def test_overwrite_refuses_a_run_holding_a_file_dsunlearn_did_not_write(runs, tmp_path):
    out = copy_run(runs, "finished", tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    r = cli(*base_args(runs["model"], out), "--overwrite")
    refused(r, "unlearn", ["notes.txt", "did not write"], before, snapshot(out))


def test_demo_overwrite_never_replaces_a_users_report(tmp_path):
    from dsunlearn.rundir import claim, record_files, release_output_dir

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "report.md").write_text("my own report")
    demo = tmp_path / "demo"  # a demo dir (marker + recorded report) whose report the user edited afterwards
    claim(demo, "demo", None, overwrite=False, resume=False)
    (demo / "report.md").write_text("generated")
    record_files(demo, ["report.md"])
    release_output_dir(demo)
    (demo / "report.md").write_text("generated, then annotated by hand")
    snaps = {p: snapshot(p) for p in (plain, demo)}
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cli, "demo", "--output-dir", plain, "--overwrite", "--quick")
        b = pool.submit(cli, "demo", "--output-dir", demo, "--overwrite", "--quick")
        ra, rb = a.result(), b.result()
    refused(ra, "demo", ["not a dsunlearn demo", "never deletes"], snaps[plain], snapshot(plain))
    refused(rb, "demo", ["report.md", "changed since dsunlearn wrote it"], snaps[demo], snapshot(demo))


# ------------------------------------------------------------------------------ 4. one run per directory


HOLD = """
import sys, time
from pathlib import Path
from dsunlearn.runlock import RunLock
RunLock(Path(sys.argv[1]), "unlearn").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_directory_in_use_is_never_overwritten_or_resumed(runs, tmp_path):
    out = copy_run(runs, "resumable", tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=cli_env())  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(cli, *base_args(runs["model"], out), "--overwrite")
            b = pool.submit(resume, runs, out)
            ra, rb = a.result(), b.result()
        for r in (ra, rb):
            refused(r, "unlearn", ["in use by", f"pid {holder.pid}"], before, snapshot(out))
    finally:
        holder.kill()
        holder.wait()


def test_stale_pidfile_lock_is_reported_with_how_to_clear_it(runs, tmp_path):
    out = copy_run(runs, "resumable", tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    info = {"pid": dead.pid, "host": socket.gethostname(), "command": "unlearn", "since": time.time()}
    (out / ".dsunlearn.lock").write_text(json.dumps(info))
    before = snapshot(out)
    r = cli(*base_args(runs["model"], out), "--resume", env=cli_env(DSUNLEARN_LOCK="pidfile"))
    refused(r, "unlearn", ["stale lock", "no longer running", f"rm {out / '.dsunlearn.lock'}"], before, snapshot(out))


# --------------------------------------------------------------------------- 5. inputs are never written


def test_eval_output_inside_the_model_is_refused(runs, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(runs["finished"] / "model", model)
    link = tmp_path / "link"
    link.symlink_to(model)
    before = snapshot(model)
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cli, "eval", "--model", model, *SMALL, "--output-dir", model)
        b = pool.submit(cli, "eval", "--model", model, *SMALL, "--output-dir", link / "sub")
        results = [a.result(), b.result()]
    for r in results:
        refused(
            r, "eval", ["inside the input model directory", "(--model)", "never writes into"], before, snapshot(model)
        )


def test_extrapolate_output_inside_the_original_is_refused(runs, tmp_path):
    out = copy_run(runs, "finished", tmp_path / "run")
    original = tmp_path / "orig"
    shutil.copytree(runs["model"], original)
    before = snapshot(original), snapshot(out)
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cli, "extrapolate", "--run", out, "--alpha", "1", "--original", original,
                        "--output-dir", original / "sub")  # fmt: skip
        b = pool.submit(cli, "extrapolate", "--run", out, "--alpha", "1", "--original", original,
                        "--output-dir", out / "delta" / "x")  # fmt: skip
        ra, rb = a.result(), b.result()
    refused(ra, "extrapolate", ["inside the input model directory", "(--original)"])
    refused(rb, "extrapolate", ["inside the input directory", "(the run's delta shards)"])
    assert (snapshot(original), snapshot(out)) == before


# ----------------------------------------------------------------- 7. damaged files: named, never silent


def test_damaged_files_are_named(runs, tmp_path):
    trunc = copy_run(runs, "resumable", tmp_path / "trunc")
    f = trunc / "checkpoints" / "step000002" / "mp_rank_00_model_states.pt"
    f.write_bytes(f.read_bytes()[:100])
    flipped = copy_run(runs, "finished", tmp_path / "flip")
    d = flipped / "delta" / "rank0.safetensors"
    data = bytearray(d.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight's delta: would silently change the extrapolated model
    d.write_bytes(bytes(data))
    extra = copy_run(runs, "resumable", tmp_path / "extra")
    (extra / "checkpoints" / "step000002" / "extra_rank0.safetensors").write_bytes(b"garbage")
    garbage = copy_run(runs, "resumable", tmp_path / "garbage")
    (garbage / "run.json").write_text("{not json")
    snaps = {p: snapshot(p) for p in (trunc, flipped, extra, garbage)}
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            (trunc, ["mp_rank_00_model_states.pt", "damaged", "truncated"], "unlearn",
             pool.submit(resume, runs, trunc)),
            (flipped, ["delta/rank0.safetensors", "sha256"], "extrapolate",
             pool.submit(cli, "extrapolate", "--run", flipped, "--alpha", "1", "--output-dir", tmp_path / "x")),
            (extra, ["extra_rank0.safetensors", "damaged"], "unlearn", pool.submit(resume, runs, extra)),
            (garbage, ["run.json", "not a marker dsunlearn wrote"], "unlearn", pool.submit(resume, runs, garbage)),
        ]  # fmt: skip
        for path, words, cmd, job in jobs:
            refused(job.result(), cmd, words, snaps[path], snapshot(path))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------- 9/10. where outputs go, messages


def test_output_dir_that_cannot_be_created(runs, tmp_path):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cli, *base_args(runs["model"], dangling))
        b = pool.submit(cli, *base_args(runs["model"], blocker / "sub"))
        ra, rb = a.result(), b.result()
    refused(ra, "unlearn", ["symlink", "does not exist"])
    refused(rb, "unlearn", ["is a file, not a directory"])
    assert not (tmp_path / "gone").exists() and blocker.read_text() == "x"


def test_rho_must_be_a_share(runs, tmp_path):
    out = copy_run(runs, "finished", tmp_path / "run")
    before = snapshot(out)
    r = cli("extrapolate", "--run", out, "--sweep", "0.5", "--rho", "nan", "--retain-log", "x")
    refused(r, "extrapolate", ["--rho nan", "[0, 1]"], before, snapshot(out))


def test_resume_from_another_directory_after_moving_the_run(runs, tmp_path):
    """The run is the same wherever it lies and from wherever it is resumed (relative run.output_dir)."""
    moved = tmp_path / "a" / "b" / "run"
    moved.parent.mkdir(parents=True)
    copy_run(runs, "resumable", moved)
    r = cli(*base_args(runs["model"], Path("b") / "run"), "--resume", cwd=tmp_path / "a")
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(x) for x in (moved / "events.jsonl").read_text().splitlines()]
    assert [e["from_step"] for e in events if e["event"] == "resume"] == [2]
    assert (moved / "model").is_dir() and (moved / "delta" / "MANIFEST.json").is_file()
    assert not (moved / ".dsunlearn.lock").read_text(), "the lock names no holder once the run ended"


def test_marker_and_lock_of_a_fresh_run(runs):
    from dsunlearn.rundir import read_marker

    m = read_marker(runs["finished"])
    assert m is not None and m["kind"] == "unlearn" and len(m["id"]) == 32
    assert os.path.getsize(runs["finished"] / ".dsunlearn.lock") == 0


def test_disk_full_during_the_final_save_is_one_line_and_publishes_nothing_half(runs, tmp_path):
    """A full disk (here: a file-size limit, which the kernel reports as EFBIG) while the model is written."""
    import resource

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dsunlearn", *base_args(runs["model"], out, "run.save_every=0", "engine.max_steps=1")]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))  # the tiny model's weights are ~136 kB

    r = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, preexec_fn=limit, timeout=600)
    line = error_line(r, "unlearn")
    assert_words(line, ["file size limit exceeded", "intact", "free space"])
    assert not (out / "model").exists() and not (out / "delta").exists()


def test_hostile_inputs_found_by_red_teaming(runs, tmp_path):
    """Outputs never replace a user's file or follow a link planted in a run; deleting the checksums is no way
    around them; hostile model configs, event logs and eval logs are one line each."""
    fin = copy_run(runs, "finished", tmp_path / "run")
    model = runs["model"]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.json").write_text("{}")
    (victim / "thesis.png").write_bytes(b"mine")
    linked = copy_run(runs, "finished", tmp_path / "linked")
    (linked / "uipe").symlink_to(victim)
    (linked / "geffect").symlink_to(victim)
    nomanifest = copy_run(runs, "finished", tmp_path / "nomanifest")
    (nomanifest / "delta" / "MANIFEST.json").unlink()
    events = copy_run(runs, "finished", tmp_path / "events")
    (events / "events.jsonl").write_text('{"event": "done", "steps": 1}\n')  # before its own checkpoints
    hostile_models = {}
    for name, text in {"garbage": b"\xff\xfe{", "list": b"[1, 2, 3]", "deep": b"[" * 100000 + b"]" * 100000,
                       "layers": None}.items():  # fmt: skip
        d = tmp_path / f"model_{name}"
        shutil.copytree(model, d)
        if text is None:
            cfg = json.loads((d / "config.json").read_text())
            cfg["num_hidden_layers"] = 10**6
            text = json.dumps(cfg).encode()
        (d / "config.json").write_bytes(text)
        hostile_models[name] = d
    from test_bad_input import tofu_logs

    (tmp_path / "logs").mkdir()
    log, _, _ = tofu_logs(tmp_path / "logs")
    nan_log = tmp_path / "nan_log.json"
    data = json.loads(Path(log).read_text())
    first = next(iter(data["eval_log_forget.json"]["avg_gt_loss"]))
    data["eval_log_forget.json"]["avg_gt_loss"][first] = float("nan")
    nan_log.write_text(json.dumps(data))
    watched = [fin, victim, linked, nomanifest, events, *hostile_models.values()]
    before = {p: snapshot(p) for p in watched}
    g = ["geffect", "--probe-size", "2", "--original", model]
    cases = [
        ("geffect", [*g, "--run", fin, "--output", victim / "thesis.json"], ["already exists", "never replaces"]),
        ("geffect", [*g, "--run", fin, "--output", fin / "run.json"], ["already exists", "never replaces"]),
        ("geffect", [*g, "--run", linked], ["symlink inside the run directory"]),
        ("geffect", [*g, "--run", events], ["events.jsonl", "cannot be"]),
        ("extrapolate", ["extrapolate", "--run", linked, "--alpha", "0.5"], ["symlink inside the run directory"]),
        ("extrapolate", ["extrapolate", "--run", nomanifest, "--alpha", "0", "--output-dir", tmp_path / "x"],
         ["no MANIFEST.json", "cannot be verified"]),
        ("extrapolate", ["extrapolate", "--run", fin, "--sweep", "1", "--output-dir", tmp_path / "y"],
         ["--output-dir applies to --alpha"]),
        ("eval", ["eval", "--from-log", nan_log], ["avg_gt_loss", "finite"]),
        *[("eval", ["eval", "--model", d, *SMALL, "--output-dir", tmp_path / f"e_{n}"], ["config.json"])
          for n, d in hostile_models.items()],
    ]  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: cli(*c[1]), cases))
    for (cmd, _, words), r in zip(cases, results, strict=True):
        refused(r, cmd, words)
    assert {p: snapshot(p) for p in watched} == before
    assert not any((tmp_path / n).exists() for n in ("x", "y", *(f"e_{n}" for n in hostile_models)))
