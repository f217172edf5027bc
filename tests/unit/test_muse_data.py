"""MUSE data (suites/muse/data.py): muse_bench's local layout (JSON arrays of objects or of strings, JSON
Lines, raw .txt), the synthetic source, the training and fine-tuning sets, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import ConfigError, DataError
from dsunlearn.suites import get_suite
from dsunlearn.suites.base import DOCUMENTS
from dsunlearn.suites.muse import data
from dsunlearn.suites.muse.synthetic import write_splits

SMALL = ["data.suite=muse", "data.muse.n_forget=3", "data.muse.n_retain=2", "data.muse.n_holdout=2",
         "data.muse.n_icl=1"]  # fmt: skip


def _local(tmp_path, extra=()):
    return load_config(None, [*SMALL, "data.source=local", f"data.path={tmp_path}", *extra]).data


def test_muse_split_rules_and_hub_name():
    cfg = load_config(None, ["data.suite=muse", "data.muse.corpus=books"]).data
    assert (cfg.forget_split, cfg.retain_split, cfg.hub_name) == ("forget", "retain1", "muse-bench/MUSE-Books")
    assert load_config(None, ["data.suite=muse"]).data.hub_name == "muse-bench/MUSE-News"
    with pytest.raises(ConfigError, match="forget set of data.suite=muse"):
        load_config(None, ["data.suite=muse", "data.forget_split=forget05"])


def test_synthetic_written_to_disk_reads_back_identically(tmp_path):
    syn = load_config(None, SMALL).data
    write_splits(tmp_path, data.synthetic_sets(syn))
    local = _local(tmp_path)
    for name in (*data.EVAL_SETS, "raw/forget", "raw/retain1", "raw/retain2"):
        assert data.load(local, name) == data.load(syn, name), name


def test_muse_bench_layout_strings_jsonl_and_txt(tmp_path):
    (tmp_path / "privleak").mkdir()
    (tmp_path / "privleak" / "forget.json").write_text(json.dumps(["one text", "two text"]))  # load_data.py's
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.txt").write_text("First doc.\n\nSecond doc\nwith two lines.\n\n\n")
    (tmp_path / "knowmem").mkdir()
    rows = [{"question": "Q?", "answer": "A", "extra": 1}, {"question": "R?", "answer": "B"}]
    (tmp_path / "knowmem" / "forget_qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = _local(tmp_path)
    assert data.load(cfg, "privleak/forget") == [{"text": "one text"}, {"text": "two text"}]
    assert data.load(cfg, "raw/forget") == [{"text": "First doc."}, {"text": "Second doc\nwith two lines."}]
    assert data.load(cfg, "knowmem/forget_qa") == [{"question": "Q?", "answer": "A"}, {"question": "R?", "answer": "B"}]
    t = get_suite("muse").training_set(cfg, "forget")
    assert t.kind == DOCUMENTS and t.split == "raw/forget" and len(t.items) == 2


def test_finetune_sets_are_musees_target_and_retrained_data():
    cfg = load_config(None, SMALL).data
    suite = get_suite("muse")
    full, retain = suite.finetune_set(cfg, "full"), suite.finetune_set(cfg, "retain")
    assert len(full.items) == 3 + 2 + 2 and len(retain.items) == 2 + 2
    forget_texts = {it["text"] for it in data.load(cfg, "raw/forget")}
    assert forget_texts <= {it["text"] for it in full.items} and not forget_texts & {it["text"] for it in retain.items}


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("knowmem/forget_qa", [{"question": "Q?"}], ["'answer' must be a string", "no such field"]),
        ("knowmem/forget_qa", [{"question": "Q?", "answer": 3}], ["'answer' must be a string", "a int"]),
        ("verbmem/forget", ["just a string"], ["is a str, not an object"]),
        ("privleak/holdout", [], ["is empty"]),
        ("knowmem/retain_qa", [{"question": "Q\ud800?", "answer": "A"}], ["lone UTF-16 surrogate", "\\ud800"]),
        ("privleak/holdout", 5, ["is a int, not an object"]),  # JSON Lines of one number
    ],
)
def test_bad_sets_are_one_line_data_errors(tmp_path, name, content, words):
    config, split = name.split("/")
    (tmp_path / config).mkdir()
    (tmp_path / config / f"{split}.json").write_text(json.dumps(content))
    with pytest.raises(DataError) as e:
        data.load(_local(tmp_path), name)
    msg = str(e.value)
    assert "\n" not in msg and name in msg and all(w in msg for w in words), msg


def test_missing_set_and_directory_named(tmp_path):
    with pytest.raises(DataError, match=r"verbmem/forget\.json or \.jsonl"):
        data.load(_local(tmp_path), "verbmem/forget")
    with pytest.raises(DataError, match="or .txt"):
        data.load(_local(tmp_path), "raw/retain1")
    with pytest.raises(DataError, match="not a directory"):
        data.load(_local(tmp_path / "nope"), "raw/forget")
    with pytest.raises(DataError, match="not a MUSE set"):
        data.load(_local(tmp_path), "scal/forget_1/x")


def test_scalability_and_sustainability_sets_can_be_the_forget_set(tmp_path):
    (tmp_path / "scal").mkdir()
    (tmp_path / "scal" / "forget_2.json").write_text(json.dumps(["an article", "another article"]))
    cfg = _local(tmp_path, ["data.forget_split=scal/forget_2"])
    t = get_suite("muse").training_set(cfg, "forget")
    assert t.split == "scal/forget_2" and [it["text"] for it in t.items] == ["an article", "another article"]
    with pytest.raises(ConfigError, match="choose one of: forget, scal/forget_1"):
        load_config(None, ["data.suite=muse", "data.forget_split=scal/forget_9"])
    with pytest.raises(DataError, match="synthetic MUSE corpus has no set 'sust/forget_1'"):
        get_suite("muse").training_set(load_config(None, [*SMALL, "data.forget_split=sust/forget_1"]).data, "forget")
