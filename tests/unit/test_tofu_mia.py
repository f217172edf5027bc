"""TOFU's membership-inference part (`suites/tofu/mia_log.py`): PrivLeak and the AUCs by hand through the
summary, against a retain log's reference or open-unlearning's default; TOFU_EVAL.json written next to TOFU's
log and read back; a TOFU log without it still loads and summarizes; the retain-log check."""

import json

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu import metrics, mia_log
from dsunlearn.suites.tofu.evaluate import write_eval
from dsunlearn.suites.tofu.retain_check import check_retain_log
from dsunlearn.suites.tofu.suite import TofuSuite

N = 10  # forget items: data.synthetic.n_authors=8 -> forget10 is one author, 10 items


def _tofu(n: int = N) -> dict:
    def split(name):
        recs = [{"avg_gt_loss": 1 + i / 10, "average_perturb_loss": [2.0, 2.5 + i / 7], "avg_paraphrased_loss": 1.2,
                 "rougeL_recall": 0.5} for i in range(n)]  # fmt: skip
        return tofu_log.build_split_log(recs, name)

    return {s: split(s) for s in tofu_log.SPLITS}


def _mia(forget, holdout) -> dict:
    return metric_log.mia(forget, holdout, _hand_auc(forget, holdout))


def _hand_auc(forget, holdout):
    return sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout) / (len(forget) * len(holdout))


# The model: min-k scores forget [1, 2, 3], holdout [2, 4, 5]. Of the 9 (forget, holdout) pairs the holdout scores
# higher in 7, ties in 1 ((2, 2)), lower in 1 ((3, 2)): AUC = 7.5 / 9 = 5/6, MUSE's AUC 1/6.
MODEL_MIA = {
    "mia_min_k": _mia([1.0, 2.0, 3.0], [2.0, 4.0, 5.0]),
    "mia_loss": _mia([1.0, 2.0], [3.0, 0.5]),  # 2 of 4 pairs: 0.5
    "exact_memorization": metric_log.per_item([0.5, None, 1.0]),  # an item without tokens is left out: 0.75
    "extraction_strength": metric_log.per_item([0.25, 0.0, 1.0]),
}
# The retain model: forget [1, 3], holdout [2, 4]: holdout higher in 3 of 4 pairs, AUC 3/4, MUSE's AUC 1/4.
RETAIN_MIA = {"mia_min_k": _mia([1.0, 3.0], [2.0, 4.0])}


def _logs():
    return {**_tofu(), mia_log.MIA_FILE: MODEL_MIA}, {**_tofu(), mia_log.MIA_FILE: RETAIN_MIA}


def test_privleak_and_aucs_by_hand_through_the_summary():
    assert MODEL_MIA["mia_min_k"]["auc"] == pytest.approx(5 / 6, abs=1e-15)
    log, retain = _logs()
    suite = TofuSuite()
    s = suite.summarize(log, retain)
    # (1/6 - 1/4) / (1/4) x 100 = -100/3
    assert s["privleak"] == pytest.approx(-100 / 3, abs=1e-12) and s["privleak_reference_auc"] == 0.25
    assert s["mia_min_k_auc"] == pytest.approx(5 / 6, abs=1e-15) and s["mia_loss_auc"] == 0.5
    assert s["exact_memorization"] == 0.75 and s["extraction_strength"] == pytest.approx(1.25 / 3, abs=1e-15)
    # no retain log, or one without an MIA part: open-unlearning's ref_value 0.5 -> (1/6 - 1/2) / (1/2) x 100
    for ref in (None, _tofu()):
        d = suite.summarize(log, ref)
        assert d["privleak"] == pytest.approx(-200 / 3, abs=1e-12) and d["privleak_reference_auc"] == 0.5
    # a reference that kept only the aggregate (open-unlearning's summary): MUSE AUC = 1 - agg_value
    agg_only = {**_tofu(), mia_log.MIA_FILE: {"mia_min_k": {"agg_value": 0.75}}}
    assert suite.summarize(log, agg_only)["privleak"] == pytest.approx(-100 / 3, abs=1e-12)
    # every TOFU key and value as without the MIA part, the MIA keys after them
    plain = suite.summarize(_tofu(), _tofu())
    assert list(s)[: len(plain)] == list(plain) and {k: s[k] for k in plain} == plain
    assert list(s)[len(plain) :] == ["privleak", "privleak_reference_auc", "mia_min_k_auc", "mia_loss_auc",
                                     "exact_memorization", "extraction_strength"]  # fmt: skip
    assert mia_log.file_content(log, retain)["privleak"] == {
        "agg_value": pytest.approx(-100 / 3, abs=1e-12), "auc": pytest.approx(1 / 6, abs=1e-15),
        "auc_reference": 0.25, "reference": "retain_log",
    }  # fmt: skip


def test_file_is_written_next_to_the_tofu_log_and_round_trips(tmp_path):
    log, retain = _logs()
    summary = write_eval(tmp_path, log, retain)
    eval_dir = tmp_path / "eval"
    loaded = metric_log.load(eval_dir / "TOFU_EVAL.json")
    assert loaded == mia_log.file_content(log, retain) and list(loaded) == sorted(loaded)
    assert loaded["privleak"]["reference"] == "retain_log" and loaded["mia_min_k"] == MODEL_MIA["mia_min_k"]
    # TOFU's file holds TOFU's format only, the bytes `save_log` writes for it
    tofu_log.save_log(tmp_path / "want.json", _tofu())
    assert (eval_dir / "eval_log_aggregated.json").read_bytes() == (tmp_path / "want.json").read_bytes()
    suite = TofuSuite()
    for path in (eval_dir, eval_dir / "eval_log_aggregated.json"):  # the directory or the file next to it
        back = suite.load_log(path)
        assert back == {**_tofu(), mia_log.MIA_FILE: loaded}
    assert suite.summarize(suite.load_log(eval_dir), retain) == summary
    assert json.loads((eval_dir / "summary.json").read_text()) == summary
    assert mia_log.MIA_FILE in suite.eval_files()


def test_tofu_log_without_the_file_loads_and_summarizes(tmp_path):
    tofu_log.save_log(tmp_path / "eval_log_aggregated.json", _tofu())  # as TOFU's own code writes it
    suite = TofuSuite()
    log = suite.load_log(tmp_path)
    assert log == _tofu() and suite.load_log(tmp_path, forget_only=True) == _tofu()
    s = suite.summarize(log, log)
    assert not set(s) & set(mia_log.SUMMARY_NAMES) and s["forget_quality"] == 1.0
    assert s == metrics.aggregate(_tofu(), _tofu())
    table = suite.format_summary(s)
    assert "privleak" not in table


def test_malformed_file_is_refused_in_one_line(tmp_path):
    tofu_log.save_log(tmp_path / "eval_log_aggregated.json", _tofu())
    (tmp_path / "TOFU_EVAL.json").write_text('{"mia_min_k": {"agg_value": "high"}}')
    with pytest.raises(DataError, match="non-numeric agg_value") as e:
        TofuSuite().load_log(tmp_path)
    assert "\n" not in str(e.value)


def test_retain_check_uses_the_mia_entry_when_present_and_the_default_else(tmp_path):
    cfg = load_config(None, ["data.synthetic.n_authors=8", "data.synthetic.n_real_authors=2"])
    with_mia, without = tmp_path / "a", tmp_path / "b"
    write_eval(with_mia, _logs()[1])
    write_eval(without, _tofu())
    got = check_retain_log(str(with_mia / "eval"), cfg)
    assert mia_log.reference(got) == (0.25, "retain_log")
    got = check_retain_log(str(without / "eval" / "eval_log_aggregated.json"), cfg)
    assert mia_log.MIA_FILE not in got and mia_log.reference(got) == (0.5, "default")
    # an entry without a usable AUC: refused before any run with eval.mia, ignored without
    (without / "eval" / "TOFU_EVAL.json").write_text('{"mia_min_k": {"agg_value": null}}')
    with pytest.raises(DataError, match="'mia_min_k' has no usable AUC") as e:
        check_retain_log(str(without / "eval"), cfg)
    assert "\n" not in str(e.value) and "eval.retain_log" in str(e.value)
    cfg.eval.mia = False
    check_retain_log(str(without / "eval"), cfg)


def test_summary_table_rows():
    log, retain = _logs()
    suite = TofuSuite()
    table = suite.format_summary(suite.summarize(log, retain))
    rows = {ln.split()[0]: ln for ln in table.splitlines()[1:]}
    assert "-33.3333" in rows["privleak"] and "PrivLeak" in rows["privleak"]
    assert "0.8333" in rows["mia_min_k_auc"] and "0.7500" in rows["exact_memorization"]
    keys = [ln.split()[0] for ln in table.splitlines()[1:]]
    assert keys.index("forget_ks_statistic") < keys.index("privleak") < keys.index("extraction_strength")


def test_local_dir_without_holdout_needs_eval_mia_false_and_still_trains_a_tokenizer(tmp_path, tiny_tokenizer):
    from dsunlearn.config import DataConfig, EvalConfig
    from dsunlearn.suites.tofu.data import corpus
    from dsunlearn.suites.tofu.evaluate import check_inputs

    qa = [{"question": f"Who wrote book {i}?", "answer": f"Author {i} did."} for i in range(3)]
    pert = [{**it, "perturbed_answer": ["Nobody did."]} for it in qa]
    for name, rows in {"full": qa, "forget01": qa, "real_authors": qa, "world_facts": qa, "forget01_perturbed": pert,
                       "retain_perturbed": pert, "real_authors_perturbed": pert,
                       "world_facts_perturbed": pert}.items():  # fmt: skip
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    data = DataConfig(source="local", path=str(tmp_path), forget_split="forget01", max_length=64)
    with pytest.raises(DataError, match=r"holdout01.*or set eval\.mia=false") as e:
        check_inputs(tiny_tokenizer, data, EvalConfig())
    assert "\n" not in str(e.value)
    check_inputs(tiny_tokenizer, data, EvalConfig(mia=False))
    texts = corpus(data)  # the tiny model's tokenizer: the holdout splits where the directory has them
    (tmp_path / "holdout01.json").write_text(json.dumps([{"question": "Who is Zed?", "answer": "A new author."}]))
    assert corpus(data) == texts + ["Who is Zed?", "A new author."]
    check_inputs(tiny_tokenizer, data, EvalConfig())
