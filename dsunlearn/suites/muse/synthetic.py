"""A seeded, offline generator of fictional news articles in exactly the MUSE-News schema (Shi et al. 2024).

MUSE (swj0419/muse_bench, hub `muse-bench/MUSE-News`) unlearns BBC news articles and asks six questions of the
result; its hub dataset has one config per question. This is a tiny stand-in for tests and `dsunlearn demo`
that a 2M-parameter model (a ~1.4k-token byte-level BPE trained on this corpus, context 256) memorises in about
a minute of CPU training: every article is one of four story kinds (`synthetic_vocab.STORY_KINDS`: an
election, a bridge, a fair, a factory) about 60 words long, one fixed template per kind with four facts
filled in, each a short answer (1-2 words) that occurs in no other article of the corpus:

    town (an invented word), person (invented first name + surname), org (invented word + the kind's
    suffix, e.g. "Velcor Party"), number (an integer; no other digits anywhere)

plus a few filler slots (weekday, month, job, ...) from short lists. Every entity is used once in the whole
corpus, so the articles and the four sets are disjoint in every fact. The splits, `SPLITS`, are named
"<hub config>/<hub split>" and hold MUSE's fields:

- `raw/forget`, `raw/retain1`, `raw/retain2`, `raw/holdout`: n_forget, n_retain, n_retain, n_holdout articles
  (`{"text"}`), four disjoint sets. The holdout is never trained on and comes from the same distribution.
- `verbmem/forget`: each forget article cut at a word boundary at about 40% of its words (round half up,
  at least one word on each side), `{"prompt", "gt"}` with prompt + " " + gt == text (open-unlearning joins
  them with one space).
- `knowmem/forget_qa`: one question per forget article about one of its facts (a seeded choice), the answer
  the fact verbatim as in the article; `knowmem/forget_qa_icl`: n_icl questions about other facts of the
  forget articles, never one asked in forget_qa (the in-context examples must not give answers away).
  `knowmem/retain_qa` and `knowmem/retain_qa_icl` the same over retain2. `{"question", "answer"}`; each
  question has one fixed wording per (story kind, fact) and names another fact of its article (the town, or
  the person when the town is asked), so it identifies its article.
- `privleak/forget`, `privleak/retain`, `privleak/holdout`: the texts of forget, retain2 and holdout
  (`{"text"}`), the members and non-members of MUSE's membership-inference test.

A real MUSE target is a pre-trained Llama that answers "Question: ... Answer:" prompts from what it read; the
tiny model has no pre-training, so by default (`qa_in_text`) each document ends with four KnowMem
question/answer pairs ("Question: {q}\nAnswer:  {a}", two spaces: see `_qa_line`; blank-line separated) about
facts of its set's articles dealt at random (`_texts`; every fact of the set once): the target learns the
format and the answers from the forget and retain documents, the retrained model only from the retain ones.

Entities: each name is a head syllable + tail syllable taken in a Latin-square order over seeded
permutations (`_grid`), so the first min(heads, tails) articles share no syllable at all and every name is
distinct up to the product of the lists; towns and organisation words add a middle syllable only past
heads x tails (`synthetic_vocab.MIDS`). Every space holds at least 40 000 names (the largest corpus the
bounds allow); a corpus that does not fit raises `ConfigError`.

Determinism: one `random.Random(seed)` drives everything (no global RNG, no set iteration), so a seed gives
byte-identical JSON on every run and platform.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

from dsunlearn.errors import ConfigError, DataError
from dsunlearn.fsutil import atomic_write_text
from dsunlearn.suites.muse import synthetic_vocab as V

__all__ = ["SPLITS", "N_MAX", "N_ICL_MAX", "generate", "write_splits", "corpus"]

SPLITS: tuple[str, ...] = (
    "raw/forget", "raw/retain1", "raw/retain2", "raw/holdout", "verbmem/forget",
    "knowmem/forget_qa", "knowmem/forget_qa_icl", "knowmem/retain_qa", "knowmem/retain_qa_icl",
    "privleak/forget", "privleak/retain", "privleak/holdout",
)  # fmt: skip
N_MAX = 10_000  # articles per set
N_ICL_MAX = 100  # in-context QA examples per knowmem ICL split
_SMALL_NUMBERS = range(100, 1000)  # three digits while they suffice (fewer tokens), then up to five
_LARGE_NUMBERS = range(100, 100_000)

Item = dict[str, str]


class _Article(NamedTuple):
    kind: V.StoryKind
    facts: dict[str, str]  # V.FACTS -> its value as written in the text
    text: str


def _check(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"synthetic MUSE data: {name}={value!r} must be an int in [{low}, {high}]; pass one in range")


def _grid(rng: random.Random, heads: Sequence[str], tails: Sequence[str], n_blocks: int, n: int, what: str):
    """`n` distinct (head, tail, block) triples, block in [0, n_blocks), in a Latin-square order.

    Within a block, entity k = q * H + r gets head r and tail (r + q) mod T of seeded permutations: distinct
    pairs for all H x T entities of the block, and no part shared among the first min(H, T).
    """
    hs, ts = rng.sample(list(heads), len(heads)), rng.sample(list(tails), len(tails))
    per_block = len(hs) * len(ts)
    if n > per_block * n_blocks:
        raise ConfigError(
            f"synthetic MUSE data: {n} articles need {n} distinct {what} names but the vocabulary has "
            f"{per_block * n_blocks}; lower n_forget, n_retain or n_holdout"
        )
    out = []
    for k in range(n):
        block, j = divmod(k, per_block)
        q, r = divmod(j, len(hs))
        out.append((hs[r], ts[(r + q) % len(ts)], block))
    return out


def _entities(rng: random.Random, n: int) -> list[dict[str, str]]:
    """The fact values of `n` articles (without the organisation suffix, which depends on the story kind)."""
    towns = [h + V.MIDS[b] + t for h, t, b in _grid(rng, V.TOWN_HEADS, V.TOWN_TAILS, len(V.MIDS), n, "town")]
    orgs = [h + V.MIDS[b] + t for h, t, b in _grid(rng, V.ORG_HEADS, V.ORG_TAILS, len(V.MIDS), n, "organisation")]
    firsts = [h + t for h in V.FIRST_HEADS for t in V.FIRST_TAILS]
    surnames = [h + t for h in V.SURNAME_HEADS for t in V.SURNAME_TAILS]
    people = [f"{f} {s}" for f, s, _ in _grid(rng, firsts, surnames, 1, n, "person")]
    pool = _SMALL_NUMBERS if n <= len(_SMALL_NUMBERS) else _LARGE_NUMBERS
    if n > len(pool):
        raise ConfigError(f"synthetic MUSE data: {n} articles need {n} distinct numbers but there are {len(pool)}")
    numbers = [str(x) for x in rng.sample(pool, n)]
    return [
        {"town": t, "person": p, "org": o, "number": x} for t, p, o, x in zip(towns, people, orgs, numbers, strict=True)
    ]


def _article(rng: random.Random, entity: dict[str, str]) -> _Article:
    """One article: a seeded story kind and fillers around the entity's four facts."""
    kind = rng.choice(V.STORY_KINDS)
    facts = {**entity, "org": f"{entity['org']} {kind.org_suffix}"}
    fillers = {slot: rng.choice(V.FILLERS[slot]) for slot in kind.fillers}
    return _Article(kind, facts, kind.article.format(**facts, **fillers))


def _verbmem(text: str) -> Item:
    """Prompt = the first round(0.4 n) of the n words (half up, >= 1), gt = the rest (>= 1 word)."""
    words = text.split(" ")
    cut = min(max((4 * len(words) + 5) // 10, 1), len(words) - 1)
    return {"prompt": " ".join(words[:cut]), "gt": " ".join(words[cut:])}


def _question(article: _Article, fact: str) -> Item:
    template = article.kind.questions[V.FACTS.index(fact)]
    return {"question": template.format(**article.facts), "answer": article.facts[fact]}


def _knowmem(rng: random.Random, articles: list[_Article], n_icl: int) -> tuple[list[Item], list[Item]]:
    """One question per article (a seeded fact) and `n_icl` about facts not asked, in a seeded order."""
    asked = [rng.choice(V.FACTS) for _ in articles]
    unasked = [(a, f) for a, fact in zip(articles, asked, strict=True) for f in V.FACTS if f != fact]
    icl = rng.sample(unasked, n_icl)  # the caller checked n_icl <= len(unasked)
    return [_question(a, f) for a, f in zip(articles, asked, strict=True)], [_question(a, f) for a, f in icl]


def _qa_line(article: _Article, fact: str) -> str:
    # Two spaces after "Answer:": KnowMem's prompt ends with "Answer: ", whose trailing space a byte-level BPE
    # keeps as a token of its own, so the answer must follow that token here too (" Camna" after " "), else
    # the model never sees the prompt's last token followed by an answer.
    q = _question(article, fact)
    return f"Question: {q['question']}\nAnswer:  {q['answer']}"


def _texts(articles: list[_Article], qa_in_text: bool, seed: int) -> list[Item]:
    """The documents of one set: each article's text, then (with `qa_in_text`) four question/answer pairs in
    KnowMem's format about facts of the set's articles, dealt at random (their own seeded RNG, so the other
    splits do not move): every fact of the set is asked once, mostly after another article's text and other
    articles' questions, as KnowMem asks it after in-context examples about other articles."""
    if not qa_in_text:
        return [{"text": a.text} for a in articles]
    lines = [_qa_line(a, f) for a in articles for f in V.FACTS]
    random.Random(f"muse-qa-{seed}-{len(articles)}-{articles[0].text}").shuffle(lines)
    per = len(V.FACTS)
    return [{"text": a.text + "\n\n" + "\n\n".join(lines[i * per : (i + 1) * per])} for i, a in enumerate(articles)]


def generate(
    seed: int = 0, n_forget: int = 16, n_retain: int = 16, n_holdout: int = 16, n_icl: int = 3, qa_in_text: bool = True
) -> dict[str, list[dict]]:
    """Every MUSE split (`SPLITS`, in that order) for one seed; see the module docstring for the layout.

    Sizes: raw/forget, verbmem/forget, knowmem/forget_qa, privleak/forget = n_forget; raw/retain1, raw/retain2,
    knowmem/retain_qa, privleak/retain = n_retain; raw/holdout, privleak/holdout = n_holdout; the two ICL splits
    n_icl. Raises `ConfigError` for a size out of bounds or one that the vocabulary cannot fill.

    `qa_in_text`: every document (raw and privleak texts) ends with its four facts as KnowMem question/answer
    pairs (`_texts`); the VerbMem prompt and gt cut the article's narrative only.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"synthetic MUSE data: seed={seed!r} must be an int; pass an integer seed")
    for name, value in (("n_forget", n_forget), ("n_retain", n_retain), ("n_holdout", n_holdout)):
        _check(name, value, 1, N_MAX)
    _check("n_icl", n_icl, 0, N_ICL_MAX)
    unasked = len(V.FACTS) - 1  # facts per article that its knowmem question leaves for the ICL examples
    for name, n in (("n_forget", n_forget), ("n_retain", n_retain)):
        if n_icl > unasked * n:
            raise ConfigError(
                f"synthetic MUSE data: n_icl={n_icl} needs {n_icl} unasked facts but {name}={n} articles have "
                f"{unasked * n}; lower n_icl or raise {name}"
            )
    rng = random.Random(seed)
    sizes = (n_forget, n_retain, n_retain, n_holdout)
    entities = _entities(rng, sum(sizes))
    articles = [_article(rng, e) for e in entities]
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    forget, retain1, retain2, holdout = (articles[lo:hi] for lo, hi in pairwise(bounds))
    forget_qa, forget_icl = _knowmem(rng, forget, n_icl)
    retain_qa, retain_icl = _knowmem(rng, retain2, n_icl)
    out = {
        "raw/forget": _texts(forget, qa_in_text, seed),
        "raw/retain1": _texts(retain1, qa_in_text, seed),
        "raw/retain2": _texts(retain2, qa_in_text, seed),
        "raw/holdout": _texts(holdout, qa_in_text, seed),
        "verbmem/forget": [_verbmem(a.text) for a in forget],
        "knowmem/forget_qa": forget_qa,
        "knowmem/forget_qa_icl": forget_icl,
        "knowmem/retain_qa": retain_qa,
        "knowmem/retain_qa_icl": retain_icl,
        "privleak/forget": _texts(forget, qa_in_text, seed),
        "privleak/retain": _texts(retain2, qa_in_text, seed),
        "privleak/holdout": _texts(holdout, qa_in_text, seed),
    }
    return {name: out[name] for name in SPLITS}


def _split_path(out: Path, name: str) -> Path:
    """`<out>/<config>/<split>.json` for a split named "<config>/<split>"; each part a plain file name."""
    parts = name.split("/")
    if len(parts) != 2 or any(not p or p.startswith(".") or Path(p).name != p or "\\" in p for p in parts):
        raise DataError(
            f"synthetic MUSE data: split name {name!r} is not '<config>/<split>' with plain names; rename the split"
        )
    return out / parts[0] / f"{parts[1]}.json"


def write_splits(out_dir: str | os.PathLike[str], splits: Mapping[str, list[dict]]) -> None:
    """Write `<out_dir>/<config>/<split>.json` per split, a JSON array (UTF-8, one item per line).

    Every name is checked and every split serialised before the first file is written, so a bad split
    writes nothing; each file goes to a temp file in its folder, fsynced and `os.replace`d, so a reader never
    sees a half-written split.
    """
    out = Path(out_dir)
    files = []
    for name, items in splits.items():
        body = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
        files.append((_split_path(out, name), f"[\n{body}\n]\n" if items else "[]\n"))
    for path, text in files:
        atomic_write_text(path, text)


def corpus(splits: Mapping[str, list[dict]]) -> list[str]:
    """Every distinct string of every split (texts, prompts, continuations, questions, answers), in split order.

    For training a tokenizer that must cover them all. Duplicates (privleak repeats raw, verbmem cuts it) are
    kept once, so that no split is over-weighted.
    """
    seen: dict[str, None] = {}  # an insertion-ordered set
    for items in splits.values():
        for item in items:
            for value in item.values():
                if isinstance(value, str):
                    seen.setdefault(value, None)
    return list(seen)
