"""Text documents -> training windows (data/documents.py): MUSE's concatenate-and-rotate cut, per-document
windows, BOS handling, labels on every predicted token; against a hand-worked example and an independent
re-statement of muse_bench's DefaultDataset on .txt files."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from dsunlearn.data.collate import IGNORE
from dsunlearn.data.documents import JOIN, adds_bos, document_windows
from dsunlearn.errors import DataError
from dsunlearn.models.tiny import train_tokenizer

TEXTS = ["The mayor of Brenmoor opened the bridge.", "Forty boats sailed from Ostrel at dawn.", "Rain."]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS * 20, 300, 128)


def _muse_bench_windows(tokens: list[int], max_len: int, bos: int | None) -> list[list[int]]:
    """muse_bench baselines/dataset.py (DefaultDataset, .txt branch), re-stated with lists."""
    if bos is not None:
        out = [[bos, *tokens[i : i + max_len - 1]] for i in range(0, len(tokens), max_len - 1)]
    else:
        out = [tokens[i : i + max_len] for i in range(0, len(tokens), max_len)]
    if len(out[-1]) < max_len:
        out[-1] = (out[-1] + out[0])[:max_len]
    return out


def test_hand_worked_concat_without_bos(tok):
    assert not adds_bos(tok)  # the tiny tokenizer adds no BOS to plain text
    ids = tok(JOIN.join(TEXTS), add_special_tokens=False).input_ids
    wins = document_windows(tok, TEXTS, 8, "concat")
    assert [w.input_ids for w in wins[:-1]] == [ids[i : i + 8] for i in range(0, 8 * (len(wins) - 1), 8)]
    tail = ids[8 * (len(wins) - 1) :]
    assert wins[-1].input_ids == (tail + ids[:8])[:8]  # filled up from the first window
    assert all(len(w.input_ids) == 8 for w in wins)
    for w in wins:  # every predicted token is a label; position 0 is predicted by nothing
        assert w.labels == [IGNORE, *w.input_ids[1:]]


@pytest.mark.parametrize("max_len", [5, 8, 13, 64])
def test_concat_equals_muse_bench_with_and_without_bos(tok, max_len):
    ids = tok(JOIN.join(TEXTS), add_special_tokens=False).input_ids
    got = [w.input_ids for w in document_windows(tok, TEXTS, max_len, "concat")]
    assert got == _muse_bench_windows(ids, max_len, None)


def test_bos_tokenizer_prepends_bos_to_every_window(tmp_path, tok):
    # The same BPE with a post-processor that adds BOS, as Llama's does.
    from tokenizers import processors

    tok.save_pretrained(tmp_path)
    bos_tok = AutoTokenizer.from_pretrained(tmp_path)
    bos_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos_tok.bos_token} $A", special_tokens=[(bos_tok.bos_token, bos_tok.bos_token_id)]
    )
    assert adds_bos(bos_tok)
    ids = bos_tok(JOIN.join(TEXTS), add_special_tokens=False).input_ids
    got = [w.input_ids for w in document_windows(bos_tok, TEXTS, 9, "concat")]
    assert got == _muse_bench_windows(ids, 9, bos_tok.bos_token_id)
    assert all(w[0] == bos_tok.bos_token_id for w in got)


def test_document_mode_never_crosses_documents(tok):
    wins = document_windows(tok, TEXTS, 6, "document")
    per_doc = [tok(t, add_special_tokens=False).input_ids for t in TEXTS]
    expect = [d[i : i + 6] for d in per_doc for i in range(0, len(d), 6)]
    assert [w.input_ids for w in wins] == expect


def test_bad_inputs_are_one_line_errors(tok):
    with pytest.raises(DataError, match="no documents"):
        document_windows(tok, [], 8)
    with pytest.raises(DataError, match="no tokens"):
        document_windows(tok, ["", ""], 8, "document")
    with pytest.raises(DataError, match="max_length"):
        document_windows(tok, TEXTS, 1)
