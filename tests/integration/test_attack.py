"""`dsunlearn attack` end to end on a real GA run (tiny Llama, small synthetic TOFU): relearning on 2 ranks
equals 1 rank; int8 moves the metrics less than int4; the run read is never modified; outputs and --overwrite."""

from __future__ import annotations

import json
import math

import pytest
from test_bad_input import snapshot

from helpers.attack_workers import unlearn_then_attack
from helpers.conftest_model import tiny_model  # noqa: F401  (fixture)
from helpers.spawn import run_distributed
from helpers.tiny_model import SMALL_DATA

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

EVAL = ["eval.max_new_tokens=8", "eval.batch_size=16"]
RELEARN = dict(kind="relearn", steps=3, fraction=0.5, seed=1, lr=1e-3)


def _ga(model, out) -> list[str]:
    return [f"model.name_or_path={model}", *SMALL_DATA, "engine.micro_batch_size=2", "engine.global_batch_size=4",
            "engine.max_steps=3", "eval.at_end=false", "eval.retain_log=null", f"run.output_dir={out}"]  # fmt: skip


@pytest.fixture(scope="module")
def attacked(tiny_model, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("attack") / "ga"
    one = run_distributed(unlearn_then_attack, 1, _ga(tiny_model, run), [], [])  # the run alone
    del one
    before = snapshot(run)
    quant = [dict(kind="quantize", bits=b, group_size=16, name=f"int{b}", retain_model=str(tiny_model))
             for b in (4, 8)]  # fmt: skip
    w1 = run_distributed(unlearn_then_attack, 1, _ga(tiny_model, run), [*quant, {**RELEARN, "name": "w1"}], EVAL)
    w2 = run_distributed(unlearn_then_attack, 2, _ga(tiny_model, run), [{**RELEARN, "name": "w2"}], EVAL)
    return run, before, w1[0], w2


def test_run_never_modified(attacked):
    run, before, _, _ = attacked
    after = {k: v for k, v in snapshot(run).items() if not k.startswith("attacks")}
    assert after == before
    for name in ("int4", "int8", "w1", "w2"):
        d = run / "attacks" / name
        assert {"attack.json", "summary.json", "table.md", "plot.png", "events.jsonl", "eval"} <= {
            p.name for p in d.iterdir()
        }
        assert not (d / "model").exists()  # relearned models are not kept without --save-model
    assert not [p for p in (run / "attacks").iterdir() if p.name.startswith(".")]  # no staging left
    assert (run / "attacks" / "int4" / "references" / "target" / "eval" / "summary.json").is_file()


def test_relearn_two_ranks_equal_one(attacked):
    _, _, w1, w2 = attacked
    b1, a1, r1, l1 = w1["w1"]
    assert w2[0]["w2"] == w2[1]["w2"]  # every rank gets the same result
    b2, a2, r2, l2 = w2[0]["w2"]
    assert len(l1) == len(l2) == 3
    for (_, s1, x1), (_, s2, x2) in zip(l1, l2, strict=True):
        assert s1 == s2 and math.isclose(x1, x2, rel_tol=1e-5)
    for key, v in a1["unlearned"].items():
        if isinstance(v, float) and math.isfinite(v):
            assert math.isclose(v, a2["unlearned"][key], rel_tol=1e-4, abs_tol=1e-6), key
    # relearning at lr 1e-3 raises the relearned items' and the held-out items' answer probability
    assert a1["unlearned"]["forget_prob"] > b1["unlearned"]["forget_prob"]
    assert r1["forget_prob"] is not None


def test_int8_moves_less_than_int4(attacked):
    _, _, w1, _ = attacked
    moved = {}
    for name in ("int4", "int8"):
        before, after, _, _ = w1[name]
        keys = ("forget_prob", "model_utility", "forget_rouge")
        moved[name] = sum(abs(after[m][k] - before[m][k]) for m in ("unlearned", "target") for k in keys)
        assert set(after) == {"target", "unlearned", "retrained"}
    assert 0 < moved["int8"] < moved["int4"]


def test_summary_and_table(attacked):
    run = attacked[0]
    s = json.loads((run / "attacks" / "w1" / "summary.json").read_text())
    assert s["suite"] == "tofu" and s["world_size"] == 1 and s["spec"]["kind"] == "relearn"
    table = (run / "attacks" / "w1" / "table.md").read_text()
    assert "| Forget Prob |" in table and "recovery" in table and "Held-out forget prob" in table
