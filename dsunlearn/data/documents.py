"""Text documents -> fixed-length training windows with every token in the loss (MUSE's corpora).

Two ways to cut (``data.muse.windows``):

- ``concat`` (MUSE's own, muse_bench ``baselines/dataset.py`` on its ``raw/*.txt`` files): the documents are
  joined with ``"\\n\\n"`` into one text, tokenized once without special tokens, and cut into windows of
  ``max_length`` tokens: ``max_length - 1`` text tokens after a BOS token when the tokenizer adds one, else
  ``max_length`` text tokens. The last, shorter window is filled up with the first window's tokens (muse_bench
  "rotates" it), so every window is exactly ``max_length`` long and no padding is trained on.
- ``document``: each document on its own (BOS + its tokens when the tokenizer adds a BOS), cut into windows of
  at most ``max_length`` tokens; no window crosses two documents; the last window of a document is shorter.

Labels are the input ids (the causal shift makes position t predict token t+1), except position 0, which
nothing predicts: IGNORE there, as for question/answer items, so the token counts of the losses are right.
A window is a sequence for NPO/SimNPO and a set of tokens for TNPO/WTNPO, exactly like an answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsunlearn.data.collate import IGNORE, Encoded
from dsunlearn.errors import DataError

WINDOWS = ("concat", "document")
JOIN = "\n\n"  # muse_bench writes raw/<split>.txt as the documents joined by a blank line


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own encoding of a text starts with its BOS token (Llama: yes; GPT-2, the tiny
    default: no). Training windows and evaluation prompts then agree on the first token."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return bool(ids) and ids[0] == bos


def _window(ids: list[int]) -> Encoded:
    return Encoded(list(ids), [IGNORE, *ids[1:]], n_prompt=1)


def document_windows(tokenizer, texts: Sequence[str], max_length: int, mode: str = "concat", where: str = "") -> list:
    """Windows of `texts` (list[Encoded], each <= max_length tokens, labels on every predicted token).

    Example (concat, no BOS, max_length 4): token streams [1 2 3] and [4 5 6] joined with the separator's
    tokens [9] -> 1 2 3 9 4 5 6 -> windows [1 2 3 9], [4 5 6 1] (the last filled up from the first).
    """
    if mode not in WINDOWS:
        raise ValueError(f"document_windows: mode {mode!r} not in {WINDOWS}")
    if max_length < 2:
        raise DataError(f"{where or 'documents'}: data.max_length={max_length} leaves no token to predict; use >= 8")
    if not texts:
        raise DataError(f"{where or 'documents'} has no documents; give a split with at least one 'text'")
    bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    step = max_length - len(bos)
    if mode == "concat":
        # verbose=False: the joined text is longer than the model's context on purpose (it is cut below)
        streams = [tokenizer(JOIN.join(texts), add_special_tokens=False, verbose=False).input_ids]
    else:
        streams = [tokenizer(t, add_special_tokens=False, verbose=False).input_ids for t in texts]
    windows: list[list[int]] = []
    for tokens in streams:
        windows += [bos + tokens[i : i + step] for i in range(0, len(tokens), step)]
    if not windows:
        raise DataError(f"{where or 'documents'}: the documents tokenize to no tokens; give non-empty 'text's")
    if mode == "concat" and len(windows[-1]) < max_length:
        windows[-1] = (windows[-1] + windows[0])[:max_length]  # muse_bench: fill the last window from the first
    return [_window(w) for w in windows]
