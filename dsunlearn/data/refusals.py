"""Refusal answers ("I don't know"): the alternate answer of each forget question for IdkNLL and IdkDPO.

The sentences: ``data.idk_file``, a UTF-8 text file with one sentence per non-empty line (each line stripped of
surrounding white space, the way open-unlearning reads its ``idk.jsonl``, which can be given as is), or by
default the list shipped with dsunlearn, ``dsunlearn/data/refusals.txt`` (written for this project, in the
same format).

Which sentence forget item i gets depends on ``run.seed`` and i only:

    choice(i) = int.from_bytes(sha256(b"dsunlearn-refusal:<seed>:<i>")[:8], "big") mod n

a fixed, platform-independent hash, so every rank of any world size, a resumed run and the offline G-effect
(whose probe is the first items of the same split) give each item the same refusal; items draw independently
and uniformly from the n sentences. The choice is fixed for the whole run, where open-unlearning draws a fresh
one (``torch.randint``) every time an item is loaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dsunlearn.data.files import read_utf8
from dsunlearn.errors import DataError

SHIPPED = Path(__file__).with_name("refusals.txt")


def read_refusals(path: str | os.PathLike[str] | None = None, key: str = "data.idk_file") -> list[str]:
    """The refusal sentences of `path` (None: the shipped list), in file order.

    Raises a one-line DataError naming `key` and the file when it is missing, a directory, unreadable, not UTF-8,
    holds no sentence, or has a line that is a JSON record rather than a sentence (`{...}` / `[...]`).
    """
    f = SHIPPED if path is None else Path(path)
    how = f"one refusal sentence per line, as plain UTF-8 text (or {key}=null for dsunlearn's list)"
    if not f.exists():
        raise DataError(f"{key}: '{f}' does not exist; give a text file with {how}")
    if not f.is_file():
        raise DataError(f"{key}: '{f}' is not a file; give a text file with {how}")
    try:
        text = read_utf8(f)
    except OSError as e:
        raise DataError(f"{key}: cannot read '{f}' ({e.strerror or type(e).__name__}); give a readable file") from None
    sentences = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith(("{", "[")):
            raise DataError(f"{f} line {n} ({key}) is a JSON record ({s[:40]!r}), not a sentence; the file holds {how}")
        if s:
            sentences.append(s)
    if not sentences:
        raise DataError(f"{f} ({key}) holds no refusal sentence (it is empty or blank); write {how}")
    return sentences


def refusal_index(seed: int, item: int, n: int) -> int:
    """Which of `n` refusal sentences forget item `item` gets under run seed `seed` (see the module docstring).

    Example: the same (seed, item) always gives the same index in [0, n), on any machine and world size.
    """
    digest = hashlib.sha256(f"dsunlearn-refusal:{seed}:{item}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def refusal_items(items: list[dict], refusals: list[str], seed: int) -> list[dict]:
    """Each QA item's question with its refusal as the answer: ``[{"question", "answer"}]``, one per item, in order."""
    return [
        {"question": item["question"], "answer": refusals[refusal_index(seed, i, len(refusals))]}
        for i, item in enumerate(items)
    ]
