"""open-unlearning's published retain-model logs as `eval.retain_log` / `--retain-log` (`suites/tofu/ou_log.py`,
MUSE's `privleak.log_reference`): a TOFU_EVAL.json written here in the layout open-unlearning's evaluator
writes (its probability / truth_ratio / rouge / mia_auc / privleak / hm_aggregate entries, keys sorted, indent
4) gives the forget quality dsunlearn's own retain log with the same losses gives, a hand-worked KS p-value
(against an exhaustive permutation count, and scipy), PrivLeak's reference from its mia_min_k; mismatched
item counts and malformed logs are one-line errors naming the file and the entry; MUSE_EVAL.json of a
retrained model gives PrivLeak's reference from its mia_min_k."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log
from dsunlearn.suites.muse import privleak
from dsunlearn.suites.muse.suite import MuseSuite
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu import metrics, mia_log, ou_log
from dsunlearn.suites.tofu.evaluate import write_eval
from dsunlearn.suites.tofu.retain_check import check_retain_log
from dsunlearn.suites.tofu.suite import TofuSuite

N = 10  # forget items of the synthetic config below (n_authors=8: forget10 is one author, 10 items)


def _pairs_auc(forget, holdout) -> float:
    """open-unlearning's MIA AUC (roc_auc_score, forget label 0) by brute force over all pairs."""
    return sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout) / (len(forget) * len(holdout))


def _ou_mia(forget, holdout) -> dict:
    """An mia_* entry as open-unlearning's mia_auc writes it: per-set {agg_value: mean, value_by_index}, AUC twice."""

    def part(scores):
        return {"agg_value": sum(scores) / len(scores), "value_by_index": {str(i): {"score": s} for i, s in
                                                                            enumerate(scores)}}  # fmt: skip

    auc = _pairs_auc(forget, holdout)
    return {"forget": part(forget), "holdout": part(holdout), "auc": auc, "agg_value": auc}


def _ou_score(l_para: float, l_pert: list[float]) -> float:
    """open-unlearning's truth_ratio per item, written here from its formula: wrong / (correct + 1e-10)."""
    return math.exp(-math.fsum(l_pert) / len(l_pert)) / (math.exp(-l_para) + 1e-10)


def _ou_tofu_log(para: list[float], pert: list[list[float]], mia: dict | None = None) -> dict:
    """open-unlearning's TOFU_EVAL.json of a retain model, the entries of its default tofu.yaml (no retain logs:
    forget_quality null, privleak against its ref_value 0.5), with every per-item key its code writes."""
    scores = [_ou_score(p, q) for p, q in zip(para, pert, strict=True)]
    n = len(para)
    log = {
        "forget_Q_A_PARA_Prob": {
            "agg_value": sum(math.exp(-p) for p in para) / n,
            "value_by_index": {str(i): {"prob": math.exp(-p), "avg_loss": p} for i, p in enumerate(para)},
        },
        "forget_Q_A_PERT_Prob": {
            "agg_value": sum(sum(math.exp(-x) for x in q) / len(q) for q in pert) / n,
            "value_by_index": {str(i): {"prob": [math.exp(-x) for x in q], "avg_loss": q} for i, q in enumerate(pert)},
        },
        "forget_truth_ratio": {
            "agg_value": sum(min(s, 1 / (s + 1e-10)) for s in scores) / n,  # closer_to_1_better
            "value_by_index": {str(i): {"score": s} for i, s in enumerate(scores)},
        },
        "forget_quality": {"agg_value": None},
        "forget_Q_A_Prob": {
            "agg_value": 0.9,
            "value_by_index": {str(i): {"prob": 0.9, "avg_loss": 0.105} for i in range(n)},
        },
        "forget_Q_A_ROUGE": {
            "agg_value": 0.5,
            "value_by_index": {
                str(i): {
                    "rouge1_recall": 0.6,
                    "rougeL_f1": 0.5,
                    "rougeL_recall": 0.5,
                    "input": f"Q{i}?",
                    "ground_truth": f"A{i}.",
                    "generation": "B.",
                }
                for i in range(n)
            },
        },  # fmt: skip
        "model_utility": {"agg_value": 0.6},
        "extraction_strength": {"agg_value": 0.25, "value_by_index": {str(i): {"score": 0.25} for i in range(n)}},
        **(mia if mia is not None else {"mia_min_k": _ou_mia([1.0, 3.0], [2.0, 4.0])}),
    }
    if "mia_min_k" in log:
        log["privleak"] = {"agg_value": (1 - log["mia_min_k"]["agg_value"] - 0.5) / (0.5 + 1e-10) * 100}
    return dict(sorted(log.items()))  # open-unlearning's save_logs sorts the metrics


def _write(path, log: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=4))
    return path


def _tofu(para: list[float], pert: list[list[float]]) -> dict:
    """A dsunlearn / TOFU log whose forget split has these losses (the other splits: fixed numbers)."""

    def split(name, p, q):
        recs = [{"avg_gt_loss": 1.0 + i / 10, "average_perturb_loss": qi, "avg_paraphrased_loss": pi,
                 "rougeL_recall": 0.5} for i, (pi, qi) in enumerate(zip(p, q, strict=True))]  # fmt: skip
        return tofu_log.build_split_log(recs, name)

    n = len(para)
    other = ([1.2] * n, [[2.0, 2.5 + i / 7] for i in range(n)])
    return {s: split(s, para, pert) if s == tofu_log.FORGET else split(s, *other) for s in tofu_log.SPLITS}


def _losses(n: int, shift: float = 0.0) -> tuple[list[float], list[list[float]]]:
    para = [0.5 + 0.37 * i + shift for i in range(n)]
    return para, [[1.0 + 0.11 * i, 2.0 - 0.05 * i + shift, 1.5] for i in range(n)]


# --- forget quality ----------------------------------------------------------------------------------------------


def test_forget_quality_is_that_of_dsunlearns_own_retain_log_with_the_same_losses(tmp_path):
    para, pert = _losses(N)
    model = _tofu(*_losses(N, shift=2.0))
    ou = _write(tmp_path / "ou" / "TOFU_EVAL.json", _ou_tofu_log(para, pert))
    converted = ou_log.load_retain_log(ou)
    assert converted[tofu_log.FORGET] == {
        "avg_paraphrased_loss": {str(i): p for i, p in enumerate(para)},
        "average_perturb_loss": {str(i): q for i, q in enumerate(pert)},
    }
    ours = _tofu(para, pert)  # the same retain losses in dsunlearn's / TOFU's format
    want = metrics.aggregate(model, ours)
    assert 0.05 < want["forget_quality"] < 0.95  # a p-value with something to agree on, not a trivial 1
    got = metrics.aggregate(model, converted)
    assert got["forget_quality"] == want["forget_quality"] and got["forget_ks_statistic"] == want["forget_ks_statistic"]
    # the directory holding it, a renamed copy, the suite's loader and write_eval given the path: the same
    for p in (ou.parent, _write(tmp_path / "retain90.json", json.loads(ou.read_text()))):
        assert ou_log.load_retain_log(p) == converted
    assert TofuSuite().load_log(ou, forget_only=True) == converted
    assert write_eval(tmp_path / "m", model, str(ou))["forget_quality"] == want["forget_quality"]
    # open-unlearning's own ks_test: ks_2samp over its scores s = 1/r (+1e-10) of both models, the same p-value
    scipy_stats = pytest.importorskip("scipy.stats")
    s_model = [_ou_score(p, q) for p, q in zip(*_losses(N, shift=2.0), strict=True)]
    s_retain = [v["score"] for v in _ou_tofu_log(para, pert)["forget_truth_ratio"]["value_by_index"].values()]
    assert got["forget_quality"] == scipy_stats.ks_2samp(s_model, s_retain).pvalue


def _exact_ks_pvalue(a: list[float], b: list[float]) -> Fraction:
    """The two-sided two-sample KS p-value by exhaustion: the share of the C(n+m, n) ways to split the pooled
    values into groups of n and m whose statistic max_x |F_a(x) - F_b(x)| is at least the observed one."""

    def stat(x, y):
        return max(abs(Fraction(sum(v <= t for v in x), len(x)) - Fraction(sum(v <= t for v in y), len(y)))
                   for t in x + y)  # fmt: skip

    pooled, d = a + b, stat(a, b)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    hits = sum(stat([pooled[i] for i in c], [pooled[i] for i in range(len(pooled)) if i not in c]) >= d
               for c in splits)  # fmt: skip
    return Fraction(hits, len(splits))


@pytest.mark.parametrize(
    "model_d, want",
    [
        # r_retain = exp(0), exp(1), exp(2). Pooled order m m R R m R: the ECDFs differ by 2/3 at most. Of the
        # C(6, 3) = 20 orders, the 8 that pair up (mR or Rm, three times) stay within 1/3: p = 12/20.
        ([-1.0, -0.5, 1.5], Fraction(12, 20)),
        # every model value below every retain value: D = 1, reached only by mmmRRR and RRRmmm: p = 2/20
        ([-3.0, -2.0, -1.0], Fraction(2, 20)),
        # m R m R R m: D = 1/3, reached by every order: p = 1
        ([-0.5, 0.5, 3.0], Fraction(1)),
    ],
)
def test_hand_worked_ks_p_value_on_three_items(tmp_path, model_d, want):
    # retain: L_para = 1, L_pert = [0.5 + d, 1.5 + d] -> mean - para = d exactly in binary, r = exp(d)
    para, pert = [1.0] * 3, [[0.5 + d, 1.5 + d] for d in (0.0, 1.0, 2.0)]
    retain = ou_log.load_retain_log(_write(tmp_path / "TOFU_EVAL.json", _ou_tofu_log(para, pert)))
    model = _tofu([4.0] * 3, [[3.5 + d, 4.5 + d] for d in model_d])  # r = exp(d) too, every loss positive
    fq = metrics.aggregate(model, retain)["forget_quality"]
    r_model, r_retain = [math.exp(d) for d in model_d], [1.0, math.e, math.e**2]
    assert _exact_ks_pvalue(r_model, r_retain) == want
    assert fq == pytest.approx(float(want), abs=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert fq == scipy_stats.ks_2samp(r_model, r_retain).pvalue


# --- PrivLeak, the retain check, the CLI ----------------------------------------------------------------------


def _model_with_mia() -> dict:
    # model min-k: forget [1, 2, 3], holdout [2, 4, 5]: AUC 7.5/9 = 5/6, MUSE AUC 1/6
    mia = {"mia_min_k": metric_log.mia([1.0, 2.0, 3.0], [2.0, 4.0, 5.0], 5 / 6)}
    return {**_tofu(*_losses(N, shift=2.0)), mia_log.MIA_FILE: mia}


def test_privleak_reference_from_its_mia_min_k_and_the_cli(tmp_path, capsys):
    from dsunlearn import cli

    ou = _write(tmp_path / "ou" / "TOFU_EVAL.json", _ou_tofu_log(*_losses(N)))  # retain min-k AUC 3/4
    retain = ou_log.load_retain_log(ou)
    assert retain[mia_log.MIA_FILE] == {"mia_min_k": _ou_mia([1.0, 3.0], [2.0, 4.0])}  # its privleak: not read
    assert mia_log.reference(retain) == (0.25, "retain_log")
    s = TofuSuite().summarize(_model_with_mia(), retain)
    assert s["privleak"] == pytest.approx((1 / 6 - 1 / 4) / (1 / 4) * 100, abs=1e-12)  # -100/3
    assert s["privleak_reference_auc"] == 0.25 and "mia_reference_auc" not in s  # no per-item mia_loss
    written = write_eval(tmp_path / "m", _model_with_mia(), str(ou))
    assert written == s and metric_log.load(tmp_path / "m" / "eval" / "TOFU_EVAL.json")["privleak"]["reference"] == (
        "retain_log"
    )
    # without mia_* entries: open-unlearning's default reference, as for TOFU's own logs
    bare = ou_log.load_retain_log(_write(tmp_path / "bare.json", _ou_tofu_log(*_losses(N), mia={})))
    assert mia_log.MIA_FILE not in bare and mia_log.reference(bare) == (0.5, "default")
    # `dsunlearn eval --from-log <model's eval dir> --retain-log <open-unlearning's file>`
    argv = ["eval", "--from-log", str(tmp_path / "m" / "eval"), "--retain-log", str(ou), "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["forget_quality"] == s["forget_quality"] and out["privleak"] == s["privleak"]


def _cfg(*extra: str):
    return load_config(None, ["data.synthetic.n_authors=8", "data.synthetic.n_real_authors=2", *extra])


def test_retain_check_accepts_it_and_refuses_other_item_counts_in_one_line(tmp_path):
    ok = _write(tmp_path / "ok" / "TOFU_EVAL.json", _ou_tofu_log(*_losses(N)))
    got = check_retain_log(str(ok.parent), _cfg())
    assert got == ou_log.load_retain_log(ok)
    cases = [
        # another forget split
        (_ou_tofu_log(*_losses(12)), (), "has 12 forget items but this evaluation has 10"),
        # the item cap below the split: open-unlearning evaluates every item
        (_ou_tofu_log(*_losses(N)), ("eval.max_items=4",), r"has 10 forget items but this evaluation has 4 .*"
                                                           r"eval\.max_items=10 \(open-unlearning evaluates"),
        # the reference attack's per-item mia_loss: of this evaluation's forget and holdout items
        (_ou_tofu_log(*_losses(N), mia={"mia_loss": _ou_mia([1.0] * N, [2.0] * 4)}), (),
         "its mia_loss has 4 holdout items but this evaluation has 10"),
    ]  # fmt: skip
    for i, (log, extra, match) in enumerate(cases):
        path = _write(tmp_path / str(i) / "TOFU_EVAL.json", log)
        with pytest.raises(DataError, match=match) as e:
            check_retain_log(str(path), _cfg(*extra))
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(DataError, match="unlearned-model log has 10, retain-model log has 12"):
        metrics.aggregate(_tofu(*_losses(N)), ou_log.load_retain_log(tmp_path / "0"))


# --- malformed logs ----------------------------------------------------------------------------------------------


def _edit(fn):
    log = _ou_tofu_log(*_losses(3))
    fn(log)
    return log


MALFORMED = [
    (_edit(lambda g: g.pop("forget_Q_A_PARA_Prob")), r"no 'forget_Q_A_PARA_Prob' entry.*'forget_truth_ratio' alone"),
    (_edit(lambda g: g.pop("forget_Q_A_PERT_Prob")), "no 'forget_Q_A_PERT_Prob' entry"),
    (
        _edit(lambda g: g["forget_Q_A_PARA_Prob"]["value_by_index"]["1"].update(avg_loss=float("nan"))),
        "'forget_Q_A_PARA_Prob' item 1 has avg_loss nan, expected a finite number",
    ),
    (
        _edit(lambda g: g["forget_Q_A_PARA_Prob"]["value_by_index"]["0"].update(avg_loss="1.0")),
        "'forget_Q_A_PARA_Prob' item 0 has avg_loss '1.0'",
    ),
    (
        _edit(lambda g: g["forget_Q_A_PERT_Prob"]["value_by_index"]["2"].update(avg_loss=1.5)),
        "'forget_Q_A_PERT_Prob' item 2 has avg_loss 1.5, expected a non-empty list",
    ),
    (_edit(lambda g: g["forget_Q_A_PERT_Prob"]["value_by_index"]["2"].update(avg_loss=[])), "item 2 has avg_loss"),
    (_edit(lambda g: g["forget_Q_A_PERT_Prob"].pop("value_by_index")), "'forget_Q_A_PERT_Prob' has no per-item"),
    (
        _edit(lambda g: g["forget_Q_A_PERT_Prob"]["value_by_index"].pop("2")),
        "'forget_Q_A_PARA_Prob' has 3 items but 'forget_Q_A_PERT_Prob' has 2",
    ),
    (
        _edit(lambda g: g["forget_truth_ratio"]["value_by_index"]["1"].update(score=2.0)),
        "'forget_truth_ratio' item 1 has score 2.0 but its losses give .* not of one evaluation",
    ),
    (_edit(lambda g: g["forget_truth_ratio"]["value_by_index"].pop("2")), "'forget_truth_ratio' has 2 items"),
    (
        _edit(lambda g: g["forget_Q_A_PARA_Prob"].update(value_by_index={"1": {}, "2": {}, "3": {}})),
        "'forget_Q_A_PARA_Prob' value_by_index must be keyed",
    ),
    (_edit(lambda g: g["model_utility"].update(agg_value="high")), "'model_utility' has a non-numeric agg_value"),
    (_edit(lambda g: g.update(forget_quality=[1])), "metric 'forget_quality' has no 'agg_value'"),
    ([1, 2], "is not an evaluation log"),
]


@pytest.mark.parametrize("log, match", MALFORMED)
def test_malformed_log_is_one_line_naming_the_file_and_entry(tmp_path, log, match):
    path = _write(tmp_path / "TOFU_EVAL.json", log)
    with pytest.raises(DataError, match=match) as e:
        ou_log.load_retain_log(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(DataError) as e:  # before any run, prefixed by the key it was given as
        check_retain_log(str(path), _cfg(), "--retain-log")
    assert "\n" not in str(e.value) and str(e.value).startswith("--retain-log: ")


def test_not_json_and_dsunlearns_own_mia_file_are_one_line(tmp_path):
    bad = tmp_path / "TOFU_EVAL.json"
    bad.write_text('{"forget_truth_ratio": {"agg_value": 0.5')
    with pytest.raises(DataError, match="not valid JSON") as e:
        ou_log.load_retain_log(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    # dsunlearn's eval dir: its TOFU_EVAL.json is only the MIA part; the directory is the log
    write_eval(tmp_path / "r", _model_with_mia())
    with pytest.raises(DataError, match="membership-inference part of the TOFU log next to it.*pass the directory"):
        ou_log.load_retain_log(tmp_path / "r" / "eval" / "TOFU_EVAL.json")
    whole = ou_log.load_retain_log(tmp_path / "r" / "eval")
    assert whole == mia_log.load_log(tmp_path / "r" / "eval", splits=(tofu_log.FORGET,))


# --- MUSE ------------------------------------------------------------------------------------------------------


def _ou_muse_log(mia_min_k: dict | None) -> dict:
    """open-unlearning's MUSE_EVAL.json of a retrained model (its default muse.yaml: privleak against ref_value)."""
    item = {"rougeL_f1": 0.3, "rougeL_recall": 0.4, "rouge1_recall": 0.4, "input": "p", "ground_truth": "g",
            "generation": "x"}  # fmt: skip
    rouge = {"agg_value": 0.3, "value_by_index": {"0": item}}
    log = {"forget_knowmem_ROUGE": rouge, "retain_knowmem_ROUGE": rouge, "forget_verbmem_ROUGE": rouge,
           "extraction_strength": {"agg_value": 0.1, "value_by_index": {"0": {"score": 0.1}}},
           "privleak": {"agg_value": -12.5}}  # fmt: skip
    if mia_min_k is not None:
        log["mia_min_k"] = mia_min_k
    return dict(sorted(log.items()))


def test_muse_retrained_log_gives_privleaks_reference_from_its_mia_min_k(tmp_path):
    suite, cfg = MuseSuite(), load_config(None, ["data.suite=muse"])
    path = _write(tmp_path / "retrain" / "MUSE_EVAL.json", _ou_muse_log(_ou_mia([1.0, 3.0], [2.0, 4.0])))
    retrained = suite.check_retain_log(str(path.parent), cfg)
    # its privleak is a % against its own run's reference: skipped; mia_min_k's MUSE AUC = 1 - 3/4
    assert privleak.log_reference(retrained) == (0.25, "retain_log (mia_min_k)")
    model = {"privleak": privleak.privleak([1.0, 2.0, 3.0], [2.0, 4.0, 5.0], (0.5, "muse_bench"))}  # MUSE AUC 1/6
    p = suite.summarize(model, retrained)["privleak"]
    assert p == pytest.approx((1 / 6 - 1 / 4) / (1 / 4) * 100, abs=1e-12)
    # only the aggregate of mia_min_k (open-unlearning's summary kept): 1 - agg_value
    agg = _write(tmp_path / "agg" / "MUSE_EVAL.json", _ou_muse_log({"agg_value": 0.75}))
    assert privleak.log_reference(suite.check_retain_log(str(agg), cfg)) == (0.25, "retain_log (mia_min_k)")
    # its privleak without mia_min_k holds no AUC: one line, before any run
    alone = _write(tmp_path / "alone" / "MUSE_EVAL.json", _ou_muse_log(None))
    with pytest.raises(DataError, match="'privleak' holds only a PrivLeak %.*no 'mia_min_k'") as e:
        suite.check_retain_log(str(alone), cfg)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"eval.retain_log='{alone}': ")
