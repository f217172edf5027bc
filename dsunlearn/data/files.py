"""Reading data files someone else wrote: UTF-8 text (with or without a BOM, anything else named), JSON or
JSON Lines records, each error one line naming the file and line. Shared by every suite's local loader."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from dsunlearn.errors import DataError


def read_utf8(f: Path) -> str:
    """The text of a data file: UTF-8, with or without a byte-order mark; DataError naming the encoding else."""
    raw = f.read_bytes()
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):  # fmt: skip
        if raw.startswith(bom):
            raise DataError(f"{f} is {name} (it starts with a {name} byte-order mark); save it as UTF-8")
    # NUL bytes between ASCII characters: UTF-16 without a BOM (valid UTF-8 bytes, but not text)
    if b"\x00" in raw[:4096]:
        raise DataError(f"{f} is not UTF-8 text: it holds NUL bytes, as UTF-16 does; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{f} is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line} is not UTF-8 (Latin-1 / Windows-1252?); "
            "save it as UTF-8"
        ) from None


def parse_json(text: str, f: Path, line0: int):
    """json.loads of `text`, which starts at line `line0` (0-based) of `f`; DataError naming the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{f} is not valid JSON / JSON Lines (line {line0 + e.lineno}: {e.msg}); fix or regenerate it"
        ) from None
    except RecursionError:
        raise DataError(
            f"{f} (line {line0 + 1}) is nested too deeply to parse; data items are flat objects of strings "
            "(question/answer; MUSE: text, prompt/gt): fix or regenerate it"
        ) from None


def parse_records(text: str, f: Path) -> list:
    """The records of a data file's text: a JSON array, or JSON Lines (one value per non-empty line); [] for an
    empty file. Errors name the real line (JSON Lines lines are parsed one by one: json would say "line 1")."""
    if not text.strip():
        return []
    if text.lstrip().startswith("["):
        return parse_json(text, f, 0)
    return [parse_json(line, f, n) for n, line in enumerate(text.splitlines()) if line.strip()]


def check_text(text: str, what: str) -> None:
    """Nothing if the tokenizer can take `text`: JSON's "\\ud800" escapes give lone surrogates, which are not text.
    DataError "<what> holds a lone UTF-16 surrogate (\\uXXXX at character N) ..." otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{what} holds a lone UTF-16 surrogate (\\u{ord(text[e.start]):04x} at character {e.start}), which is "
            "not text; fix or remove that escape"
        ) from None
