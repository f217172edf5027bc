"""Question/answer -> token ids with answer-only labels; padding into batches.

Each item is ``prompt + answer`` in the run's prompt format (``data/prompt_format.py``), tokenized once, plus
one EOS. Labels are -100 on the prompt's tokens and on padding, so every loss and metric sees answer tokens
(and the final EOS) only; under ``data.tofu_official`` the masked part is TOFU's question-token count instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from dsunlearn.data import prompt_format as pf
from dsunlearn.errors import DataError

IGNORE = -100


def format_prompt(tokenizer, question: str, fmt: pf.PromptFormat | None = None, where: str = "") -> str:
    """The text the model sees before the answer (`fmt` None: ``auto`` for this tokenizer)."""
    return pf.prompt_text(tokenizer, fmt or pf.resolve(tokenizer), question, where)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt
    n_prompt: int = 0  # the generation prompt: the first n_prompt tokens (-1: the prompt tokenized alone)


def encode_qa(tokenizer, question: str, answer: str, max_length: int, truncation: str = "refuse", where: str = "",
              fmt: pf.PromptFormat | None = None, prompt: str | None = None) -> Encoded:  # fmt: skip
    """[prompt ids | answer ids + EOS] of ``prompt + answer`` tokenized once; labels on the answer part only.

    `fmt` None: ``auto`` for this tokenizer. `prompt`: the question's prompt text when the caller already
    rendered it (``prompt_format.prompt_text(tokenizer, fmt, question)``: one render for several answers).
    Too long: `truncation="refuse"` raises DataError (what, where, how to fix); "truncate" cuts the answer's tail
    with a warning (the prompt is kept whole: a cut prompt would change the question).
    """
    fmt = fmt or pf.resolve(tokenizer)
    prompt = pf.prompt_text(tokenizer, fmt, question, where) if prompt is None else prompt
    ids, n_prompt, clean = pf.tokenize_joint(tokenizer, fmt, prompt, answer)
    n_masked = min(pf.question_token_count(tokenizer, fmt, question), len(ids)) if fmt.official else n_prompt
    p, a = ids[:n_masked], ids[n_masked:]
    if tokenizer.eos_token_id is not None:
        a = a + [tokenizer.eos_token_id]
    if len(p) + len(a) > max_length:
        if len(p) >= max_length:  # no answer token would be left: truncation cannot help
            raise DataError(
                f"{where or 'an item'}: its question alone is {len(p)} tokens (prompt with template), not below "
                f"data.max_length={max_length}, so no answer token fits (data.truncation=truncate only cuts answers); "
                f"raise data.max_length to at least {len(p) + len(a)} or shorten or remove that question"
            )
        if truncation == "refuse":
            raise DataError(
                f"{where or 'an item'} is {len(p) + len(a)} tokens (prompt {len(p)}), longer than "
                f"data.max_length={max_length}; raise data.max_length to {len(p) + len(a)} or set "
                "data.truncation=truncate (cuts the answer's tail, with a warning)"
            )
        warnings.warn(
            f"{where or 'an item'}: answer truncated from {len(a)} to {max_length - len(p)} tokens to fit "
            f"data.max_length={max_length} (data.truncation=truncate)",
            stacklevel=2,
        )
        a = a[: max_length - len(p)]
    return Encoded(p + a, [IGNORE] * len(p) + a, n_prompt if clean else -1)


def encode_items(tokenizer, items: list[dict], data, field: str = "answer", split: str = "") -> list:
    """Encode every item's (question, item[field]) in the run's format, with `data` (a DataConfig)'s
    ``prompt_format``, ``tofu_official``, ``max_length`` and ``truncation``; `field` may name a list (e.g.
    perturbed_answer) -> a list per item."""
    fmt = pf.from_config(tokenizer, data)
    out = []
    for i, item in enumerate(items):
        value = item[field]
        where = f"split '{split}' item {i}"

        def enc(answer: str, where=where, question=item["question"]):
            return encode_qa(tokenizer, question, answer, data.max_length, data.truncation, where, fmt)

        out.append([enc(v) for v in value] if isinstance(value, list) else enc(value))
    return out


def pad_batch(encoded: list[Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Stack into input_ids/labels/attention_mask [B, T]; padding labels are IGNORE."""
    if not encoded:
        raise DataError("cannot build an empty batch")
    T = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), T), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), T), dtype=torch.long)
    for b, e in enumerate(encoded):
        n = len(e.input_ids)
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        ids[b, sl] = torch.tensor(e.input_ids)
        labels[b, sl] = torch.tensor(e.labels)
        mask[b, sl] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pad_id_of(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0
