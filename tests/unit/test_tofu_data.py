"""TOFU-format loading: local JSON / JSONL files, synthetic data, schema validation with clear errors."""

import json

import pytest

from dsunlearn.config import DataConfig
from dsunlearn.errors import DataError
from dsunlearn.suites.tofu.data import finetune_items, load_split


def _write(path, rows, jsonl=True):
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))


def test_local_json_and_jsonl(tmp_path):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    _write(tmp_path / "forget10.json", rows)
    _write(tmp_path / "retain90.jsonl", rows, jsonl=False)
    cfg = DataConfig(source="local", path=str(tmp_path))
    assert load_split(cfg, "forget10") == rows
    assert load_split(cfg, "retain90") == rows


@pytest.mark.parametrize(
    "rows, split, match",
    [
        ([], "forget10", "is empty"),
        ([{"question": "q"}], "forget10", "item 0 .* no 'answer' field"),
        ([{"question": "q", "answer": 3}], "forget10", "'answer' must be a string"),
        ([{"question": "q", "answer": "a", "perturbed_answer": "x"}], "forget10_perturbed", "must be a non-empty list"),
        ([{"question": "q", "answer": "a"}], "retain_perturbed", "no 'perturbed_answer'"),
        (["just a string"], "forget10", "item 0 .* is a str"),
    ],
)
def test_schema_errors(tmp_path, rows, split, match):
    _write(tmp_path / f"{split}.json", rows)
    with pytest.raises(DataError, match=match):
        load_split(DataConfig(source="local", path=str(tmp_path)), split)


def test_missing_file_and_dir_and_bad_json(tmp_path):
    with pytest.raises(DataError, match="forget10.json or forget10.jsonl"):
        load_split(DataConfig(source="local", path=str(tmp_path)), "forget10")
    with pytest.raises(DataError, match="not a directory"):
        load_split(DataConfig(source="local", path=str(tmp_path / "nope")), "forget10")
    (tmp_path / "forget10.json").write_text('{"question": "q", "answer": \n')
    with pytest.raises(DataError, match="not valid JSON"):
        load_split(DataConfig(source="local", path=str(tmp_path)), "forget10")


def test_synthetic_source_and_finetune_items():
    cfg = DataConfig(forget_split="forget10", retain_split="retain90")
    forget, retain, full = (load_split(cfg, s) for s in ("forget10", "retain90", "full"))
    assert len(forget) + len(retain) == len(full)
    forget[0]["question"] = "mutated"  # callers get copies: the cached data is untouched
    assert load_split(cfg, "forget10")[0]["question"] != "mutated"
    assert len(finetune_items(cfg, "retain")) == len(retain)
    cfg.train_utility_sets = True
    extra = len(load_split(cfg, "real_authors")) + len(load_split(cfg, "world_facts"))
    assert len(finetune_items(cfg, "full")) == len(full) + extra
    with pytest.raises(DataError, match="no split 'forget42'"):
        load_split(cfg, "forget42")
