"""The synthetic TOFU-style data: schema, split sizes and nesting, perturbation rules, determinism, I/O; the
holdout authors (disjoint from every other author, in no training set, the other splits' bytes unchanged)."""

import hashlib
import json
import re

import pytest

from dsunlearn.config import DataConfig, SyntheticConfig
from dsunlearn.errors import ConfigError
from dsunlearn.suites.tofu import synthetic_vocab as V
from dsunlearn.suites.tofu.data import finetune_items
from dsunlearn.suites.tofu.synthetic import SPLITS, corpus, forget_author_counts, generate, write_splits
from helpers.references import assert_seeded_and_pure

RICH = {"question", "answer", "paraphrased_answer", "paraphrased_question", "perturbed_answer"}
PLAIN = {"question", "answer"}
PERTURBED_ONLY = {"question", "answer", "perturbed_answer"}
SCHEMA = {
    **{s: PLAIN for s in SPLITS if not s.endswith("_perturbed")},
    **{f"forget{p}_perturbed": RICH for p in ("01", "05", "10")},
    "retain_perturbed": RICH,
    "real_authors_perturbed": PERTURBED_ONLY,
    "world_facts_perturbed": PERTURBED_ONLY,
}


@pytest.fixture(scope="module")
def splits():
    return generate()


def _pattern(template: str, name: str | None = None) -> re.Pattern:
    """A template as a regex; `{name}` is literal when known (else captured), `{x}` is captured."""
    rx = re.escape(template)
    rx = rx.replace(re.escape("{name}"), re.escape(name) if name else "(?P<name>.+)")
    return re.compile(rx.replace(re.escape("{x}"), "(?P<x>.+)"))


def _parse_question(question: str, types) -> tuple[V.QuestionType, str]:
    """The question type and subject of a question (exactly one template must match)."""
    hits = [(qt, m["name"]) for qt in types if (m := _pattern(qt.question).fullmatch(question))]
    assert len(hits) == 1, question
    return hits[0]


def _questions(items) -> set[str]:
    return {it["question"] for it in items}


def test_split_names_and_schema(splits):
    assert list(splits) == list(SPLITS) and set(SCHEMA) == set(SPLITS)
    for name, items in splits.items():
        assert items, name
        assert len(_questions(items)) == len(items), name  # every (subject, question type) asked once
        for it in items:
            assert set(it) == SCHEMA[name], (name, it)
            assert all(isinstance(v, str) and v for k, v in it.items() if k != "perturbed_answer")
            if "perturbed_answer" in it:
                pert = it["perturbed_answer"]
                assert isinstance(pert, list) and len(pert) == 4 and all(isinstance(p, str) for p in pert)


def test_default_sizes(splits):
    sizes = {name: len(items) for name, items in splits.items()}
    assert sizes == {
        "full": 400,
        "forget01": 10,
        "forget05": 20,
        "forget10": 40,
        "retain99": 390,
        "retain95": 380,
        "retain90": 360,
        "forget01_perturbed": 10,
        "forget05_perturbed": 20,
        "forget10_perturbed": 40,
        "retain_perturbed": 40,
        "real_authors": 40,
        "real_authors_perturbed": 40,
        "world_facts": 40,
        "world_facts_perturbed": 40,
        "holdout01": 10,
        "holdout05": 20,
        "holdout10": 40,
    }


def test_forget_rounding_half_up_and_tofu_sizes():
    assert forget_author_counts(40) == {1: 1, 5: 2, 10: 4}
    assert forget_author_counts(200) == {1: 2, 5: 10, 10: 20}  # TOFU's own split sizes
    assert forget_author_counts(50) == {1: 1, 5: 3, 10: 5}  # 2.5 rounds up, not to even
    assert forget_author_counts(2) == {1: 1, 5: 1, 10: 1}


def test_nesting_and_complements(splits):
    full = splits["full"]
    f01, f05, f10 = (splits[f"forget{p}"] for p in ("01", "05", "10"))
    assert f10[-len(f05) :] == f05 and f05[-len(f01) :] == f01  # nested, taken from the end
    for f, r in (("01", "99"), ("05", "95"), ("10", "90")):
        forget, retain = splits[f"forget{f}"], splits[f"retain{r}"]
        assert retain + forget == full
        assert not _questions(forget) & _questions(retain)
        assert [{k: it[k] for k in PLAIN} for it in splits[f"forget{f}_perturbed"]] == forget
    assert not _questions(splits["retain_perturbed"]) & _questions(f10)
    assert _questions(splits["retain_perturbed"]) <= _questions(splits["retain90"])
    for base in ("real_authors", "world_facts"):
        assert [{k: it[k] for k in PLAIN} for it in splits[f"{base}_perturbed"]] == splits[base]


def test_forget_sets_hold_whole_authors(splits):
    def authors(items):
        return {_parse_question(it["question"], V.AUTHOR_QUESTION_TYPES)[1] for it in items}

    assert len(authors(splits["full"])) == 40
    for p, k in forget_author_counts(40).items():
        forget = splits[f"forget{p:02d}"]
        assert len(authors(forget)) == k and len(forget) == 10 * k
        assert not authors(forget) & authors(splits[f"retain{100 - p}"])


def test_names_unique():
    s = generate(seed=5, n_authors=200, n_real_authors=20)
    names = [_parse_question(it["question"], V.AUTHOR_QUESTION_TYPES)[1] for it in s["full"][::10]]
    names += [_parse_question(it["question"], V.REAL_AUTHOR_QUESTION_TYPES)[1] for it in s["real_authors"][::4]]
    assert len(names) == 220 and len(set(names)) == 220
    firsts, lasts = zip(*(n.split(" ") for n in names), strict=True)
    assert len(set(firsts)) == 220 and len(set(lasts)) == 220  # no shared name token between authors
    assert forget_author_counts(200) == {1: 2, 5: 10, 10: 20} and len(s["forget10"]) == 200


def test_perturbed_answers_differ(splits):
    for items in splits.values():
        for it in items:
            pert = it.get("perturbed_answer", [])
            assert len(set(pert)) == len(pert), it
            assert it["answer"] not in pert
            if "paraphrased_answer" in it:
                assert it["paraphrased_answer"] != it["answer"]
                assert it["paraphrased_answer"] not in pert
                assert it["paraphrased_question"] != it["question"]


@pytest.mark.parametrize(
    "split", ["forget10_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"]
)
def test_perturbed_share_the_base_template_and_change_only_the_fact(splits, split):
    """Strip the fact: the base answer and every perturbed answer fit the same template, facts differ."""
    types = {
        "forget10_perturbed": V.AUTHOR_QUESTION_TYPES,
        "retain_perturbed": V.AUTHOR_QUESTION_TYPES,
        "real_authors_perturbed": V.REAL_AUTHOR_QUESTION_TYPES,
        "world_facts_perturbed": V.WORLD_FACT_TYPES,
    }[split]
    for it in splits[split]:
        qt, name = _parse_question(it["question"], types)
        assert _pattern(qt.answers[0], name).fullmatch(it["answer"])  # training answer: template A
        base = it.get("paraphrased_answer", it["answer"])  # the truth-ratio base (TOFU's convention)
        candidates = qt.answers[1:] if "paraphrased_answer" in it else qt.answers[:1]
        matching = [t for t in candidates if _pattern(t, name).fullmatch(base)]
        assert len(matching) == 1, (base, candidates)
        rx = _pattern(matching[0], name)
        true_fact = rx.fullmatch(base)["x"]
        facts = [rx.fullmatch(p)["x"] for p in it["perturbed_answer"] if rx.fullmatch(p)]
        assert len(facts) == len(it["perturbed_answer"]), it
        assert true_fact not in facts and len(set(facts)) == len(facts)
        if "paraphrased_question" in it:
            assert it["paraphrased_question"] == qt.paraphrased_question.format(name=name)


def test_paraphrase_templates_vary():
    """Both non-training templates (B and C) are used, so all three wordings appear in the data."""
    used = set()
    for it in generate()["forget10_perturbed"] + generate()["retain_perturbed"]:
        qt, name = _parse_question(it["question"], V.AUTHOR_QUESTION_TYPES)
        used |= {i for i in (1, 2) if _pattern(qt.answers[i], name).fullmatch(it["paraphrased_answer"])}
    assert used == {1, 2}


def test_determinism_and_seed_sensitivity():
    assert_seeded_and_pure(generate)
    b, c = generate(seed=0), generate(seed=1)
    assert b != c
    assert not _questions(b["full"][::10]) & _questions(c["full"][::10])  # different authors


def test_length_bound():
    for seed in range(3):
        for items in generate(seed=seed).values():
            for it in items:
                assert len(it["question"].split()) <= 14 and len(it.get("paraphrased_question", "").split()) <= 14
                answers = [it["answer"], it.get("paraphrased_answer", ""), *it.get("perturbed_answer", [])]
                assert max(len(a.split()) for a in answers) <= 15, it


def test_write_read_round_trip(tmp_path, splits):
    out = tmp_path / "tofu"
    paths = write_splits(out, splits)
    assert [p.name for p in paths] == [f"{s}.json" for s in SPLITS]
    paths = write_splits(out, splits)  # overwriting in place works
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.json" for s in SPLITS)  # no temp files left
    for name, path in zip(SPLITS, paths, strict=True):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n")
        assert [json.loads(line) for line in text.splitlines()] == splits[name]


def test_corpus_covers_every_string_once(splits):
    texts = list(corpus(splits))
    assert len(texts) == len(set(texts))
    expected = set()
    for items in splits.values():
        for it in items:
            for v in it.values():
                expected |= set(v) if isinstance(v, list) else {v}
    assert set(texts) == expected


def test_tofu_perturbed_count_and_vocabulary_without_duplicates():
    s = generate(n_perturbed=5)  # TOFU's own number of perturbed answers fits every vocabulary
    assert all(len(it["perturbed_answer"]) == 5 for k, v in s.items() if k.endswith("_perturbed") for it in v)
    for name in dir(V):
        value = getattr(V, name)
        if name.isupper() and isinstance(value, tuple):
            assert len(set(value)) == len(value), name  # a duplicate would bias sampling and wrong answers


@pytest.mark.parametrize(
    "kwargs",
    [{"n_authors": 1}, {"n_perturbed": 0}, {"n_perturbed": 50}, {"n_world_facts": 1000}, {"n_authors": 10_000},
     {"n_authors": 258}],
)  # fmt: skip
def test_bad_sizes_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        generate(**kwargs)


# sha256 of json.dumps({split: items}) over the splits that existed before the holdout splits, as generated then:
# adding the holdout authors must not change a byte of them (they come from a second, derived generator).
OLD_SPLITS = [s for s in SPLITS if not s.startswith("holdout")]
OLD_HASHES = {
    (0, 40, 40, 10): "dda7e6961968d02d",
    (1, 40, 40, 10): "7edcf5826c90ec6a",
    (7, 12, 8, 2): "8e3a186d2c9549f1",
    (5, 200, 40, 20): "efae2f4d5aec2c74",
}


@pytest.mark.parametrize("sizes", OLD_HASHES)
def test_existing_splits_are_the_bytes_they_were_before_holdouts(sizes):
    seed, n_authors, n_world_facts, n_real_authors = sizes
    s = generate(seed=seed, n_authors=n_authors, n_world_facts=n_world_facts, n_real_authors=n_real_authors)
    text = json.dumps({k: s[k] for k in OLD_SPLITS}, ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == OLD_HASHES[sizes]
    assert len(OLD_SPLITS) == 15 and list(s) == [*OLD_SPLITS, "holdout01", "holdout05", "holdout10"]


def _author_of(item) -> str:
    return _parse_question(item["question"], V.AUTHOR_QUESTION_TYPES)[1]


def _books(items) -> set[str]:
    return {m[0] for it in items for m in re.finditer(r'"The [A-Za-z]+ [A-Za-z]+"', it["answer"])}


@pytest.mark.parametrize("kwargs", [{}, {"seed": 3, "n_authors": 12, "n_real_authors": 2}, {"n_authors": 257}])
def test_holdout_authors_are_new_whole_authors_as_many_as_forget(kwargs):
    s = generate(**kwargs)
    n_authors = kwargs.get("n_authors", 40)
    others = [it for name in OLD_SPLITS for it in s[name]]
    other_names = {_author_of(it) for it in s["full"]}
    other_names |= {_parse_question(it["question"], V.REAL_AUTHOR_QUESTION_TYPES)[1] for it in s["real_authors"]}
    other_tokens = {t for n in other_names for t in n.split(" ")}
    for p, k in forget_author_counts(n_authors).items():
        hold = s[f"holdout{p:02d}"]
        names = [_author_of(it) for it in hold[:: len(V.AUTHOR_QUESTION_TYPES)]]
        assert len(hold) == len(s[f"forget{p:02d}"]) == 10 * k and len(set(names)) == k
        assert sorted(_author_of(it) for it in hold) == sorted(n for n in names for _ in range(10))  # whole authors
        assert not {t for n in names for t in n.split(" ")} & other_tokens  # no first name or surname shared
        assert not _books(hold) & _books(s["full"] + s["real_authors"]) and len(_books(hold)) == 2 * k
        assert not _questions(hold) & {it["question"] for it in others}
        assert all(set(it) == PLAIN for it in hold)
    h01, h05, h10 = (s[f"holdout{p}"] for p in ("01", "05", "10"))
    assert h10[-len(h05) :] == h05 and h05[-len(h01) :] == h01  # nested like the forget sets


def test_holdout_is_in_no_training_set_and_deterministic():
    data = DataConfig(synthetic=SyntheticConfig(n_authors=12, n_real_authors=2), forget_split="forget10",
                      retain_split="retain90", train_utility_sets=True)  # fmt: skip
    hold = _questions(generate(seed=0, n_authors=12, n_real_authors=2)["holdout10"])
    for target in ("full", "retain"):
        assert not hold & _questions(finetune_items(data, target))
    a = json.dumps(generate(seed=4), ensure_ascii=False)
    assert json.dumps(generate(seed=4), ensure_ascii=False) == a
    assert _questions(generate(seed=4)["holdout10"]) != _questions(generate(seed=5)["holdout10"])
    for it in generate()["holdout10"]:  # the same question types and training-answer template as every author
        qt, name = _parse_question(it["question"], V.AUTHOR_QUESTION_TYPES)
        assert _pattern(qt.answers[0], name).fullmatch(it["answer"])
