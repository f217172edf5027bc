"""TOFU eval-log format: building from records, atomic save, load (file and directory layouts), validation."""

import json
import math
import os

import numpy as np
import pytest

from dsunlearn.errors import DataError
from dsunlearn.suites.tofu import log as T


def _records(rng: np.random.Generator, n: int, k: int = 3) -> list[dict]:
    recs = []
    for i in range(n):
        ntok, npert = int(rng.integers(3, 12)), rng.integers(3, 12, size=k)
        gt = float(rng.uniform(0.1, 3.0))
        para = float(rng.uniform(0.1, 3.0))
        pert = rng.uniform(0.5, 4.0, size=k)
        recs.append(
            {
                "avg_gt_loss": gt,
                "gt_loss": gt * ntok,
                "num_token_gt": ntok,
                "generated_text": (f"Question {i}?", f"generation {i}", f"answer {i}"),
                "rouge1_recall": float(rng.uniform()),
                "rougeL_recall": float(rng.uniform()),
                "average_perturb_loss": pert,  # numpy array on purpose: must become a JSON list
                "avg_paraphrased_loss": np.float32(para),  # numpy scalar on purpose
                "paraphrased_loss": para * ntok,
                "perturb_loss": pert * npert,
                "num_token_paraphrased": ntok,
                "num_token_perturb": npert,
            }
        )
    return recs


def make_log(seed: int = 0, n: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    return {s: T.build_split_log(_records(rng, n), split=s) for s in T.SPLITS}


def test_build_split_log_keys_order_and_types():
    rng = np.random.default_rng(1)
    recs = _records(rng, 4)
    sl = T.build_split_log(recs, split=T.REAL_AUTHORS)
    # Official key order (evaluate_util.py writes them in this order), normalized_gt_loss last.
    assert list(sl) == list(T.KEY_ORDER)
    assert list(sl["avg_gt_loss"]) == ["0", "1", "2", "3"]
    assert sl["generated_text"]["2"] == ["Question 2?", "generation 2", "answer 2"]  # [prompt, generation, answer]
    assert isinstance(sl["average_perturb_loss"]["0"], list) and len(sl["average_perturb_loss"]["0"]) == 3
    assert isinstance(sl["num_token_perturb"]["0"][0], int) and isinstance(sl["num_token_gt"]["0"], int)
    assert type(sl["avg_paraphrased_loss"]["1"]) is float
    json.dumps(sl)  # everything JSON-native
    # truth_ratio as TOFU logs it: exp(para - mean pert) = 1/r.
    r0 = recs[0]
    want = math.exp(float(r0["avg_paraphrased_loss"]) - sum(r0["average_perturb_loss"]) / 3)
    assert sl["truth_ratio"]["0"] == pytest.approx(want, rel=1e-13)
    # normalized_gt_loss = -log(p / (p + sum q)).
    p = math.exp(-r0["avg_gt_loss"])
    q = [math.exp(-x) for x in r0["average_perturb_loss"]]
    assert sl["normalized_gt_loss"]["0"] == pytest.approx(-math.log(p / (p + sum(q))), rel=1e-13)


def test_build_split_log_retain_has_no_normalized_loss_and_uses_given_index():
    recs = _records(np.random.default_rng(2), 3)
    for r, idx in zip(recs, [10, 4, 7], strict=True):
        r["index"] = idx
    sl = T.build_split_log(recs, split=T.RETAIN)
    assert "normalized_gt_loss" not in sl and "index" not in sl
    assert list(sl["rougeL_recall"]) == ["10", "4", "7"]


def test_build_split_log_errors():
    recs = _records(np.random.default_rng(3), 3)
    del recs[1]["rougeL_recall"]
    with pytest.raises(DataError, match=r"item 1: missing 'rougeL_recall'"):
        T.build_split_log(recs, split=T.FORGET)
    recs = _records(np.random.default_rng(3), 2)
    recs[0]["index"] = 1
    with pytest.raises(DataError, match="item index 1 appears twice"):
        T.build_split_log(recs)
    recs = _records(np.random.default_rng(3), 1)
    recs[0]["generated_text"] = ["only", "two"]
    with pytest.raises(DataError, match="bad 'generated_text'"):
        T.build_split_log(recs)
    with pytest.raises(DataError, match="no items"):
        T.build_split_log([])


def test_save_load_round_trip(tmp_path):
    log = make_log(4)
    path = T.save_log(tmp_path / "eval" / "tofu_eval.json", log)
    assert path.read_text().endswith("}\n")
    assert os.listdir(path.parent) == ["tofu_eval.json"]  # no temp file left behind
    back = T.load_log(path)
    assert back == log
    assert list(back) == list(log) and list(back[T.FORGET]) == list(log[T.FORGET])  # order preserved


def test_save_is_atomic_on_failure(tmp_path):
    path = T.save_log(tmp_path / "log.json", make_log(5))
    before = path.read_bytes()
    bad = make_log(5)
    bad[T.RETAIN]["avg_gt_loss"]["0"] = object()  # not serialisable: the dump fails midway
    with pytest.raises(TypeError):
        T.save_log(path, bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["log.json"]


def test_load_directory_layouts(tmp_path):
    log = make_log(6)
    split_dir = tmp_path / "splits"
    for s in T.SPLITS:  # TOFU's own layout: one file per split, named after the split
        T.save_log(split_dir / s, log[s])
    assert T.load_log(split_dir) == log
    # One split file on its own, e.g. the forget split of a published retain-model log.
    forget_only = T.load_log(split_dir / T.FORGET, splits=(T.FORGET,))
    assert forget_only == {T.FORGET: log[T.FORGET]}
    # Directory with only the merged file that TOFU also writes.
    agg_dir = tmp_path / "agg"
    T.save_log(agg_dir / T.AGGREGATED_FILE, log)
    assert T.load_log(agg_dir) == log
    # Missing split file: named in the error.
    os.remove(split_dir / T.WORLD_FACTS)
    with pytest.raises(DataError, match=r"missing eval_real_world_wo_options\.json"):
        T.load_log(split_dir)
    assert T.WORLD_FACTS not in T.load_log(split_dir, splits=(T.RETAIN, T.FORGET))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no TOFU eval log here"):
        T.load_log(tmp_path / "empty")


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        T.load_log(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"eval_log.json": {"avg_gt_loss": ')
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON .*truncated"):
        T.load_log(bad)
    single = tmp_path / "mine.json"  # one split's content under a name that is not a split name
    T.save_log(single, make_log(7)[T.RETAIN])
    with pytest.raises(DataError, match="looks like a single split file"):
        T.load_log(single)


def test_validate_missing_split_and_metric():
    log = make_log(8)
    del log[T.REAL_AUTHORS]
    with pytest.raises(DataError, match=r"x\.json: missing split 'eval_real_author_wo_options\.json'"):
        T.validate_log(log, "x.json")
    T.validate_log(log, splits=(T.FORGET,))  # only what is asked for is checked
    log = make_log(8)
    del log[T.FORGET]["avg_paraphrased_loss"]
    with pytest.raises(DataError, match=r"split 'eval_log_forget\.json' lacks metric 'avg_paraphrased_loss'"):
        T.validate_log(log)
    with pytest.raises(DataError, match="expected a JSON object keyed by split"):
        T.validate_log([1, 2])


def test_validate_mismatched_items_and_bad_values():
    log = make_log(9)
    del log[T.RETAIN]["rougeL_recall"]["3"]
    with pytest.raises(DataError, match=r"'rougeL_recall' has 5 items, 'avg_gt_loss' has 6 \(e\.g\. index 3"):
        T.validate_log(log)
    log = make_log(9)
    log[T.WORLD_FACTS]["average_perturb_loss"]["2"] = 1.5
    with pytest.raises(DataError, match="item 2 is 1.5, expected a non-empty list of finite numbers"):
        T.validate_log(log)
    log = make_log(9)
    log[T.RETAIN]["avg_gt_loss"]["0"] = "nan?"
    with pytest.raises(DataError, match="expected a finite number"):
        T.validate_log(log)
    log = make_log(9)
    log[T.RETAIN]["avg_gt_loss"] = {}
    with pytest.raises(DataError, match="must be a non-empty object keyed by item index"):
        T.validate_log(log)
    for bad in (float("nan"), float("inf")):  # one NaN would make model utility NaN
        log = make_log(9)
        log[T.FORGET]["avg_paraphrased_loss"]["1"] = bad
        with pytest.raises(DataError, match=r"'avg_paraphrased_loss' of item 1 is (nan|inf), expected a finite"):
            T.validate_log(log)
        log = make_log(9)
        log[T.REAL_AUTHORS]["average_perturb_loss"]["0"] = [1.0, bad]
        with pytest.raises(DataError, match="expected a non-empty list of finite numbers"):
            T.validate_log(log)


def test_check_compatible():
    a, b = make_log(10, n=6), make_log(11, n=4)
    with pytest.raises(DataError, match="unlearned-model log has 6, retain-model log has 4"):
        T.check_compatible(a, b)
    T.check_compatible(a, make_log(12, n=6))
    with pytest.raises(DataError, match=r"retain-model log: missing split 'eval_log_forget\.json'"):
        T.check_compatible(a, {T.RETAIN: a[T.RETAIN]})
