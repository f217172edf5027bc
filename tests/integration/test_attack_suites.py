"""`dsunlearn attack` on MUSE and WMDP runs: one process builds a tiny unlearning run of the suite offline
(`dsunlearn finetune` of a tiny Llama from config on the synthetic set, a few steps; `dsunlearn unlearn`, a few
steps), then `dsunlearn attack --run RUN --quantize int4 --group-size 16` and `--relearn` on it, all through the
CLI in process (`helpers.attack_workers.cli_run_then_attack`).

Checked per suite: the files under `<run>/attacks/<name>/`; that the numbers in them are the suite's (WMDP's
accuracies recomputed from the per-question log-likelihoods, MUSE's VerbMem / KnowMem from the per-item ROUGE-L
written); recovery = (attacked - unlearned) / (target - unlearned) recomputed from the numbers written; every
file of the run outside attacks/ (and of the target) unchanged, by sha256; and one quantized tensor equal to an
independent float64 RTN of the run's saved weight (`helpers/rtn_reference.py`), the attack's numbers equal to
the suite's evaluation of that quantized model.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_bad_input import snapshot

from helpers.attack_workers import cli_run_then_attack
from helpers.conftest_model import load_weights
from helpers.rtn_reference import ref_weight
from helpers.spawn import run_distributed

BITS, GROUP = 4, 16  # hidden 32, intermediate 64: 2 and 4 groups per row
TENSOR = "model.layers.0.mlp.down_proj.weight"  # [32, 64]
QUANT, RELEARN = f"int{BITS}_g{GROUP}_sym", "relearn_f0.5_s2"
ATTACKS = [["--quantize", f"int{BITS}", "--group-size", str(GROUP)],
           ["--relearn", "--relearn-steps", "2", "--relearn-lr", "3e-3"]]  # fmt: skip
TINY = ["model.tiny.hidden_size=32", "model.tiny.num_layers=2", "model.tiny.num_heads=4",
        "model.tiny.intermediate_size=64", "model.tiny.vocab_size=400", "run.finetune_targets=[full]",
        "eval.at_end=false"]  # fmt: skip

# suite -> (finetune config and its steps, unlearn config, data overrides of both, unlearn overrides, the suite's
# log file). WMDP: 150 steps take the target's hazardous accuracy above chance (0.375 on the 16 questions), which
# 3 NPO steps take back to 0.25, so the accuracies' recovery is defined; fewer leave every model at chance.
SUITES = {
    "wmdp": (["tiny_wmdp_finetune", "engine.max_steps=150", "engine.lr=1e-2"], "tiny_wmdp_unlearn",
             ["data.wmdp.n_hazard=8", "data.wmdp.n_general=4", "data.max_length=96", "eval.batch_size=32"],
             ["engine.max_steps=3", "engine.lr=1e-2"], "WMDP_EVAL.json"),
    # auc_retrain: PrivLeak's reference without a retrained model's log, so PrivLeak (a sweep detail) is a number
    "muse": (["tiny_muse_finetune", "engine.max_steps=60", "engine.lr=2e-2"], "tiny_muse_unlearn",
             ["data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4", "data.muse.n_icl=2",
              "data.muse.verbmem_max_new_tokens=8", "data.muse.knowmem_max_new_tokens=6", "data.max_length=64",
              "eval.batch_size=16"],
             ["engine.max_steps=3", "engine.lr=3e-3", "eval.retain_log=null", "data.muse.auc_retrain=0.5"],
             "MUSE_EVAL.json"),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(SUITES))
def attacked(request, tmp_path_factory) -> dict:
    name = request.param
    ft_config, config, data, unlearn, log_file = SUITES[name]
    base = tmp_path_factory.mktemp(f"attack_{name}")
    ft, run = base / "ft", base / "run"
    finetune = ["--config", *ft_config, f"run.output_dir={ft}", *data, *TINY]
    args = ["--config", config, f"model.name_or_path={ft / 'full' / 'model'}", f"run.output_dir={run}", *data,
            *unlearn]  # fmt: skip
    probe = {"bits": BITS, "group_size": GROUP, "tensor": TENSOR}
    (res,) = run_distributed(cli_run_then_attack, 1, finetune, args, str(run), ATTACKS, probe, [str(run), str(ft)])
    return {"suite": name, "run": run, "ft": ft, "log_file": log_file, **res}


def _summary(attacked, name: str) -> dict:
    return json.loads((attacked["run"] / "attacks" / name / "summary.json").read_text())


def test_every_command_succeeds_and_the_run_is_never_modified(attacked):
    assert attacked["rc"] == [0, 0, 0, 0]
    run, (run_before, ft_before) = attacked["run"], attacked["before"]
    after = {k: v for k, v in snapshot(run).items() if not k.startswith("attacks")}
    assert after == run_before
    assert snapshot(attacked["ft"]) == ft_before  # the target (the references' source) is only read
    assert {"model", "delta", "eval", "events.jsonl", "config.yaml"} <= {k.split("/")[0] for k in after}
    assert sorted(p.name for p in (run / "attacks").iterdir()) == [QUANT, RELEARN]  # no staging left


def test_attack_outputs(attacked):
    run, log_file = attacked["run"], attacked["log_file"]
    for name in (QUANT, RELEARN):
        d = run / "attacks" / name
        assert {"attack.json", "summary.json", "table.md", "plot.png", "events.jsonl", "eval"} <= {
            p.name for p in d.iterdir()
        }
        assert {p.name for p in (d / "eval").iterdir()} == {log_file, "summary.json"}
        assert (d / "plot.png").stat().st_size > 5_000
        assert not (d / "model").exists()  # the relearned model is not kept without --save-model
        s = _summary(attacked, name)
        assert s["suite"] == attacked["suite"] and s["world_size"] == 1 and s["run"] == str(run)
        assert json.loads((d / "attack.json").read_text()) == s["spec"]
    # the target is quantized alike and evaluated with the suite; it is not relearned (it already knows)
    assert {p.name for p in (run / "attacks" / QUANT / "references" / "target" / "eval").iterdir()} == {
        log_file, "summary.json"}  # fmt: skip
    assert not (run / "attacks" / RELEARN / "references").exists()
    events = [json.loads(x) for x in (run / "attacks" / RELEARN / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "finetune_step"]
    assert [(e["model"], e["step"]) for e in steps] == [("relearn_unlearned", 1), ("relearn_unlearned", 2)]
    assert all(math.isfinite(e["loss"]) for e in steps)


def _independent_numbers(suite: str, log: dict) -> dict:
    """The suite's headline numbers from the per-item values of its log: WMDP's accuracies as the share of
    questions whose highest log-likelihood is the answer, per set and over each group's questions (lm-eval's
    weight_by_size); MUSE's VerbMem / KnowMem as 100 x the mean per-item ROUGE-L F1."""
    items = {k: list(v["value_by_index"].values()) for k, v in log.items() if "value_by_index" in v}
    if suite == "wmdp":
        out, groups = {}, {"wmdp": [], "mmlu": []}
        for k, rows in items.items():
            if not k.endswith("_acc"):
                continue
            hits = []
            for r in rows:
                ll = r["loglikelihoods"]
                best = max(range(len(ll)), key=lambda i: ll[i])
                assert r["pred"] == best and r["acc"] == float(best == r["answer"]), (k, r)
                hits.append(float(best == r["answer"]))
            out[k] = sum(hits) / len(hits)
            groups[k.split("_")[0]] += hits
        out.update({f"{g}_acc": sum(h) / len(h) for g, h in groups.items()})
        return out
    names = {"verbmem_f": "forget_verbmem_ROUGE", "knowmem_f": "forget_knowmem_ROUGE",
             "knowmem_r": "retain_knowmem_ROUGE"}  # fmt: skip
    return {key: 100.0 * sum(r["rougeL_f1"] for r in items[n]) / len(items[n]) for key, n in names.items()}


HEADLINE = {"wmdp": ("wmdp_acc", "mmlu_acc"), "muse": ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")}
NUMBERS = {"wmdp": {"wmdp_acc", "wmdp_bio_acc", "wmdp_cyber_acc", "mmlu_acc"},
           "muse": {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"}}  # fmt: skip


def test_the_numbers_are_the_suites(attacked):
    suite, run = attacked["suite"], attacked["run"]
    for name in (QUANT, RELEARN):
        s = _summary(attacked, name)
        extra = ["heldout_forget_prob"] if name == RELEARN else []
        assert [k for k, _, _ in s["keys"]] == [*HEADLINE[suite], *extra]
        d = run / "attacks" / name
        written = json.loads((d / "eval" / "summary.json").read_text())
        log = json.loads((d / "eval" / attacked["log_file"]).read_text())
        after = s["after"]["unlearned"]
        assert NUMBERS[suite] <= set(after)
        assert {k: v for k, v in after.items() if k != "heldout_forget_prob"} == {
            k: v for k, v in written.items() if k.islower()}  # fmt: skip
        for key, value in _independent_numbers(suite, log).items():
            assert after[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (name, key)
        # the unlearned model's "before" is the run's own final evaluation (no key=value overrides given)
        own = json.loads((run / "eval" / "summary.json").read_text())
        assert {k: s["before"]["unlearned"][k] for k in own if k.islower()} == {
            k: v for k, v in own.items() if k.islower()}  # fmt: skip
    if suite == "wmdp":  # 8 questions per hazardous subset, 4 per general subject
        log = json.loads((run / "attacks" / QUANT / "eval" / "WMDP_EVAL.json").read_text())
        assert len(log["wmdp_bio_acc"]["value_by_index"]) == len(log["wmdp_cyber_acc"]["value_by_index"]) == 8
    else:  # PrivLeak against data.muse.auc_retrain = 0.5: (AUC - 0.5) / 0.5 x 100
        after = _summary(attacked, QUANT)["after"]["unlearned"]
        assert after["privleak"] == pytest.approx((after["privleak_auc"] - 0.5) / 0.5 * 100, abs=1e-9)


def _recovery(before, after, target):
    if None in (before, after, target) or target == before:
        return None
    return (after - before) / (target - before)


def test_recovery_recomputed_from_the_written_numbers(attacked):
    moved = 0
    for name in (QUANT, RELEARN):
        s = _summary(attacked, name)
        b, a, t = s["before"]["unlearned"], s["after"]["unlearned"], s["before"]["target"]
        assert set(s["recovery"]) == {k for k, _, _ in s["keys"]}
        table = (attacked["run"] / "attacks" / name / "table.md").read_text()
        for key, label, _ in s["keys"]:
            want = _recovery(b.get(key), a.get(key), t.get(key))
            got = s["recovery"][key]
            if want is None:
                assert got is None, (name, key)
                continue
            moved += 1
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (name, key)
            row = next(x for x in table.splitlines() if x.startswith(f"| {label} |"))
            assert f"| {want:.2f} |" in row, (name, key, row)
    assert moved > 0  # unlearning moved at least one number, so some recovery is defined and checked
    r = _summary(attacked, RELEARN)
    assert set(r["after"]) == {"unlearned"} and r["before"]["target"]["heldout_forget_prob"] is not None
    assert 0.0 < r["before"]["unlearned"]["heldout_forget_prob"] <= 1.0
    assert set(_summary(attacked, QUANT)["after"]) == {"target", "unlearned"}


def test_the_quantized_weights_are_rtn_of_the_saved_ones(attacked):
    saved = load_weights(attacked["run"] / "model")
    w = saved[TENSOR]
    _, _, ref = ref_weight(w, BITS, GROUP, symmetric=True)
    assert torch.equal(attacked["tensor"], ref.to(w.dtype))
    assert not torch.equal(attacked["tensor"], w)
    # every decoder linear is quantized; the embeddings (and the tied head) are not
    assert TENSOR in attacked["quantized"] and not any("embed" in n or "lm_head" in n for n in attacked["quantized"])
    # the attack evaluated exactly this quantized model: its numbers are the suite's summary of it
    after = _summary(attacked, QUANT)["after"]["unlearned"]
    assert after == pytest.approx(attacked["summary"], rel=1e-12, abs=1e-12)
