"""Prompt formatting and answer-only labels."""

import pytest
import torch

from dsunlearn.data.collate import IGNORE, encode_qa, format_prompt, pad_batch
from dsunlearn.errors import DataError


def test_chat_template_and_labels_cover_answer_plus_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    text = format_prompt(tok, "Where was Ann born?")
    assert text == "<|bos|><|user|>Where was Ann born?<|assistant|>"
    enc = encode_qa(tok, "Where was Ann born?", "In Paris.", max_length=64)
    p = tok(text, add_special_tokens=False)["input_ids"]  # the template writes BOS itself
    assert enc.n_prompt == len(p)
    assert enc.input_ids[: len(p)] == p and p[0] == tok.bos_token_id and p.count(tok.bos_token_id) == 1
    answer = [t for t in enc.labels if t != IGNORE]
    assert answer == enc.input_ids[len(p) :]
    assert answer[-1] == tok.eos_token_id
    assert tok.decode(answer[:-1]) == "In Paris."
    assert all(t == IGNORE for t in enc.labels[: len(p)])


def test_answer_tokens_do_not_depend_on_question(tiny_tokenizer):
    a = encode_qa(tiny_tokenizer, "Q one?", "The same answer.", 64)
    b = encode_qa(tiny_tokenizer, "A different, longer question?", "The same answer.", 64)
    assert [t for t in a.labels if t != IGNORE] == [t for t in b.labels if t != IGNORE]


def test_plain_template_without_chat_template(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    assert format_prompt(tok, "Why?") == "Question: Why?\nAnswer: "
    # Tokenized once: the prompt's trailing space goes with the answer's first word, not a lone 'Ġ' token.
    enc = encode_qa(tok, "Why?", "Because.", 64)
    assert enc.input_ids[:-1] == tok("Question: Why?\nAnswer: Because.")["input_ids"]
    assert tok.decode(enc.input_ids[: enc.n_prompt]) == "Question: Why?\nAnswer:"
    assert tok.decode(enc.input_ids[enc.n_prompt : -1]) == " Because."
    assert (
        enc.labels[: enc.n_prompt] == [IGNORE] * enc.n_prompt
        and enc.labels[enc.n_prompt :] == enc.input_ids[enc.n_prompt :]
    )


def test_too_long_refuses_or_truncates(tiny_tokenizer):
    long = "word " * 80
    with pytest.raises(DataError, match="longer than data.max_length=32.*data.truncation=truncate"):
        encode_qa(tiny_tokenizer, "Q?", long, 32, "refuse", where="split 'x' item 3")
    with pytest.warns(UserWarning, match="truncated"):
        enc = encode_qa(tiny_tokenizer, "Q?", long, 32, "truncate", where="split 'x' item 3")
    assert len(enc.input_ids) == 32
    with pytest.raises(DataError):  # a prompt that alone exceeds the limit cannot be truncated sensibly
        encode_qa(tiny_tokenizer, long, "a", 16, "truncate")


def test_padding_right_and_left(tiny_tokenizer):
    e1 = encode_qa(tiny_tokenizer, "Q?", "A.", 64)
    e2 = encode_qa(tiny_tokenizer, "A longer question here?", "A longer answer here.", 64)
    for side in ("right", "left"):
        b = pad_batch([e1, e2], pad_id=0, side=side)
        n1 = len(e1.input_ids)
        assert b["attention_mask"][0].sum() == n1
        row = b["input_ids"][0]
        kept = row[:n1] if side == "right" else row[-n1:]
        assert kept.tolist() == e1.input_ids
        assert torch.all(b["labels"][0][b["attention_mask"][0] == 0] == IGNORE)
