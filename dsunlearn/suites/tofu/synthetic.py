"""A seeded, offline generator of fictitious authors in exactly the TOFU schema (Maini et al. 2024).

TOFU (`locuslab/TOFU`) has 200 invented authors x 20 QA pairs. This is a tiny stand-in that a 2M-parameter
model learns in about 100 s on 2 CPU cores: by default 40 authors x 10 question types (one per fact:
birthplace, birth date, genre, award, father's job, mother's job, first book, later book, theme, trait),
10 "real authors" x 4 questions and 40 "world facts". It returns every TOFU config name:

- `full`; `forget01/05/10` (whole authors taken from the END of the author list, nested
  forget01 ⊂ forget05 ⊂ forget10 as in TOFU); `retain99/95/90` (the complement, in author order).
  Fields: `question`, `answer`.
- `forget01/05/10_perturbed` and `retain_perturbed` (the first `n_retain_perturbed` items of retain90, so
  from authors in no forget set and valid for every forget split). Fields: `question`, `answer`,
  `paraphrased_answer`, `paraphrased_question`, `perturbed_answer` (list of `n_perturbed` str).
- `real_authors`, `world_facts` (`question`, `answer`) and their `_perturbed` versions (adding
  `perturbed_answer`). As in TOFU there is no paraphrase there: the truth ratio uses `answer` as its base,
  so their perturbed answers use the answer's own template. We deliberately do not add a
  `paraphrased_answer` copy, so that the evaluation code is exercised on TOFU's real schema.
- `holdout01/05/10` (`question`, `answer`): the non-members of membership inference, k(p) authors each (as
  many as forget{p}), nested like the forget sets. They are extra fictitious authors, in no other split and in
  no fine-tuning set, with the same question types and templates; their names (first name and surname) and
  book titles are used by no other author, their other facts come from the same vocabularies.

Answer templates: each author question type has three (`synthetic_vocab.QuestionType.answers`). `answer`
always uses template A, so the model learns one wording per question type; `paraphrased_answer` uses B or C
(a seeded choice per item); every `perturbed_answer` uses the paraphrase's template with a wrong fact of the
same kind (distinct from the true one, from each other and from the author's other facts), so the truth
ratio measures the fact, not the wording.

Forget sizes: k(p) = max(1, floor(p * n_authors / 100 + 1/2)) authors for p = 1, 5, 10, in exact integer
arithmetic (round half up, not Python's banker's `round`). 40 authors -> 1, 2, 4; 200 -> 2, 10, 20 (TOFU).

Determinism: one `random.Random(seed)` drives everything (no global RNG, no set iteration), so a seed gives
byte-identical JSON on every run and platform. The holdout authors are drawn from a second generator seeded
from the same seed (`_holdout_rng`) after the others: the splits that existed before holdouts did are the same
bytes as they were for every seed.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from dsunlearn.errors import ConfigError, DataError
from dsunlearn.fsutil import atomic_write_text
from dsunlearn.suites.tofu import synthetic_vocab as V
from dsunlearn.suites.tofu.data import HUB_SPLITS

__all__ = ["SPLITS", "FORGET_PERCENTS", "forget_author_counts", "generate", "write_splits", "corpus"]

FORGET_PERCENTS = (1, 5, 10)
SPLITS = HUB_SPLITS  # every config of the hub dataset, in its order (dsunlearn.suites.tofu.data)
_PLAIN_FIELDS = ("question", "answer")

Item = dict[str, object]


def forget_author_counts(n_authors: int) -> dict[int, int]:
    """Number of forget authors per percentage: {1: k01, 5: k05, 10: k10}, monotone, each >= 1."""
    return {p: max(1, (p * n_authors + 50) // 100) for p in FORGET_PERCENTS}


def _check(name: str, value: int, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"synthetic data: {name}={value!r} must be an int {bound}; change data.synthetic.{name}")


def _names(rng: random.Random, n: int, taken: Sequence[str] = ()) -> list[str]:
    """`n` full names, no first name and no surname used twice (a shared token would couple two authors), and
    none of the first names or surnames of the `taken` full names."""
    used = {part for name in taken for part in name.split(" ")}
    firsts = [f for f in (h + t.lower() for h in V.FIRST_HEADS for t in V.FIRST_TAILS) if f not in used]
    surnames = [s for s in (h + t for h in V.SURNAME_HEADS for t in V.SURNAME_TAILS) if s not in used]
    return [f"{f} {s}" for f, s in zip(rng.sample(firsts, n), rng.sample(surnames, n), strict=True)]


def _holdout_rng(seed: int) -> random.Random:
    """The holdout authors' generator: its own stream (a string seed is hashed with SHA-512, the same on every
    platform), so drawing them leaves the main generator, and every other split, as it was."""
    return random.Random(f"tofu-holdout-{seed}")


def _max_authors(n_names: int, n_titles: int, n_real_authors: int) -> int:
    """The most fictitious authors whose names and two book titles each fit the vocabulary together with the
    real authors' (one name and one title each) and the holdout authors' (k(10) more authors)."""

    def fits(n: int) -> bool:
        total = n + forget_author_counts(n)[10]
        return total + n_real_authors <= n_names and 2 * total + n_real_authors <= n_titles

    return max((n for n in range(2, n_names + 1) if fits(n)), default=1)


def _title_space() -> list[str]:
    return [f'"The {a} {n}"' for a in V.TITLE_ADJECTIVES for n in V.TITLE_NOUNS]


def _birth_date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(V.MONTHS)} {rng.randint(*V.BIRTH_YEARS)}"


def _wrong(rng: random.Random, pool: Sequence[str], exclude: Sequence[str], k: int, what: str) -> list[str]:
    """`k` distinct values of `pool` that are none of `exclude` (the true fact and the subject's other facts)."""
    candidates = [v for v in pool if v not in exclude]
    if len(candidates) < k:
        raise ConfigError(
            f"synthetic data: n_perturbed={k} but the {what!r} vocabulary has only {len(candidates)} wrong "
            f"values; lower data.synthetic.n_perturbed"
        )
    return rng.sample(candidates, k)


def _wrong_dates(rng: random.Random, true: str, k: int) -> list[str]:
    out: list[str] = []
    while len(out) < k:  # ~20k possible dates: rejection terminates at once in practice
        d = _birth_date(rng)
        if d != true and d not in out:
            out.append(d)
    return out


def _qa(qt: V.QuestionType, name: str, true: str, wrong: list[str], para: int, paraphrase: bool) -> Item:
    """One TOFU item with perturbed fields; `para` indexes the paraphrase (and perturbed) template."""
    item: Item = {"question": qt.question.format(name=name), "answer": qt.answers[0].format(name=name, x=true)}
    if paraphrase:
        item["paraphrased_answer"] = qt.answers[para].format(name=name, x=true)
        item["paraphrased_question"] = qt.paraphrased_question.format(name=name)
    item["perturbed_answer"] = [qt.answers[para].format(name=name, x=w) for w in wrong]
    return item


def _author_items(rng: random.Random, name: str, books: tuple[str, str], titles: list[str], k: int) -> list[Item]:
    """The 10 perturbed-schema items of one fictitious author, in `AUTHOR_QUESTION_TYPES` order."""
    places = [f"{city}, {country}" for city, country in V.BIRTH_CITIES]
    father, mother = rng.sample(V.JOBS, 2)
    facts = {
        "birthplace": rng.choice(places),
        "birth_date": _birth_date(rng),
        "genre": rng.choice(V.GENRES),
        "award": rng.choice(V.AWARDS),
        "father_job": father,
        "mother_job": mother,
        "first_book": books[0],
        "later_book": books[1],
        "theme": rng.choice(V.THEMES),
        "trait": rng.choice(V.TRAITS),
    }
    pools: dict[str, Sequence[str]] = {
        "birthplace": places,
        "genre": V.GENRES,
        "award": V.AWARDS,
        "father_job": V.JOBS,
        "mother_job": V.JOBS,
        "first_book": titles,
        "later_book": titles,
        "theme": V.THEMES,
        "trait": V.TRAITS,
    }
    own = list(facts.values())  # never offer the author's mother's job as the father's, nor book 1 as book 2
    items = []
    for qt in V.AUTHOR_QUESTION_TYPES:
        true = facts[qt.key]
        if qt.key == "birth_date":
            wrong = _wrong_dates(rng, true, k)
        else:
            wrong = _wrong(rng, pools[qt.key], own, k, qt.key)
        items.append(_qa(qt, name, true, wrong, para=rng.choice((1, 2)), paraphrase=True))
    return items


def _real_author_items(rng: random.Random, name: str, book: str, titles: list[str], k: int) -> list[Item]:
    """The 4 items of one "real author" (stand-in for knowledge a pretrained model already has)."""
    countries = sorted({country for _, country in V.BIRTH_CITIES})
    pools: dict[str, Sequence[str]] = {
        "country": countries,
        "famous_book": titles,
        "movement": V.MOVEMENTS,
        "century": V.CENTURIES,
    }
    facts = {key: (book if key == "famous_book" else rng.choice(pool)) for key, pool in pools.items()}
    return [
        _qa(qt, name, facts[qt.key], _wrong(rng, pools[qt.key], [facts[qt.key]], k, qt.key), 0, False)
        for qt in V.REAL_AUTHOR_QUESTION_TYPES
    ]


def _world_fact_items(rng: random.Random, n: int, k: int) -> list[Item]:
    """`n` short world facts, fact types in round robin, each (type, subject) asked once."""
    spec: dict[str, tuple[Sequence[str], Sequence[str]]] = {  # type -> (subjects, values)
        "capital": (V.WORLD_COUNTRIES, V.WORLD_CAPITALS),
        "fruit_colour": (V.WORLD_FRUITS, V.COLOURS),
        "currency": (V.WORLD_COUNTRIES, V.CURRENCIES),
        "animal": (V.WORLD_COUNTRIES, V.ANIMALS),
        "river": (V.WORLD_CITIES, V.RIVERS),
    }
    types = V.WORLD_FACT_TYPES
    counts = {qt.key: len(range(i, n, len(types))) for i, qt in enumerate(types)}
    for key, c in counts.items():
        # capitals are unique per country, so both lists bound them; other values may repeat
        cap = min(len(spec[key][0]), len(V.WORLD_CAPITALS)) if key == "capital" else len(spec[key][0])
        if c > cap:
            raise ConfigError(
                f"synthetic data: n_world_facts={n} needs {c} {key!r} subjects but the vocabulary has {cap}; "
                f"lower data.synthetic.n_world_facts"
            )
    subjects = {key: rng.sample(spec[key][0], c) for key, c in counts.items()}
    capitals = rng.sample(V.WORLD_CAPITALS, counts["capital"])  # one capital per country, never shared
    items = []
    for i in range(n):
        qt = types[i % len(types)]
        subject, values = subjects[qt.key][i // len(types)], spec[qt.key][1]
        true = capitals[i // len(types)] if qt.key == "capital" else rng.choice(values)
        items.append(_qa(qt, subject, true, _wrong(rng, values, [true], k, qt.key), 0, False))
    return items


def _plain(items: list[Item]) -> list[Item]:
    return [{f: it[f] for f in _PLAIN_FIELDS} for it in items]


def _copy(items: list[Item]) -> list[Item]:
    """Fresh dicts and lists per split, so that a caller editing one split cannot change another."""
    return [{f: list(v) if isinstance(v, list) else v for f, v in it.items()} for it in items]


def _holdout_splits(
    seed: int, n_authors: int, names: list[str], books: list[str], titles: list[str], n_perturbed: int
) -> dict[str, list[Item]]:
    """holdout01/05/10: k(10) authors beyond every other (names and books of none of them, `names`/`books`),
    holdout{p} the last k(p) of them (nested, as the forget sets are)."""
    rng = _holdout_rng(seed)
    counts = forget_author_counts(n_authors)
    hold_names = _names(rng, counts[10], taken=names)
    taken = set(books)
    hold_books = rng.sample([t for t in titles if t not in taken], 2 * counts[10])
    items: list[Item] = []
    for a, name in enumerate(hold_names):
        items += _author_items(rng, name, (hold_books[2 * a], hold_books[2 * a + 1]), titles, n_perturbed)
    per_author = len(V.AUTHOR_QUESTION_TYPES)
    return {f"holdout{p:02d}": _plain(items[len(items) - k * per_author :]) for p, k in counts.items()}


def generate(
    seed: int = 0,
    n_authors: int = 40,
    n_world_facts: int = 40,
    n_real_authors: int = 10,
    n_perturbed: int = 4,
    n_retain_perturbed: int = 40,
) -> dict[str, list[dict]]:
    """Every TOFU split (`SPLITS`, in that order) for one seed; see the module docstring for the layout.

    Sizes: full = 10 * n_authors; forgetXX = holdoutXX = 10 * k(XX) (`forget_author_counts`); retainYY =
    full - forgetXX; retain_perturbed = min(n_retain_perturbed, |retain90|); real_authors = 4 * n_real_authors;
    world_facts = n_world_facts. Raises `ConfigError` when a size does not fit the vocabulary.
    """
    titles = _title_space()
    n_names = len(V.FIRST_HEADS) * len(V.FIRST_TAILS)  # surnames: as many
    _check("n_real_authors", n_real_authors, 0, n_names)
    _check("n_authors", n_authors, 2, _max_authors(n_names, len(titles), n_real_authors))
    _check("n_world_facts", n_world_facts, 0)
    _check("n_perturbed", n_perturbed, 1)
    _check("n_retain_perturbed", n_retain_perturbed, 0)
    rng = random.Random(seed)
    names = _names(rng, n_authors + n_real_authors)
    books = rng.sample(titles, 2 * n_authors + n_real_authors)  # every author's books are unique titles

    rich: list[Item] = []
    for a in range(n_authors):
        rich += _author_items(rng, names[a], (books[2 * a], books[2 * a + 1]), titles, n_perturbed)
    real: list[Item] = []
    for r in range(n_real_authors):
        real += _real_author_items(rng, names[n_authors + r], books[2 * n_authors + r], titles, n_perturbed)
    world = _world_fact_items(rng, n_world_facts, n_perturbed)

    per_author = len(V.AUTHOR_QUESTION_TYPES)
    out: dict[str, list[Item]] = {"full": _plain(rich)}
    for p, k in forget_author_counts(n_authors).items():
        cut = (n_authors - k) * per_author  # forget authors are the LAST k, as in TOFU
        out[f"forget{p:02d}"] = _plain(rich[cut:])
        out[f"retain{100 - p:02d}"] = _plain(rich[:cut])
        out[f"forget{p:02d}_perturbed"] = _copy(rich[cut:])
    retain90 = rich[: (n_authors - forget_author_counts(n_authors)[10]) * per_author]
    out["retain_perturbed"] = _copy(retain90[:n_retain_perturbed])
    out["real_authors"] = _plain(real)
    out["real_authors_perturbed"] = _copy(real)
    out["world_facts"] = _plain(world)
    out["world_facts_perturbed"] = _copy(world)
    out.update(_holdout_splits(seed, n_authors, names, books, titles, n_perturbed))
    return {name: out[name] for name in SPLITS}


def write_splits(out_dir: str | os.PathLike[str], splits: Mapping[str, list[dict]]) -> list[Path]:
    """Write `<out_dir>/<split>.json` per split, JSON Lines (one object per line, UTF-8) as in the hub repo.

    Each file is written to a temp file in `out_dir`, fsynced and `os.replace`d, so a reader never sees a
    half-written split. Returns the paths in `splits` order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, items in splits.items():
        if not name or Path(name).name != name or name.startswith("."):
            raise DataError(f"synthetic data: split name {name!r} is not a plain file name; rename the split")
        lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        paths.append(atomic_write_text(out / f"{name}.json", lines))
    return paths


def corpus(splits: Mapping[str, list[dict]]) -> Iterator[str]:
    """Every distinct question, answer, paraphrase and perturbed answer, in split order (tokenizer training).

    Duplicates (each item appears in several splits) are yielded once so that no split is over-weighted.
    """
    seen: set[str] = set()
    for items in splits.values():
        for item in items:
            for value in item.values():
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str) and text not in seen:
                        seen.add(text)
                        yield text
