"""The reference-model attack (`mia_reference`) from two logs' per-item `mia_loss` scores
(`eval/mia_attacks.py: reference_entry`): a hand-worked example with ties, an independent float64 reference
from token log-probs (math.fsum, pair counting), the mismatch errors and the cases with no entry, then both
suites' paths: TOFU's write_eval / summarize / retain check and MUSE's write_eval / summarize / retain check,
and `dsunlearn eval --from-log --retain-log`."""

from __future__ import annotations

import json
import math
import random

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log, mia
from dsunlearn.eval.mia_attacks import check_reference_items, mia_entries, reference_entry
from dsunlearn.eval.token_stats import TokenStats
from dsunlearn.suites.muse import privleak
from dsunlearn.suites.muse.suite import MuseSuite
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu import mia_log
from dsunlearn.suites.tofu.evaluate import write_eval
from dsunlearn.suites.tofu.suite import TofuSuite


def _pairs_auc(forget, holdout) -> float:
    """open-unlearning's AUC by brute force: P(holdout scores higher) + P(tie) / 2 over all pairs."""
    return sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout) / (len(forget) * len(holdout))


def _loss(forget, holdout) -> dict:
    """A mia_loss entry as our evaluation writes it (per-item scores, AUC)."""
    return metric_log.mia(forget, holdout, mia.auc(forget, holdout))


# Average NLLs, all exact in binary, so every difference is exact too.
# model  forget [2.0, 3.0, 1.5]  holdout [4.0, 2.5]
# retain forget [1.0, 2.0, 1.0]  holdout [2.0, 1.5]
# diff   forget [1.0, 1.0, 0.5]  holdout [2.0, 1.0]
# pairs (holdout vs forget): 2.0 beats all three (3); 1.0 ties 1.0 twice (2 x 1/2) and beats 0.5 (1): 5 of 6.
MODEL_LOSS = _loss([2.0, 3.0, 1.5], [4.0, 2.5])
RETAIN_LOSS = _loss([1.0, 2.0, 1.0], [2.0, 1.5])
WANT_FORGET, WANT_HOLDOUT, WANT_AUC = [1.0, 1.0, 0.5], [2.0, 1.0], 5 / 6


def test_hand_worked_differences_and_auc_with_ties():
    e = reference_entry(MODEL_LOSS, RETAIN_LOSS)
    assert metric_log.item_values(e["forget"]) == WANT_FORGET and metric_log.item_values(e["holdout"]) == WANT_HOLDOUT
    assert e["auc"] == e["agg_value"] == pytest.approx(WANT_AUC, abs=1e-15) == _pairs_auc(WANT_FORGET, WANT_HOLDOUT)
    assert e["forget"]["agg_value"] == pytest.approx(2.5 / 3, abs=1e-15) and e["holdout"]["agg_value"] == 1.5
    # open-unlearning's layout: loads as any other entry of a log
    assert metric_log.check({"mia_reference": e}, "x")["mia_reference"] == e
    # the docstring's example
    ex = reference_entry(_loss([2.0, 3.0], [4.0, 1.0]), _loss([2.5, 2.5], [2.0, 2.0]))
    assert metric_log.item_values(ex["forget"]) == [-0.5, 0.5] and ex["auc"] == 0.5


def _stats(rng: random.Random, lengths: list[int]) -> list[TokenStats]:
    out = []
    for n in lengths:
        lp = [math.log(rng.uniform(1e-4, 1.0)) for _ in range(n)]
        out.append(TokenStats(lp, [-1.0] * n, [1.0] * n, [0] * n, [0] * n))
    return out


def test_equals_a_float64_reference_from_token_log_probs_and_the_two_model_path(tmp_path):
    rng = random.Random(11)
    nf, nh = [rng.randint(1, 30) for _ in range(7)], [rng.randint(1, 30) for _ in range(6)]
    model = {"forget": _stats(rng, nf), "holdout": _stats(rng, nh)}
    ref = {"forget": _stats(rng, nf), "holdout": _stats(rng, nh)}  # the same tokens: the same lengths
    texts = {"forget": ["f"] * len(nf), "holdout": ["h"] * len(nh)}

    def entries(stats, **kw):
        return mia_entries(stats["forget"], stats["holdout"], texts["forget"], texts["holdout"], 0.4, **kw)

    # each model's log written and read back, as the suites have them (JSON keeps every float64 bit)
    for name, stats in (("model", model), ("ref", ref)):
        metric_log.save(tmp_path / f"{name}.json", entries(stats))
    got = reference_entry(*(metric_log.load(tmp_path / f"{n}.json")["mia_loss"] for n in ("model", "ref")))

    def nll(lp):  # mean NLL of the scored tokens, straight from the log-probs
        return math.fsum(-v for v in lp) / len(lp)

    want = {
        p: [nll(a.logp) - nll(b.logp) for a, b in zip(model[p], ref[p], strict=True)] for p in ("forget", "holdout")
    }
    for p in ("forget", "holdout"):
        assert metric_log.item_values(got[p]) == pytest.approx(want[p], rel=1e-14, abs=1e-14)
    assert got["auc"] == pytest.approx(_pairs_auc(want["forget"], want["holdout"]), abs=1e-15)
    assert 0.0 < got["auc"] < 1.0  # the random scores interleave: the comparison is not trivial
    # the same entry as the attack run on both models' token statistics (`attack_scores`' reference path)
    both = entries(model, ref_forget=ref["forget"], ref_holdout=ref["holdout"])["mia_reference"]
    assert got == both


def test_mismatched_items_are_one_line_errors():
    short = _loss([1.0, 2.0], [2.0, 1.5])  # 2 forget items, the model's log 3
    with pytest.raises(DataError, match="has 2 forget items but this model's log has 3") as e:
        reference_entry(MODEL_LOSS, short, "the retain log")
    assert "\n" not in str(e.value) and "the retain log" in str(e.value) and "eval.max_items" in str(e.value)
    holes = json.loads(json.dumps(RETAIN_LOSS))  # same count, other indices (a hand-edited log)
    holes["holdout"]["value_by_index"] = {"0": {"score": 2.0}, "7": {"score": 1.5}}
    with pytest.raises(DataError, match="no holdout item '1' of this model's log"):
        reference_entry(MODEL_LOSS, holes)
    text = json.loads(json.dumps(RETAIN_LOSS))
    text["forget"]["value_by_index"]["1"]["score"] = "low"
    with pytest.raises(DataError, match="forget item '1' has a non-numeric score"):
        reference_entry(MODEL_LOSS, text)
    # before any evaluation: the counts this evaluation will score
    check_reference_items(RETAIN_LOSS, 3, 2, "x")
    with pytest.raises(DataError, match="has 2 holdout items but this evaluation has 4"):
        check_reference_items(RETAIN_LOSS, 3, 4, "x")
    check_reference_items({"agg_value": 0.5}, 3, 4, "x")  # nothing per item: nothing to check


def test_no_entry_without_usable_per_item_scores_or_against_itself():
    with_none = json.loads(json.dumps(RETAIN_LOSS))
    with_none["holdout"]["value_by_index"]["0"]["score"] = None
    with_nan = json.loads(json.dumps(RETAIN_LOSS))
    with_nan["forget"]["value_by_index"]["2"]["score"] = math.nan
    no_holdout = {k: v for k, v in RETAIN_LOSS.items() if k != "holdout"}
    for ref in (None, {"agg_value": 0.6}, with_none, with_nan, no_holdout, {"forget": {}, "holdout": {}}):
        assert reference_entry(MODEL_LOSS, ref) is None
        assert reference_entry(ref, MODEL_LOSS) is None  # the model's own log the same way
    assert reference_entry(MODEL_LOSS, MODEL_LOSS) is None  # a log passed as its own reference
    # a genuinely given copy of the same scores is an attack against the same model: all zero, AUC 1/2
    same = reference_entry(MODEL_LOSS, json.loads(json.dumps(MODEL_LOSS)))
    assert set(metric_log.item_values(same["forget"])) == {0.0} and same["auc"] == 0.5


# --- TOFU -------------------------------------------------------------------------------------------------------

N = 10  # data.synthetic.n_authors=8: forget10 and holdout10 are one author each, 10 items


def _tofu(n: int = N) -> dict:
    recs = [{"avg_gt_loss": 1 + i / 10, "average_perturb_loss": [2.0, 2.5 + i / 7], "avg_paraphrased_loss": 1.2,
             "rougeL_recall": 0.5} for i in range(n)]  # fmt: skip
    return {s: tofu_log.build_split_log(recs, s) for s in tofu_log.SPLITS}


def _tofu_logs(model_loss=MODEL_LOSS, retain_loss=RETAIN_LOSS):
    return {**_tofu(), mia_log.MIA_FILE: {"mia_loss": model_loss}}, {
        **_tofu(),
        mia_log.MIA_FILE: {"mia_loss": retain_loss},
    }


def test_tofu_write_eval_and_summaries(tmp_path):
    log, retain = _tofu_logs()
    summary = write_eval(tmp_path / "a", log, retain)
    written = metric_log.load(tmp_path / "a" / "eval" / "TOFU_EVAL.json")
    assert written["mia_reference"] == reference_entry(MODEL_LOSS, RETAIN_LOSS)
    assert summary["mia_reference_auc"] == pytest.approx(WANT_AUC, abs=1e-15)
    assert json.loads((tmp_path / "a" / "eval" / "summary.json").read_text()) == summary
    keys = [k for k in summary if k.startswith("mia_")]
    assert keys == ["mia_loss_auc", "mia_reference_auc"]  # next to the other attacks' AUCs
    suite = TofuSuite()
    back = suite.load_log(tmp_path / "a" / "eval")
    assert suite.summarize(back, retain) == summary
    assert "mia_reference" in suite.format_summary(summary)
    # the same retain log from disk (not the same object): the same entry
    write_eval(tmp_path / "r", retain)
    retain_disk = suite.load_log(tmp_path / "r" / "eval", forget_only=True)
    assert suite.summarize(log, retain_disk) == summary
    # without a reference, or against one that has no per-item mia_loss: no key, and a stored entry (from
    # the earlier reference) is not written again
    bare_retain = {**_tofu(), mia_log.MIA_FILE: {"mia_loss": {"agg_value": 0.5}}}
    for ref in (None, _tofu(), bare_retain):
        assert "mia_reference_auc" not in suite.summarize(back, ref)
        s = write_eval(tmp_path / "b", back, ref)
        assert "mia_reference" not in metric_log.load(tmp_path / "b" / "eval" / "TOFU_EVAL.json")
        assert "mia_reference_auc" not in s and s["mia_loss_auc"] == summary["mia_loss_auc"]


def test_tofu_model_against_itself_writes_no_attack(tmp_path):
    log, _ = _tofu_logs()
    s = write_eval(tmp_path, log, log)  # the demo's `_eval_saved` convention: forget quality 1
    assert s["forget_quality"] == 1.0 and "mia_reference_auc" not in s
    assert "mia_reference" not in metric_log.load(tmp_path / "eval" / "TOFU_EVAL.json")


def test_tofu_mismatch_fails_before_anything_is_written(tmp_path):
    log, retain = _tofu_logs(retain_loss=_loss([1.0, 2.0, 1.0], [2.0]))
    with pytest.raises(DataError, match="the retain log: its mia_loss has 1 holdout items but this model's log has 2"):
        write_eval(tmp_path, log, retain)
    assert not (tmp_path / "eval" / "TOFU_EVAL.json").exists()
    with pytest.raises(DataError):
        TofuSuite().summarize(log, retain)


def test_tofu_retain_check_compares_the_items_before_any_run(tmp_path):
    from dsunlearn.suites.tofu.retain_check import check_retain_log

    cfg = load_config(None, ["data.synthetic.n_authors=8", "data.synthetic.n_real_authors=2"])
    scores = [float(i) for i in range(N)]
    write_eval(tmp_path / "ok", {**_tofu(), mia_log.MIA_FILE: {"mia_loss": _loss(scores, scores)}})
    check_retain_log(str(tmp_path / "ok" / "eval"), cfg)
    write_eval(tmp_path / "bad", {**_tofu(), mia_log.MIA_FILE: {"mia_loss": _loss(scores, scores[:4])}})
    with pytest.raises(DataError, match="has 4 holdout items but this evaluation has 10") as e:
        check_retain_log(str(tmp_path / "bad" / "eval"), cfg)
    assert "\n" not in str(e.value) and "eval.max_items" in str(e.value)
    cfg.eval.mia = False  # no membership inference: nothing to compare
    check_retain_log(str(tmp_path / "bad" / "eval"), cfg)


# --- MUSE -------------------------------------------------------------------------------------------------------


def _muse_log(loss: dict) -> dict:
    return {"privleak": privleak.privleak([1.0, 3.0], [3.0, 2.0], (0.5, "muse_bench")), "mia_loss": loss}


def test_muse_write_eval_summarize_and_from_log(tmp_path, capsys):
    from dsunlearn import cli

    suite, log, retrained = MuseSuite(), _muse_log(MODEL_LOSS), _muse_log(RETAIN_LOSS)
    summary = suite.write_eval(tmp_path / "a", log, retrained)
    written = suite.load_log(tmp_path / "a" / "eval")
    assert written["mia_reference"] == reference_entry(MODEL_LOSS, RETAIN_LOSS)
    assert summary["mia_reference_auc"] == pytest.approx(WANT_AUC, abs=1e-15)
    assert list(summary).index("mia_reference_auc") == list(summary).index("mia_loss_auc") + 1
    assert suite.summarize(log, retrained) == summary and "mia_reference AUC" in suite.format_summary(summary)
    # the retrained log given as a path: loaded, the same entry
    suite.write_eval(tmp_path / "r", retrained)
    assert suite.write_eval(tmp_path / "c", log, str(tmp_path / "r" / "eval")) == summary
    # without a reference the log is shown as written (as its PrivLeak); a reference without per-item
    # mia_loss removes an entry made against another one
    assert suite.summarize(written) == summary
    assert "mia_reference_auc" not in suite.summarize(log)
    assert "mia_reference" not in privleak.with_reference(written, {"privleak": retrained["privleak"]})
    # against itself (the MUSE demo's retrained row): no attack
    assert "mia_reference_auc" not in suite.summarize(retrained, retrained)
    # `dsunlearn eval --from-log` shows it with --retain-log
    argv = ["eval", "--suite", "muse", "--from-log", str(tmp_path / "c" / "eval"), "--json"]
    assert cli.main([*argv, "--retain-log", str(tmp_path / "r" / "eval")]) == 0
    assert json.loads(capsys.readouterr().out)["mia_reference_auc"] == summary["mia_reference_auc"]
    short = _muse_log(_loss([1.0], [2.0, 1.5]))
    with pytest.raises(DataError, match="the retrained model's log: its mia_loss has 1 forget items"):
        suite.write_eval(tmp_path / "d", log, short)
    assert not (tmp_path / "d" / "eval" / "MUSE_EVAL.json").exists()


def test_tofu_from_log_shows_it_with_a_retain_log(tmp_path, capsys):
    from dsunlearn import cli

    log, retain = _tofu_logs()
    write_eval(tmp_path / "m", log)
    write_eval(tmp_path / "r", retain)
    argv = ["eval", "--from-log", str(tmp_path / "m" / "eval"), "--json"]
    assert cli.main([*argv, "--retain-log", str(tmp_path / "r" / "eval")]) == 0
    assert json.loads(capsys.readouterr().out)["mia_reference_auc"] == pytest.approx(WANT_AUC, abs=1e-15)
    assert cli.main(argv) == 0
    assert "mia_reference_auc" not in json.loads(capsys.readouterr().out)


def test_muse_retain_check_compares_the_items_before_any_run(tmp_path):
    cfg = load_config(None, ["data.suite=muse", "data.muse.n_forget=4", "data.muse.n_retain=4",
                             "data.muse.n_holdout=3", "data.muse.n_icl=2"])  # fmt: skip
    suite = MuseSuite()
    suite.write_eval(tmp_path / "ok", _muse_log(_loss([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0])))
    suite.check_retain_log(str(tmp_path / "ok" / "eval"), cfg)
    suite.write_eval(tmp_path / "bad", _muse_log(_loss([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])))
    with pytest.raises(
        DataError, match="eval.retain_log='.*': its mia_loss has 4 holdout items but this evaluation has 3"
    ):
        suite.check_retain_log(str(tmp_path / "bad" / "eval"), cfg)
