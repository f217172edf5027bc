"""The refusal answers of idk_nll / dpo: the shipped list, a user's file (bad ones refused in one line), the
choice per item (a function of run.seed and the item index only), and the encodings the objectives read."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.data.refusals import SHIPPED, read_refusals, refusal_index, refusal_items
from dsunlearn.errors import ConfigError, DataError
from dsunlearn.objectives import OBJECTIVES
from dsunlearn.recipes.forget_inputs import ForgetEncodings, refusals_for
from dsunlearn.suites import get_suite
from dsunlearn.suites.base import DOCUMENTS, TrainingSet

ROOT = Path(__file__).resolve().parents[2]


def _qa(n: int) -> list[dict]:
    return [{"question": f"Who wrote book {i}?", "answer": f"Author {i} wrote it."} for i in range(n)]


# ---------------------------------------------------------------- the lists


def test_the_shipped_list_is_a_few_dozen_distinct_short_sentences():
    refusals = read_refusals()
    assert read_refusals(SHIPPED) == refusals and SHIPPED.parent == ROOT / "dsunlearn" / "data"
    assert 30 <= len(refusals) <= 60 and len(set(refusals)) == len(refusals)
    assert all(s == s.strip() and 2 <= len(s.split()) <= 12 and s[-1] in ".!" for s in refusals)
    assert "data/*.txt" in (ROOT / "setup.py").read_text()  # installed with the package


def test_a_user_file_one_sentence_per_line_stripped_blank_lines_skipped(tmp_path):
    f = tmp_path / "idk.jsonl"  # open-unlearning's name for its plain-text list
    f.write_bytes("\ufeffNo idea.\n\n   Ask someone else.  \r\nPas la moindre idée.\n".encode())
    assert read_refusals(f) == ["No idea.", "Ask someone else.", "Pas la moindre idée."]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ("does not exist", "one refusal sentence per line")),
        ("dir", ("is not a file",)),
        (b"", ("holds no refusal sentence", "empty or blank")),
        (b"\n  \n\t\n", ("holds no refusal sentence",)),
        (b'I don\'t know.\n{"text": "No idea."}\n', ("line 2", "JSON record", "not a sentence", "plain UTF-8")),
        ("Aucune idée.\n".encode("latin-1"), ("not UTF-8", "line 1", "save it as UTF-8")),
        ("No idea.\n".encode("utf-16"), ("UTF-16", "save it as UTF-8")),
    ],
    ids=["missing", "directory", "empty", "blank", "json-record", "latin-1", "utf-16"],
)
def test_a_bad_file_is_refused_in_one_line_naming_it(tmp_path, content, words):
    f = tmp_path / "refusals.txt"
    if content == "dir":
        f.mkdir()
    elif content is not None:
        f.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_refusals(f)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg
    assert all(w in msg for w in words), msg
    if content is None or content == "dir" or not content.strip() or b"{" in content:
        assert "data.idk_file" in msg  # the key to change (encoding errors name the file, as for data files)


# ---------------------------------------------------------------- the choice per item


def test_the_choice_is_the_documented_hash_of_seed_and_index():
    for seed, item, n in [(42, 0, 40), (42, 7, 40), (0, 3, 5), (2**32 - 1, 10**6, 17)]:
        digest = hashlib.sha256(f"dsunlearn-refusal:{seed}:{item}".encode()).digest()
        assert refusal_index(seed, item, n) == int.from_bytes(digest[:8], "big") % n
    # pinned: a change of the rule would silently give old configs other refusals
    assert [refusal_index(42, i, 40) for i in range(6)] == [30, 31, 7, 27, 6, 4]


def test_the_choice_depends_on_seed_and_index_only():
    items, refusals = _qa(400), read_refusals()
    chosen = refusal_items(items, refusals, seed=42)
    assert [c["question"] for c in chosen] == [it["question"] for it in items]
    assert refusal_items(items[:37], refusals, seed=42) == chosen[:37]  # a prefix (the G-effect's probe) agrees
    assert refusal_items(items, refusals, seed=42) == chosen  # deterministic
    assert refusal_items(items, refusals, seed=43) != chosen  # the seed matters
    used = {c["answer"] for c in chosen}
    assert len(used) == len(refusals)  # 400 draws from 40 sentences: each used (uniform by construction)


def test_the_choice_is_the_same_in_another_process():
    """No process state enters (e.g. Python's per-process string hash): another interpreter, another
    PYTHONHASHSEED, the same choices, as every rank of a run computes them on its own."""
    code = "from dsunlearn.data.refusals import refusal_index; print([refusal_index(42, i, 40) for i in range(50)])"
    env = {"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == str([refusal_index(42, i, 40) for i in range(50)])


# ---------------------------------------------------------------- what the objectives read


def test_only_idk_objectives_read_refusals_and_only_from_question_answer_sets(tmp_path):
    data = load_config(None, ["data.synthetic.n_authors=10"]).data
    forget = TrainingSet("forget", "forget10", "qa", _qa(3))
    assert refusals_for(OBJECTIVES["npo"], forget, data) is None
    assert refusals_for(OBJECTIVES["dpo"], forget, data) == read_refusals()
    (tmp_path / "mine.txt").write_text("Nope.\n")
    assert refusals_for(OBJECTIVES["idk_nll"], forget, dataclasses.replace(data, idk_file=str(tmp_path / "mine.txt")))
    muse = load_config(None, ["data.suite=muse"]).data
    docs = TrainingSet("forget", "forget", DOCUMENTS, [{"text": "Once upon a time."}])
    for name in ("idk_nll", "dpo"):
        with pytest.raises(ConfigError) as e:
            refusals_for(OBJECTIVES[name], docs, muse)
        msg = str(e.value)
        assert "\n" not in msg and f"objective.name={name}" in msg and "data.suite=muse" in msg
        assert "text documents" in msg and "data.suite=tofu" in msg and "npo" in msg and "dpo" not in msg[-60:]


def test_each_forget_item_gets_its_refusal_in_the_same_prompt(tiny_tokenizer):
    data = load_config(None, ["data.synthetic.n_authors=10", "data.max_length=64"]).data
    forget_set = get_suite("tofu").training_set(data, "forget")
    refusals = read_refusals()
    enc = ForgetEncodings.encode(forget_set, tiny_tokenizer, data, refusals, seed=42)
    assert len(enc) == len(enc.alternate) == len(forget_set.items) == 10
    for i, (a, r) in enumerate(zip(enc.answers, enc.alternate, strict=True)):
        n = r.labels.count(-100)
        assert r.input_ids[:n] == a.input_ids[: a.labels.count(-100)]  # the same question, the same prompt
        want = refusals[refusal_index(42, i, len(refusals))]
        assert tiny_tokenizer.decode(r.input_ids[n:], skip_special_tokens=True).strip() == want
    assert ForgetEncodings.encode(forget_set, tiny_tokenizer, data, None, seed=42).alternate is None
    head = enc.head(3)
    assert head.answers == enc.answers[:3] and head.alternate == enc.alternate[:3]


def test_the_shipped_refusals_fit_the_tiny_configs(tiny_tokenizer):
    """Every shipped refusal after the longest forget question stays within tiny_unlearn's data.max_length."""
    cfg = load_config("tiny_dpo")
    items = get_suite("tofu").training_set(cfg.data, "forget").items
    longest = max(items, key=lambda it: len(tiny_tokenizer(it["question"])["input_ids"]))
    every = [{"question": longest["question"], "answer": "x"}] * len(read_refusals())
    alt = [dict(it, answer=s) for it, s in zip(every, read_refusals(), strict=True)]
    enc = TrainingSet("forget", "longest", "qa", alt).encode(tiny_tokenizer, cfg.data)  # DataError if too long
    assert max(len(e.input_ids) for e in enc) <= cfg.data.max_length
