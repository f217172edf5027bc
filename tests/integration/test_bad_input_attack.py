"""`dsunlearn attack` refuses bad input in one line (exit 2, no traceback) before torch is imported, and leaves
the run it reads exactly as it was (every file's hash), with nothing new under it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bad_input import assert_words, cli, error_line, fake_run_dir, snapshot

pytestmark = pytest.mark.slow  # 15 CLI processes: about 30 s of CPU


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attack_bad")
    unlearn = fake_run_dir(root / "unlearn", ["objective.name=ga"])
    (unlearn / "model").mkdir()
    (unlearn / "model" / "config.json").write_text("{}")
    taken = unlearn / "attacks" / "int4_g128_sym"
    taken.mkdir(parents=True)
    (taken / "attack.json").write_text(json.dumps({"kind": "quantize"}))
    foreign = unlearn / "attacks" / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    no_model = fake_run_dir(root / "no_model", ["objective.name=ga"])
    finetune = fake_run_dir(root / "finetune", [], command="finetune")
    plain = root / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text("model: {}\n")
    return {"unlearn": unlearn, "no_model": no_model, "finetune": finetune, "plain": plain, "root": root}


def _cases(r: dict[str, Path]) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    u = str(r["unlearn"])
    return {
        "missing": (["--run", str(r["root"] / "nope"), "--quantize", "int4"], ("does not exist", "unlearn")),
        "not_unlearn": (["--run", str(r["finetune"]), "--quantize", "int4"], ("not an unlearning run", "finetune")),
        "no_marker": (["--run", str(r["plain"]), "--quantize", "int4"], ("not an unlearning run", "marker")),
        "no_model": (["--run", str(r["no_model"]), "--quantize", "int4"], ("no model/", "did not finish")),
        "bad_bits": (["--run", u, "--quantize", "int3"], ("--quantize", "int4 or int8")),
        "group_zero": (["--run", u, "--quantize", "int4", "--group-size", "0"], ("--group-size", "out of bounds")),
        "group_huge": (["--run", u, "--quantize", "int8", "--group-size", "1000000"], ("--group-size", "65536")),
        "fraction": (["--run", u, "--relearn", "--relearn-fraction", "1.5"], ("--relearn-fraction", "(0, 1]")),
        "fraction_nan": (["--run", u, "--relearn", "--relearn-fraction", "nan"], ("--relearn-fraction",)),
        "steps": (["--run", u, "--relearn", "--relearn-steps", "0"], ("--relearn-steps", "out of bounds")),
        "lr": (["--run", u, "--relearn", "--relearn-lr", "-1"], ("--relearn-lr", "out of bounds")),
        "name": (["--run", u, "--quantize", "int4", "--name", "../up"], ("--name", "a-z 0-9")),
        "exists": (["--run", u, "--quantize", "int4"], ("already holds this attack", "--overwrite")),
        "foreign": (["--run", u, "--quantize", "int4", "--name", "mine", "--overwrite"], ("never deletes it",)),
        "retain_model": (
            ["--run", u, "--quantize", "int8", "--retain-model", str(r["root"] / "nope")],
            ("--retain-model", "not a directory"),
        ),  # fmt: skip
    }


def test_refused_in_one_line_and_the_run_unchanged(runs):
    before = {name: snapshot(p) for name, p in runs.items() if name != "root"}
    for name, (args, words) in _cases(runs).items():
        line = error_line(cli("attack", *args), "attack")
        assert_words(line, words)
        assert len(line) < 400, (name, line)
    assert {name: snapshot(p) for name, p in runs.items() if name != "root"} == before
    assert not any(p.name.endswith(".tmp") for p in (runs["unlearn"] / "attacks").iterdir())
