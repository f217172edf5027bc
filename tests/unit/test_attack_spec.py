"""The attack's pure parts: the recovery formula (hand-worked), default names, setting bounds, the table, the
relearning set (seeded, the same items whatever the world size), the run summary reader."""

from __future__ import annotations

import json

import pytest

from dsunlearn.errors import RunError
from dsunlearn.recipes.attack import AttackResult, recovery, run_summary
from dsunlearn.recipes.attack_spec import AttackSpec, check_spec
from dsunlearn.run_layout import RunDir


def test_recovery_hand_worked():
    # forget prob: target 0.9, unlearned 0.1, attacked 0.5 -> (0.5 - 0.1) / (0.9 - 0.1) = 0.5
    assert recovery(0.1, 0.5, 0.9) == pytest.approx(0.5)
    # forget quality: target 1e-8, unlearned 0.4, attacked 0.1 -> (0.1 - 0.4) / (1e-8 - 0.4) ~ 0.75
    assert recovery(0.4, 0.1, 1e-8) == pytest.approx(0.3 / (0.4 - 1e-8))
    assert recovery(0.1, 0.05, 0.9) == pytest.approx(-0.0625)  # further away: negative
    assert recovery(0.2, 0.3, 0.2) is None  # target == unlearned: nothing to recover
    assert recovery(None, 0.3, 0.2) is None and recovery(0.1, float("nan"), 0.9) is None


def test_default_names_and_bounds():
    assert AttackSpec("quantize").default_name() == "int4_g128_sym"
    assert AttackSpec("quantize", bits=8, group_size=64, symmetric=False).default_name() == "int8_g64_asym"
    assert AttackSpec("relearn").default_name() == "relearn_f0.5_e2"
    assert AttackSpec("relearn", split="forget05", steps=10).default_name() == "relearn_forget05_s10"
    check_spec(AttackSpec("quantize", bits=8, group_size=1))
    bad = [dict(bits=3), dict(group_size=0), dict(group_size=1 << 17), dict(fraction=0.0), dict(fraction=1.01),
           dict(steps=0), dict(epochs=0.0), dict(lr=0.0), dict(lr=float("inf")), dict(seed=-1), dict(name="a/b"),
           dict(name=".hidden"), dict(name="x" * 81)]  # fmt: skip
    for kw in bad:
        with pytest.raises(RunError):
            check_spec(AttackSpec("quantize", **kw))


def test_table_rows():
    r = AttackResult(
        out="/r/attacks/int4", spec={}, keys=[("forget_prob", "Forget Prob", ".4f")],
        before={"target": {"forget_prob": 0.9}, "unlearned": {"forget_prob": 0.1}, "retrained": {"forget_prob": 0.2}},
        after={"target": {"forget_prob": 0.85}, "unlearned": {"forget_prob": 0.5}, "retrained": {"forget_prob": 0.2}},
        recovery={"forget_prob": 0.5}, seconds=1.0,
    )  # fmt: skip
    lines = r.table().splitlines()
    assert lines[0].count("|") == lines[1].count("|") == 9
    assert lines[2] == "| Forget Prob | 0.9000 | 0.8500 | 0.1000 | 0.5000 | 0.50 | 0.2000 | 0.2000 |"


def test_run_summary_reads_numbers_only(tmp_path):
    run = RunDir(tmp_path)
    assert run_summary(run) is None
    run.eval.mkdir()
    (run.eval / "summary.json").write_text(json.dumps({"forget_prob": 0.5, "Forget Prob": 0.5, "x": None}))
    assert run_summary(run) == {"forget_prob": 0.5, "x": None}
    for bad in ('{"forget_prob": "0.5"}', "[1]", "{", '{"forget_prob": true}'):
        (run.eval / "summary.json").write_text(bad)
        assert run_summary(run) is None


def test_relearn_set_is_seeded_and_disjoint_from_heldout():
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.relearn import relearn_data

    cfg = load_config("tiny_ga", ["data.synthetic.n_authors=12"])
    a = relearn_data(cfg, AttackSpec("relearn", fraction=0.25, seed=3))
    b = relearn_data(cfg, AttackSpec("relearn", fraction=0.25, seed=3))
    c = relearn_data(cfg, AttackSpec("relearn", fraction=0.25, seed=4))
    n = len(a.relearn.items) + len(a.heldout.items)
    assert a.relearn.items == b.relearn.items and a.relearn.items != c.relearn.items
    assert len(a.relearn.items) == round(0.25 * n)
    questions = {it["question"] for it in a.relearn.items}
    assert not questions & {it["question"] for it in a.heldout.items}
    assert relearn_data(cfg, AttackSpec("relearn", fraction=1.0)).heldout is None
    other = relearn_data(cfg, AttackSpec("relearn", split="forget05"))
    assert other.relearn.split == "forget05" and len(other.heldout.items) == n
    from dsunlearn.errors import DataError

    with pytest.raises(DataError, match="--relearn-split"):
        relearn_data(cfg, AttackSpec("relearn", split="retain90"))


def test_attacks_belong_to_the_unlearn_run(tmp_path):
    """An unlearning run's `attacks/` is dsunlearn's: `--overwrite` of the run may remove it (and the demo's
    attacks.md), anything else stays foreign."""
    from dsunlearn.rundir import foreign_entry

    run = RunDir(tmp_path)
    assert run.attack("int4_g128_sym") == tmp_path / "attacks" / "int4_g128_sym"
    run.attack("int4_g128_sym").mkdir(parents=True)
    assert foreign_entry(tmp_path, "unlearn") is None
    (tmp_path / "attacks.md").write_text("x")
    assert foreign_entry(tmp_path, "unlearn") == str(tmp_path / "attacks.md")
    run.attack("int4_g128_sym").rmdir()
    run.attacks.rmdir()
    assert foreign_entry(tmp_path, "demo") is None


def test_an_adapter_run_without_its_merged_model_is_one_line(tmp_path):
    """A LoRA run saved as the adapter alone has no model/: the refusal says so and how to get the merged model,
    instead of calling the run unfinished."""
    from dsunlearn.config_io import dump_config, load_config
    from dsunlearn.fsutil import atomic_write_json
    from dsunlearn.recipes.attack_spec import check_target
    from dsunlearn.rundir import new_marker

    run = tmp_path / "lora_run"
    cfg = load_config("tiny_npo", [f"run.output_dir={run}", "model.adapter.type=lora"])
    run.mkdir()
    (run / "adapter").mkdir()
    dump_config(cfg, run / "config.yaml")
    atomic_write_json(run / "run.json", new_marker(cfg, "unlearn"))
    with pytest.raises(RunError, match="adapter alone .* model.adapter.save_merged=true"):
        check_target(run, AttackSpec("quantize"), overwrite=False)
