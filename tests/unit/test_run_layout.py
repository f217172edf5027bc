"""run_layout.RunDir names a run directory's files; the refusals that read one run before torch is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsunlearn.errors import RunError
from dsunlearn.run_layout import OWNED, RunDir, tag_of
from helpers.conftest_model import cli_env


def test_paths_are_the_files_runs_write(tmp_path):
    run = RunDir(tmp_path)
    assert run.config == tmp_path / "config.yaml" and run.marker == tmp_path / "run.json"
    assert run.events == tmp_path / "events.jsonl" and run.model == tmp_path / "model"
    assert run.delta == tmp_path / "delta" and run.eval == tmp_path / "eval"
    assert run.latest_file == tmp_path / "checkpoints" / "LATEST"
    assert run.checkpoint_delta(tag_of(12)) == tmp_path / "checkpoints" / "step000012" / "delta"
    assert run.uipe_alpha(0.5) == tmp_path / "uipe" / "alpha_0.5"
    assert run.uipe_alpha(2.0, "step000004") == tmp_path / "uipe" / "step000004" / "alpha_2"
    assert run.demo_run("npo_gru").events == tmp_path / "runs" / "npo_gru" / "events.jsonl"
    assert run.demo_finetune.finetuned_model("full") == tmp_path / "finetune" / "full" / "model"
    for kind in ("unlearn", "finetune", "demo"):
        assert {"run.json", "config.yaml", "events.jsonl", ".dsunlearn.lock"} <= OWNED[kind]


def test_checkpoint_tags_are_validated(tmp_path):
    run = RunDir(tmp_path)
    assert run.latest_tag() is None and run.saved_tags() == []
    (tmp_path / "checkpoints" / "step000002").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step2").mkdir()  # not tag_of's form
    assert run.saved_tags() == ["step000002"]
    run.latest_file.write_text("../../etc\n")
    with pytest.raises(RunError, match="not a dsunlearn checkpoint tag"):
        run.latest_tag()
    run.latest_file.write_text("step000002\n")
    assert run.latest_tag() == "step000002"


def test_not_a_run_is_one_message(tmp_path):
    with pytest.raises(RunError, match=r"is not a dsunlearn run directory \(no config.yaml\); pass a run directory"):
        RunDir(tmp_path).require_config()


@pytest.mark.parametrize(
    "argv",
    [
        ["unlearn", "--config", "tiny_npo", "run.output_dir=/etc"],
        ["unlearn", "--config", "tiny_npo", "objective.bta=1"],
        ["finetune", "--config", "tiny_finetune", "engine.micro_batch_size=3", "engine.global_batch_size=8"],
        ["demo", "--output-dir", "{user_dir}"],
        ["extrapolate", "--run", "{user_dir}", "--alpha", "1"],
    ],
)
def test_refusals_import_neither_torch_nor_deepspeed(tmp_path: Path, argv):
    """The cheap checks come before the heavy imports (about 5 s of torch + DeepSpeed per refused command)."""
    user_dir = tmp_path / "user_dir"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("mine")
    argv = [a.format(user_dir=user_dir) for a in argv]
    code = (
        "import sys\nfrom dsunlearn.cli import main\nrc = main(sys.argv[1:])\n"
        "heavy = [m for m in ('torch', 'deepspeed', 'transformers') if m in sys.modules]\n"
        "print('heavy:', heavy, 'rc:', rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *argv], env=cli_env(), cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert "heavy: [] rc: 2" in r.stdout, r.stdout + r.stderr[-2000:]
    assert r.stderr.count("error:") == 1, r.stderr[-2000:]


def test_a_refusal_without_ds_accelerator_set_imports_no_torch(tmp_path: Path):
    """Without DS_ACCELERATOR the engine package picks DeepSpeed's accelerator with torch: a refusal never
    imports the engine package (the batch arithmetic it needs is `batch_size.py`)."""
    env = {k: v for k, v in cli_env().items() if k != "DS_ACCELERATOR"}
    code = (
        "import sys\nfrom dsunlearn.cli import main\n"
        "rc = main(['finetune', '--config', 'tiny_finetune', 'engine.micro_batch_size=3', "
        "'engine.global_batch_size=8'])\n"
        "print('heavy:', [m for m in ('torch', 'dsunlearn.engine') if m in sys.modules], 'rc:', rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert "heavy: [] rc: 2" in r.stdout, r.stdout + r.stderr[-2000:]
