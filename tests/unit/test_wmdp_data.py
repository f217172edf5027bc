"""WMDP data: the synthetic set (deterministic, balanced answers, documents that state their facts), local files
and the hub loaders offline (local dataset repositories in the hub's layout stand in for cais/wmdp, cais/mmlu,
the forget corpora and WikiText), the gated-corpus message, and the group accuracies weighted by size."""

from __future__ import annotations

import json

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import DataError
from dsunlearn.eval import metric_log
from dsunlearn.suites import get_suite
from dsunlearn.suites.wmdp import data, synthetic
from dsunlearn.suites.wmdp.metrics import group_entries
from dsunlearn.suites.wmdp.summary import summarize

Q = {"question": "Which agent?", "choices": ["w", "x", "y", "z"], "answer": 2}


def _cfg(*overrides):
    return load_config(None, ["data.suite=wmdp", *overrides]).data


def test_synthetic_is_deterministic_balanced_and_states_each_answer():
    a, b = synthetic.generate(seed=3, n_hazard=8, n_general=4), synthetic.generate(seed=3, n_hazard=8, n_general=4)
    assert a == b and a != synthetic.generate(seed=4, n_hazard=8, n_general=4)
    assert sorted(a) == ["bio-forget", "cyber-forget", "mmlu/astronomy", "mmlu/geography", "wikitext", "wmdp/bio",
                         "wmdp/cyber"]  # fmt: skip
    for kind in synthetic.HAZARD:
        qs, docs = a[f"wmdp/{kind}"], a[f"{kind}-forget"]
        assert [q["answer"] for q in qs] == [0, 1, 2, 3] * 2  # always answering A scores exactly 25%
        for q, d in zip(qs, docs, strict=True):
            assert len(set(q["choices"])) == 4
            assert q["choices"][q["answer"]] in d["text"].split("\n\n")[0]  # the fact sentence states the answer
            assert d["text"].endswith("Answer: " + "ABCD"[q["answer"]])
    assert len(a["wikitext"]) == 8 and all(q["subject"] == "geography" for q in a["mmlu/geography"])


def test_training_sets_are_documents_and_splits_join_with_plus():
    cfg = _cfg("data.wmdp.n_hazard=8", "data.wmdp.n_general=4")
    suite = get_suite("wmdp")
    forget = suite.training_set(cfg, "forget")
    assert forget.kind == "documents" and len(forget.items) == 16  # bio-forget + cyber-forget
    assert suite.training_set(cfg, "retain").items == data.load(cfg, "wikitext")
    assert len(suite.finetune_set(cfg, "full").items) == 24
    with pytest.raises(DataError, match="'wmdp/bio' is not a text set"):
        data.training_texts(cfg, "bio-forget+wmdp/bio")
    with pytest.raises(DataError, match="no text longer than data.wmdp.min_chars=100000"):
        data.training_texts(_cfg("data.wmdp.min_chars=100000"), "wikitext")


def test_subsets_and_subjects():
    assert data.subsets(_cfg()) == ["bio", "cyber"]
    assert data.subsets(_cfg("data.source=hub")) == ["bio", "cyber", "chem"]
    assert data.subsets(_cfg("data.wmdp.subsets=cyber")) == ["cyber"]
    with pytest.raises(DataError, match="data.wmdp.subsets='bio,physics'"):
        data.subsets(_cfg("data.wmdp.subsets=bio,physics"))
    assert len(data.MMLU_SUBJECTS) == 57
    assert data.mmlu_subjects(_cfg()) == ["geography", "astronomy"]
    sets = data.question_sets(_cfg("data.source=synthetic"))
    assert sets["wmdp/cyber"][0] == "cybersecurity" and sets["mmlu/geography"][0] == "geography"


def _write(root, name, rows):
    f = root / f"{name}.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_local_files_in_the_set_layout(tmp_path):
    _write(tmp_path, "wmdp/chem", [Q])
    _write(tmp_path, "mmlu/high_school_biology", [dict(Q, subject="high_school_biology")])
    _write(tmp_path, "corpora/cyber-retain", ["a bare string is a text " * 4])
    cfg = _cfg("data.source=local", f"data.path={tmp_path}", "data.wmdp.subsets=chem",
               "data.wmdp.mmlu_subjects=high_school_biology")  # fmt: skip
    sets = data.question_sets(cfg)
    assert sets["mmlu/high_school_biology"][0] == "high school biology"  # lm_eval's description of the subject
    assert sets["wmdp/chem"] == ("chemistry", [Q])
    assert data.training_texts(cfg, "corpora/cyber-retain") == [{"text": "a bare string is a text " * 4}]
    with pytest.raises(DataError, match=r"WMDP set 'wmdp/bio' not found .*wmdp/bio.json or wmdp/bio.jsonl"):
        data.load(cfg, "wmdp/bio")


@pytest.mark.parametrize(("item", "match"), [
    ({"question": "q", "choices": ["a", "b", "c"], "answer": 0}, "list of 4 strings"),
    ({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 4}, "integer 0-3"),
    ({"question": "q", "choices": ["a", "b", "c", "d"], "answer": True}, "integer 0-3"),
    ({"choices": ["a", "b", "c", "d"], "answer": 1}, "'question' must be a string"),
])  # fmt: skip
def test_bad_questions_are_one_line_errors(tmp_path, item, match):
    _write(tmp_path, "wmdp/bio", [Q, item])
    cfg = _cfg("data.source=local", f"data.path={tmp_path}")
    with pytest.raises(DataError, match=match) as e:
        data.load(cfg, "wmdp/bio")
    assert "item 1" in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def _repo(root, configs: dict[str | None, dict[str, list]]):
    """A dataset repository in the hub's layout: data files and the README header mapping configs to them
    (config None: the repository's default config)."""
    header = ["---", "configs:"]
    for config, splits in configs.items():
        header += [f"- config_name: {config or 'default'}", "  data_files:"]
        for split, rows in splits.items():
            rel = f"{config or 'data'}/{split}.jsonl"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            header += [f"  - split: {split}", f"    path: {rel}"]
    (root / "README.md").write_text("\n".join(header + ["---", ""]), encoding="utf-8")
    return root


def test_hub_loaders_name_each_repository_config_and_split(tmp_path, offline):
    text = {"text": "A paper about something hazardous, long enough to pass RMU's filter."}
    wmdp = _repo(tmp_path / "wmdp", {"wmdp-bio": {"test": [Q]}, "wmdp-cyber": {"test": [Q, Q]}})
    mmlu = _repo(tmp_path / "mmlu", {"anatomy": {"test": [dict(Q, subject="anatomy")], "dev": [Q]}})
    bio = _repo(tmp_path / "bio", {None: {"train": [dict(text, title="t", doi="d")]}})
    corpora = _repo(tmp_path / "corpora", {"cyber-forget-corpus": {"train": [text]},
                                           "bio-retain-corpus": {"train": [text, {"text": "short"}]}})  # fmt: skip
    wiki = _repo(tmp_path / "wiki", {"wikitext-2-raw-v1": {"test": [text]}})
    cfg = _cfg("data.source=hub", f"data.hub_name={wmdp}", f"data.wmdp.mmlu_hub={mmlu}",
               f"data.wmdp.bio_forget_hub={bio}", f"data.wmdp.corpora_hub={corpora}",
               f"data.wmdp.wikitext_hub={wiki}", "data.wmdp.subsets=bio,cyber",
               "data.wmdp.mmlu_subjects=anatomy")  # fmt: skip
    assert data.load(cfg, "wmdp/cyber") == [Q, Q]
    assert data.load(cfg, "mmlu/anatomy") == [dict(Q, subject="anatomy")]
    assert data.training_texts(cfg, "corpora/cyber-forget+bio-forget") == [text, text]  # title, doi dropped
    assert data.training_texts(cfg, "corpora/bio-retain") == [text]  # "short" is under min_chars
    assert data.training_texts(cfg, "wikitext") == [text]
    with pytest.raises(DataError, match=r"could not load '.*wmdp' config 'wmdp-chem' split 'test'") as e:
        data.load(cfg, "wmdp/chem")
    assert "\n" not in str(e.value)


def test_a_refused_gated_corpus_names_the_access_request():
    httpx = pytest.importorskip("httpx")
    from huggingface_hub.errors import GatedRepoError

    url = "https://huggingface.co/datasets/cais/wmdp-bio-forget-corpus/resolve/main/README.md"
    response = httpx.Response(401, request=httpx.Request("GET", url))
    refused = GatedRepoError("401 Client Error. Cannot access gated repo for url ...", response=response)
    err = data.hub_error("bio-forget", "cais/wmdp-bio-forget-corpus", None, "train", refused)
    msg = str(err)
    assert "gated; request access on https://huggingface.co/datasets/cais/wmdp-bio-forget-corpus" in msg
    assert "HF_TOKEN" in msg and "\n" not in msg
    other = str(data.hub_error("wikitext", "wikitext", "wikitext-2-raw-v1", "test", ConnectionError("no network")))
    assert "could not load 'wikitext' config 'wikitext-2-raw-v1' split 'test'" in other and "gated" not in other


def test_group_accuracy_is_weighted_by_set_size_as_lm_evals_groups():
    """Sets of 2 and 3 questions with accuracies 1/2 and 3/3: lm_eval's weight_by_size group is 4/5 = 0.8, not
    the mean of the set accuracies (0.75)."""
    log = {"wmdp_bio_acc": metric_log.per_item([1.0, 0.0], "acc"),
           "wmdp_cyber_acc": metric_log.per_item([1.0, 1.0, 1.0], "acc"),
           "mmlu_anatomy_acc": metric_log.per_item([0.0], "acc")}  # fmt: skip
    groups = group_entries(log)
    assert groups["wmdp_acc"]["agg_value"] == pytest.approx(0.8)
    assert groups["mmlu_acc"]["agg_value"] == 0.0
    s = summarize({**log, **groups})  # anatomy is STEM in lm_eval's table: mmlu_stem_acc
    assert s == {"wmdp_bio_acc": 0.5, "wmdp_cyber_acc": 1.0, "mmlu_anatomy_acc": 0.0, "wmdp_acc": pytest.approx(0.8),
                 "mmlu_acc": 0.0, "mmlu_stem_acc": 0.0}  # fmt: skip
    assert [h.key for h in get_suite("wmdp").headline(s)] == ["wmdp_acc", "mmlu_acc"]
