"""The synthetic MUSE-style news corpus: schema, sizes, the verbmem cut, knowmem answers, disjoint entities, I/O.

Facts are recovered from the texts by parsing them with the templates of `synthetic_vocab` (not read from the
generator), so the tests check what a model would see.
"""

import json
import random
import re
import string
from collections import defaultdict

import pytest

from dsunlearn.errors import ConfigError, DataError
from dsunlearn.suites.muse import synthetic_vocab as V
from dsunlearn.suites.muse.synthetic import SPLITS, _grid, _verbmem, corpus, generate, write_splits
from helpers.references import assert_seeded_and_pure

SCHEMA = {
    **{s: {"text"} for s in SPLITS if s.startswith(("raw/", "privleak/"))},
    "verbmem/forget": {"prompt", "gt"},
    **{s: {"question", "answer"} for s in SPLITS if s.startswith("knowmem/")},
}
SETS = ("raw/forget", "raw/retain1", "raw/retain2", "raw/holdout")
# what each fact looks like in a text ({suffix}: the story kind's organisation suffix)
FACT_RX = {
    "town": r"[A-Z][a-z]+",
    "person": r"[A-Z][a-z]+ [A-Z][a-z]+",
    "org": r"[A-Z][a-z]+ {suffix}",
    "number": r"\d+",
}


@pytest.fixture(scope="module")
def splits():
    return generate(qa_in_text=False)  # the template parsers below read bare articles


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _template_rx(template: str, kind: V.StoryKind) -> re.Pattern:
    """A template as a regex: each fact a named group (a back-reference when repeated), fillers literal choices."""
    rx, seen = "", set()
    for literal, field, _, _ in string.Formatter().parse(template):
        rx += re.escape(literal)
        if field is None:
            continue
        if field in V.FACTS:
            rx += f"(?P={field})" if field in seen else f"(?P<{field}>{FACT_RX[field].format(suffix=kind.org_suffix)})"
            seen.add(field)
        else:
            rx += "(?:" + "|".join(map(re.escape, V.FILLERS[field])) + ")"
    return re.compile(rx)


def _parse_article(text: str) -> tuple[V.StoryKind, dict[str, str]]:
    hits = [(k, m.groupdict()) for k in V.STORY_KINDS if (m := _template_rx(k.article, k).fullmatch(text))]
    assert len(hits) == 1, text
    return hits[0]


def _parse_question(question: str) -> tuple[V.StoryKind, str, dict[str, str]]:
    """(kind, asked fact, the facts the question names) of a question; exactly one template matches."""
    hits = [
        (k, fact, m.groupdict())
        for k in V.STORY_KINDS
        for fact, template in zip(V.FACTS, k.questions, strict=True)
        if (m := _template_rx(template, k).fullmatch(question))
    ]
    assert len(hits) == 1, question
    return hits[0]


def _phrase_index(texts: list[str]) -> dict[str, set[int]]:
    """Word 1- and 2-grams -> the indices of the texts containing them (a whole-word phrase search)."""
    index: dict[str, set[int]] = defaultdict(set)
    for i, text in enumerate(texts):
        words = re.findall(r"[A-Za-z0-9]+", text)
        for n in (1, 2):
            for j in range(len(words) - n + 1):
                index[" ".join(words[j : j + n])].add(i)
    return index


def _facts_by_set(s) -> dict[str, list[dict[str, str]]]:
    return {name: [_parse_article(it["text"])[1] for it in s[name]] for name in SETS}


def test_split_names_schema_and_sizes(splits):
    assert list(splits) == list(SPLITS) and set(SCHEMA) == set(SPLITS)
    for name, items in splits.items():
        for it in items:
            assert set(it) == SCHEMA[name], (name, it)
            assert all(isinstance(v, str) and v and v == " ".join(v.split()) for v in it.values()), (name, it)
    sizes = {name: len(items) for name, items in generate(n_forget=5, n_retain=7, n_holdout=4, n_icl=2).items()}
    assert sizes == {
        "raw/forget": 5, "raw/retain1": 7, "raw/retain2": 7, "raw/holdout": 4, "verbmem/forget": 5,
        "knowmem/forget_qa": 5, "knowmem/forget_qa_icl": 2, "knowmem/retain_qa": 7, "knowmem/retain_qa_icl": 2,
        "privleak/forget": 5, "privleak/retain": 7, "privleak/holdout": 4,
    }  # fmt: skip
    assert {len(v) for k, v in splits.items() if not k.endswith("_icl")} == {16}
    assert len(splits["knowmem/forget_qa_icl"]) == len(splits["knowmem/retain_qa_icl"]) == 3
    assert generate(n_icl=0)["knowmem/forget_qa_icl"] == []


def test_determinism_and_seed_sensitivity():
    assert_seeded_and_pure(generate)
    b, c = generate(seed=0, qa_in_text=False), generate(seed=1, qa_in_text=False)
    assert json.dumps(b) != json.dumps(c)
    towns = [{f["town"] for f in _facts_by_set(x)["raw/forget"]} for x in (b, c)]
    assert towns[0] != towns[1]


def test_privleak_is_the_raw_texts(splits):
    assert splits["privleak/forget"] == splits["raw/forget"]
    assert splits["privleak/retain"] == splits["raw/retain2"]
    assert splits["privleak/holdout"] == splits["raw/holdout"]
    assert splits["privleak/forget"][0] is not splits["raw/forget"][0]  # fresh dicts: editing one split is local


def test_verbmem_cut_by_hand():
    assert _verbmem("a b c d e") == {"prompt": "a b", "gt": "c d e"}  # 0.4 x 5 = 2
    assert _verbmem("a b c d") == {"prompt": "a b", "gt": "c d"}  # 1.6 -> 2
    assert _verbmem("a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g") == {
        "prompt": "a b c d e f g h i j k l m",  # 0.4 x 33 = 13.2 -> 13
        "gt": "n o p q r s t u v w x y z a b c d e f g",
    }
    assert _verbmem("a b") == {"prompt": "a", "gt": "b"}  # at least one word on each side


def test_verbmem_splits_each_forget_article(splits):
    assert len(splits["verbmem/forget"]) == len(splits["raw/forget"])
    for vm, raw in zip(splits["verbmem/forget"], splits["raw/forget"], strict=True):
        assert vm["prompt"] + " " + vm["gt"] == raw["text"]
        n = len(raw["text"].split(" "))
        assert len(vm["prompt"].split(" ")) == int(0.4 * n + 0.5) and vm["gt"]


@pytest.mark.parametrize("qa_split,icl_split,raw_split", [
    ("knowmem/forget_qa", "knowmem/forget_qa_icl", "raw/forget"),
    ("knowmem/retain_qa", "knowmem/retain_qa_icl", "raw/retain2"),
])  # fmt: skip
@pytest.mark.parametrize("seed,n_icl", [(0, 3), (4, 30)])
def test_knowmem_answers_are_facts_of_the_identified_article(seed, n_icl, qa_split, icl_split, raw_split):
    s = generate(seed=seed, n_icl=n_icl, qa_in_text=False)
    texts = [it["text"] for name in SETS for it in s[name]]
    index = _phrase_index(texts)
    own = {it["text"] for it in s[raw_split]}

    def article_of(item) -> tuple[str, str]:
        """The article the question names and the asked fact: the question's facts occur in one article only."""
        kind, fact, named = _parse_question(item["question"])
        assert fact not in named and named
        [i] = set.intersection(*(index[v] for v in named.values()))
        art_kind, facts = _parse_article(texts[i])
        assert art_kind == kind and all(facts[k] == v for k, v in named.items())
        assert item["answer"] == facts[fact] and index[item["answer"]] == {i}  # verbatim, in that article only
        assert texts[i] in own
        return texts[i], fact

    asked = [article_of(it) for it in s[qa_split]]
    assert [t for t, _ in asked] == [it["text"] for it in s[raw_split]]  # one question per article, in order
    icl = [article_of(it) for it in s[icl_split]]
    assert len(icl) == n_icl and len(set(icl)) == n_icl
    assert not set(icl) & set(asked)  # an in-context example never gives away an asked fact
    assert not {it["answer"] for it in s[icl_split]} & {it["answer"] for it in s[qa_split]}


@pytest.mark.parametrize("kwargs", [{}, {"seed": 3, "n_forget": 700, "n_retain": 300, "n_holdout": 200}])
def test_entities_unique_across_articles_and_sets(kwargs):
    """Every fact occurs (as whole words) in one article only, so the four sets are disjoint in every fact.

    The second case (1500 articles) passes heads x tails = 1200 towns, so middle syllables and 4-5 digit
    numbers are used too.
    """
    s = generate(**kwargs, qa_in_text=False)
    by_set = _facts_by_set(s)
    texts = [it["text"] for name in SETS for it in s[name]]
    index = _phrase_index(texts)
    all_facts = [f for name in SETS for f in by_set[name]]
    for i, facts in enumerate(all_facts):
        for value in facts.values():
            assert index[value] == {i}, value
    for fact in V.FACTS:
        values = [f[fact] for f in all_facts]
        assert len(set(values)) == len(values), fact
    if kwargs:
        assert max(len(f["town"]) for f in all_facts) > max(len(h) + len(t) for h in V.TOWN_HEADS for t in V.TOWN_TAILS)
        assert max(int(f["number"]) for f in all_facts) >= 1000


def _parts(word: str, heads, tails) -> tuple[str, str]:
    [h] = [h for h in heads if word.startswith(h)]
    [t] = [t for t in tails if word.endswith(t)]
    return h, t


def test_small_corpus_shares_no_syllable(splits):
    """The first min(heads, tails) names of each space share no head and no tail (the Latin-square order)."""
    facts = [f for fs in _facts_by_set(splits).values() for f in fs]  # article order: the order names are dealt
    assert len(facts) == 64
    for key, heads, tails in (("town", V.TOWN_HEADS, V.TOWN_TAILS), ("org", V.ORG_HEADS, V.ORG_TAILS)):
        n = min(len(heads), len(tails))
        parts = [_parts(f[key].split()[0], heads, tails) for f in facts[:n]]
        assert len({h for h, _ in parts}) == len({t for _, t in parts}) == n, key
    firsts, surnames = zip(*(f["person"].split() for f in facts), strict=True)
    assert len(set(firsts)) == len(set(surnames)) == 64  # 240 first names and 280 surnames > 64 articles


def test_word_counts_in_range():
    for seed in range(3):
        for name, items in generate(seed=seed, n_forget=100, n_retain=100, n_holdout=100, qa_in_text=False).items():
            if name.startswith("raw/"):
                assert all(45 <= len(it["text"].split()) <= 75 for it in items), name
            elif name.startswith("knowmem/"):
                assert all(1 <= len(it["answer"].split()) <= 3 for it in items), name


def test_vocabulary_spaces_are_distinct_and_disjoint():
    """Each name space has product-many distinct names, the spaces share no word, nor with the templates."""
    spaces = {
        "town": [h + m + t for h in V.TOWN_HEADS for m in V.MIDS for t in V.TOWN_TAILS],
        "org": [h + m + t for h in V.ORG_HEADS for m in V.MIDS for t in V.ORG_TAILS],
        "first": [h + t for h in V.FIRST_HEADS for t in V.FIRST_TAILS],
        "surname": [h + t for h in V.SURNAME_HEADS for t in V.SURNAME_TAILS],
    }
    for name, space in spaces.items():
        assert len(set(space)) == len(space), name
    assert min(len(spaces["town"]), len(spaces["org"]), len(spaces["first"]) * len(spaces["surname"])) >= 40_000
    fixed = " ".join([k.article for k in V.STORY_KINDS] + [q for k in V.STORY_KINDS for q in k.questions])
    fixed = re.sub(r"\{\w+\}", " ", fixed) + " ".join(x for pool in V.FILLERS.values() for x in pool)
    words = set(re.findall(r"[A-Za-z]+", fixed)) | {k.org_suffix for k in V.STORY_KINDS}
    assert not re.search(r"\d", fixed)  # numbers are facts only
    names = list(spaces.items())
    for i, (a, space_a) in enumerate(names):
        assert not set(space_a) & words, a
        for b, space_b in names[i + 1 :]:
            assert not set(space_a) & set(space_b), (a, b)


def test_templates_name_their_placeholders():
    for k in V.STORY_KINDS:
        assert set(_fields(k.article)) == set(V.FACTS) | set(k.fillers) and len(set(k.fillers)) == len(k.fillers)
        for fact, q in zip(V.FACTS, k.questions, strict=True):
            assert set(_fields(q)) == ({"person"} if fact == "town" else {"town"}), q
    for slot, pool in V.FILLERS.items():
        assert len(set(pool)) == len(pool) and len({len(x.split()) for x in pool}) == 1, slot
    assert len({k.org_suffix for k in V.STORY_KINDS}) == len(V.STORY_KINDS)
    assert len({q for k in V.STORY_KINDS for q in k.questions}) == len(V.FACTS) * len(V.STORY_KINDS)


def test_corpus_covers_every_string_once(splits):
    texts = corpus(splits)
    assert isinstance(texts, list) and len(texts) == len(set(texts))
    assert set(texts) == {v for items in splits.values() for it in items for v in it.values()}
    assert texts[0] == splits["raw/forget"][0]["text"]


def test_write_read_round_trip(tmp_path, splits):
    out = tmp_path / "muse"
    assert write_splits(out, splits) is None
    write_splits(out, splits)  # overwriting in place works
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(f"{s}.json" for s in SPLITS)  # no temp files left
    for name in SPLITS:
        text = (out / f"{name}.json").read_text(encoding="utf-8")
        assert text.startswith("[") and text.endswith("]\n")
        assert json.loads(text) == splits[name]
    write_splits(out, {"raw/forget": []})
    assert json.loads((out / "raw/forget.json").read_text()) == []


@pytest.mark.parametrize("bad", ["raw", "raw/forget/x", "../forget", "raw/.hidden", "raw/", "/forget", "a\\b/c"])
def test_write_refuses_bad_split_names_before_writing(tmp_path, splits, bad):
    with pytest.raises(DataError, match="split name"):
        write_splits(tmp_path / "muse", {"raw/forget": splits["raw/forget"], bad: []})
    assert not (tmp_path / "muse").exists()  # the good split before it was not written either


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_forget": 0}, {"n_forget": 10_001}, {"n_retain": 0}, {"n_holdout": 10_001}, {"n_forget": True},
        {"n_retain": 2.0}, {"n_holdout": "3"}, {"n_icl": -1}, {"n_icl": 101}, {"seed": "0"}, {"seed": 1.5},
        {"n_forget": 1, "n_icl": 4}, {"n_retain": 2, "n_icl": 7},
    ],
)  # fmt: skip
def test_bad_sizes_raise_one_line_config_error(kwargs):
    with pytest.raises(ConfigError) as e:
        generate(**kwargs)
    assert "\n" not in str(e.value) and "synthetic MUSE data" in str(e.value)


def test_bounds_are_inclusive_and_capacity_is_checked():
    assert len(generate(n_forget=1, n_retain=1, n_holdout=1, n_icl=3)["knowmem/retain_qa_icl"]) == 3
    with pytest.raises(ConfigError, match="distinct town names"):
        _grid(random.Random(0), ("A", "B"), ("x", "y", "z"), 2, 13, "town")
    pairs = _grid(random.Random(0), ("A", "B"), ("x", "y", "z"), 2, 12, "town")
    assert len(set(pairs)) == 12 and {b for _, _, b in pairs} == {0, 1}
    first_two = pairs[:2]
    assert len({h for h, _, _ in first_two}) == 2 and len({t for _, t, _ in first_two}) == 2


def test_qa_in_text_appends_the_sets_facts_in_knowmem_format():
    bare, with_qa = generate(qa_in_text=False), generate()
    for name in ("raw/forget", "raw/retain1", "raw/retain2", "raw/holdout"):
        lines, expect = [], set()
        for b, q in zip(bare[name], with_qa[name], strict=True):
            article, _, block = q["text"].partition("\n\n")
            assert article == b["text"]
            pairs = block.split("\n\n")
            assert len(pairs) == len(V.FACTS) and all(p.startswith("Question: ") and "\nAnswer:  " in p for p in pairs)
            lines += pairs
            _, facts = _parse_article(article)
            expect |= set(facts.values())
        # every fact of the set is asked exactly once, somewhere in the set's documents
        assert sorted(p.split("\nAnswer:  ")[1] for p in lines) == sorted(expect)
    assert with_qa["privleak/forget"] == with_qa["raw/forget"] and with_qa["privleak/retain"] == with_qa["raw/retain2"]
    # every asked forget question, with its answer, is in the forget documents only
    for qa in with_qa["knowmem/forget_qa"]:
        line = f"Question: {qa['question']}\nAnswer:  {qa['answer']}"
        assert sum(line in d["text"] for d in with_qa["raw/forget"]) == 1
        assert not any(line in d["text"] for d in with_qa["raw/retain1"] + with_qa["raw/retain2"])
    # VerbMem cuts the narrative only; the other splits are unchanged
    assert with_qa["verbmem/forget"] == bare["verbmem/forget"]
    assert with_qa["knowmem/forget_qa"] == bare["knowmem/forget_qa"]
    assert json.dumps(generate()) == json.dumps(with_qa)  # deterministic
