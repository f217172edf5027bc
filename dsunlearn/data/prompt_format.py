"""Prompt formats: the text around a question and its answer, and which tokens of it are the prompt.

One format is chosen per run from ``data.prompt_format`` (+ ``data.tofu_official``) and the tokenizer; fine-tuning,
unlearning and evaluation all encode through it (``collate.encode_qa``), so they see the same tokens.

    format          prompt text P (the answer follows with nothing in between)        special tokens
    chat_template   the tokenizer's chat template: [system turn,] user turn q, generation  written by the template
                    prompt on (``data.system_prompt``, ``data.date_string`` optional)
    plain           "Question: " + q + "\\n" + "Answer: "                               the tokenizer's default
    tofu_phi        "Question: " + q + "\\n" + "Answer: "   (TOFU phi / stablelm / pythia) the tokenizer's default
    tofu_llama2     "[INST] " + q + " [/INST]"              (TOFU llama2-7b)               the tokenizer's default
    auto            chat_template if the tokenizer has one, else plain

The text ``P + answer`` is tokenized ONCE (as TOFU and open-unlearning do); tokenizing P and the answer apart
would split a token that spans the boundary (``": " + "Limo"`` is ``':' 'ĠLimo'`` jointly, ``':' 'Ġ' 'Limo'``
apart), a boundary the model never saw. Prompt tokens = the tokens that lie entirely inside P (character
offsets); a token that straddles the boundary belongs to the answer when P's share of it is whitespace (the
answer's first word with P's trailing space, SentencePiece's ``▁``: the common case), else to the prompt (e.g.
``"[/INST]" + "Limo"`` merged into one token: masked, as TOFU's count masks it). The generation prompt is that
same token prefix, so generation starts exactly where training does; only after a non-whitespace straddle (the
prefix would hold the answer's first characters) it is P tokenized alone.

``tofu_official`` (tofu_phi / tofu_llama2 only) reproduces the official TOFU code instead: the question part is
``len(tokenize(start + q + end, add_special_tokens=True))`` tokens, so the answer tag "Answer: " is in the loss;
the generation prompt is the decoded item cut before the split string (" [/INST]", re-appended, for llama2;
"Answer: " for the others, not re-appended) and re-tokenized; the reference answer is the decoded text after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsunlearn.errors import ConfigError, DataError, ModelError

FORMATS = ("auto", "chat_template", "plain", "tofu_llama2", "tofu_phi")
# (question start, question end, answer tag) of TOFU's config/model_config.yaml; plain uses the phi strings.
TAGS = {
    "plain": ("Question: ", "\n", "Answer: "),
    "tofu_phi": ("Question: ", "\n", "Answer: "),
    "tofu_llama2": ("[INST] ", " [/INST]", ""),
}
# The official evaluation's split string; True = it is re-appended to the generation prompt (llama2 only).
SPLIT = {"tofu_llama2": (" [/INST]", True), "tofu_phi": ("Answer: ", False)}
_FIX = "set data.prompt_format to plain, tofu_phi or tofu_llama2 (the format the model was trained with)"


@dataclass(frozen=True)
class PromptFormat:
    name: str  # resolved: never "auto"
    official: bool = False  # TOFU's own label count, generation prompt and reference answer (see module doc)
    system_prompt: str | None = None  # chat_template only: a system turn before the user's question
    date_string: str | None = None  # chat_template only: the template variable Llama-3 templates read

    @property
    def uses_template(self) -> bool:
        return self.name == "chat_template"


def resolve(tokenizer, name: str = "auto", official: bool = False, system_prompt: str | None = None,
            date_string: str | None = None) -> PromptFormat:  # fmt: skip
    """The format `name` for `tokenizer` (`auto` -> chat_template if it has one, else plain)."""
    if name not in FORMATS:
        raise ConfigError(f"data.prompt_format={name!r} is not one of {', '.join(FORMATS)}; set one of them")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if name == "auto":
        name = "chat_template" if has_template else "plain"
    if name == "chat_template" and not has_template:
        raise ModelError(f"data.prompt_format=chat_template but the tokenizer has no chat template; {_FIX}")
    if official and name not in SPLIT:
        raise ConfigError(
            f"data.tofu_official=true needs data.prompt_format tofu_phi or tofu_llama2 (resolved: {name}); "
            "set one of them or data.tofu_official=false"
        )
    if (system_prompt is not None or date_string is not None) and name != "chat_template":
        raise ConfigError(
            f"data.system_prompt / data.date_string only apply to a chat template (format: {name}); "
            "unset them or set data.prompt_format=chat_template"
        )
    return PromptFormat(name, official, system_prompt, date_string)


def from_config(tokenizer, data_cfg) -> PromptFormat:
    """The run's format: ``data.prompt_format`` and ``data.tofu_official`` of a DataConfig."""
    d = data_cfg
    return resolve(tokenizer, d.prompt_format, d.tofu_official, d.system_prompt, d.date_string)


def _render_chat(tokenizer, fmt: PromptFormat, question: str, where: str) -> str:
    system = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt is not None else []
    extra = {"date_string": fmt.date_string} if fmt.date_string is not None else {}
    try:
        text = tokenizer.apply_chat_template(
            system + [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True, **extra
        )
    except Exception as e:  # jinja errors, raise_exception() in the template, missing variables ...
        msg = (str(e).strip().splitlines() or [""])[0]
        raise DataError(
            f"{where or 'an item'}: the tokenizer's chat template failed to render the question "
            f"({type(e).__name__}: {msg}); fix the template (chat_template in the tokenizer files) or {_FIX}"
        ) from None
    if not isinstance(text, str):
        raise DataError(f"{where or 'an item'}: the chat template rendered {type(text).__name__}, not text; {_FIX}")
    return text


def prompt_text(tokenizer, fmt: PromptFormat, question: str, where: str = "") -> str:
    """P: the text the model sees before the answer (the answer tag included)."""
    if fmt.uses_template:
        return _render_chat(tokenizer, fmt, question, where)
    start, end, tag = TAGS[fmt.name]
    return start + question + end + tag


def question_token_count(tokenizer, fmt: PromptFormat, question: str) -> int:
    """TOFU's official count of masked tokens: ``len(tokenize(start + q + end, add_special_tokens=True))``."""
    start, end, _ = TAGS[fmt.name]
    return len(tokenizer.tokenize(start + question + end, add_special_tokens=True))


def tokenize_joint(tokenizer, fmt: PromptFormat, prompt: str, answer: str) -> tuple[list[int], int, bool]:
    """(ids of ``prompt + answer`` tokenized once, number of prompt tokens, whether the prefix is clean).

    Prompt tokens: those entirely inside `prompt`, plus a boundary token whose prompt part is not whitespace
    (then the prefix is not clean: it holds answer characters; see the module docstring).

    Special tokens: a chat template writes its own (BOS included), so none are added; the other formats get
    the tokenizer's default (Llama: BOS; GPT-2 style: none), as TOFU tokenizes. Tokenizers without offsets
    (Python tokenizers) fall back to the common prefix of the joint ids and the prompt's own ids.
    """
    text, special = prompt + answer, not fmt.uses_template
    try:
        enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    except NotImplementedError:
        ids = tokenizer(text, add_special_tokens=special)["input_ids"]
        alone = tokenizer(prompt, add_special_tokens=special)["input_ids"]
        n = 0
        while n < min(len(ids), len(alone)) and ids[n] == alone[n]:
            n += 1
        return list(ids), n, True
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    # First token reaching past the prompt; added special tokens (offsets (0, 0)) before it count as prompt.
    n = next((i for i, (_, stop) in enumerate(offsets) if stop > len(prompt)), len(ids))
    if n < len(ids) and text[offsets[n][0] : len(prompt)].strip():
        return ids, n + 1, False
    return ids, n, True


def official_generation_prompt(tokenizer, fmt: PromptFormat, item_ids: list[int]) -> tuple[str, str]:
    """(prompt text, reference answer) as TOFU's ``run_generation`` derives them from an encoded item: decode
    without special tokens, split on the split string, keep part 0 (+ " [/INST]" for llama2) and part 1."""
    symbol, re_append = SPLIT[fmt.name]
    parts = tokenizer.decode(item_ids, skip_special_tokens=True).split(symbol)
    if len(parts) < 2:
        raise DataError(
            f"an item decodes without its split string {symbol!r} (the tokenizer does not round-trip it), so "
            "TOFU's official generation prompt is undefined; set data.tofu_official=false"
        )
    return parts[0] + (symbol if re_append else ""), parts[1]


def generation_prompt(tokenizer, fmt: PromptFormat, question: str, item_ids: list[int], n_prompt: int,
                      answer: str) -> tuple[list[int], str, str]:  # fmt: skip
    """(prompt ids, prompt text, reference answer) for greedy generation from an item encoded with its answer.

    Default: the item's own first `n_prompt` tokens (the training context exactly), the prompt text P and the
    answer. ``official``: TOFU's decoded-and-split prompt, re-tokenized with special tokens, and its reference.
    """
    if not fmt.official:
        text = prompt_text(tokenizer, fmt, question)
        if n_prompt < 0:  # the joint prefix is not clean (tokenize_joint): the prompt tokenized alone
            return list(tokenizer(text, add_special_tokens=not fmt.uses_template)["input_ids"]), text, answer
        return item_ids[:n_prompt], text, answer
    text, reference = official_generation_prompt(tokenizer, fmt, item_ids)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"]), text, reference
