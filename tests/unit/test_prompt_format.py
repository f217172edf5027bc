"""Prompt formats against an independent reproduction of the official TOFU code, token by token, on two kinds
of locally built tokenizers: GPT-2-style byte-level BPE (no BOS, no chat template) and a SentencePiece-style
BPE (Llama-like: `▁` metaspace, BOS prepended). Then the TOFU evaluation on tiny models built on each:
prompts, label counts, losses and generations equal to TOFU's rules."""

import dataclasses

import pytest
import torch

from dsunlearn.config import DataConfig, EvalConfig, SyntheticConfig
from dsunlearn.data import prompt_format as pf
from dsunlearn.data.collate import IGNORE, encode_items, encode_qa
from dsunlearn.errors import ConfigError, DataError, ModelError
from dsunlearn.suites.tofu import synthetic
from dsunlearn.suites.tofu.data import eval_split_name, load_split

DATA = DataConfig(
    synthetic=SyntheticConfig(n_authors=8, n_world_facts=12, n_real_authors=2), max_length=128, forget_split="forget10"
)
# The official strings (TOFU config/model_config.yaml), written out here, not taken from dsunlearn.
OFFICIAL = {
    "tofu_phi": ("Question: ", "\n", "Answer: ", "Answer: "),
    "tofu_llama2": ("[INST] ", " [/INST]", "", " [/INST]"),
}


def _corpus():
    texts = list(synthetic.corpus(synthetic.generate(seed=0, n_authors=8, n_world_facts=12, n_real_authors=2)))
    return texts + ["Question: Who?\nAnswer: Limo Limo.", "[INST] Who? [/INST]Limo Limo."] * 20


def byte_level_tokenizer():
    """GPT-2 style: byte-level BPE, EOS only, nothing added around the text, no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def sentencepiece_tokenizer():
    """Llama style: metaspace `▁` (prepended to the first word), newlines their own tokens, <s> prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Newlines apart, as Llama's SentencePiece model has them (byte-fallback <0x0A>), then metaspace.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def tok(request):
    t = byte_level_tokenizer() if request.param == "byte_level" else sentencepiece_tokenizer()
    ids = t("Who")["input_ids"]
    assert (ids[0] == t.bos_token_id) == (request.param == "sentencepiece")  # the two behaviours under test
    return t


def tofu_item(tok, q, a, fmt):
    """TOFU's data_module.convert_raw_data_to_model_format + evaluate_util.run_generation, re-written from their
    logic: (input_ids + EOS, labels, generation prompt ids, prompt text, reference answer)."""
    start, end, tag, split = OFFICIAL[fmt]
    full = start + q + end + tag + a
    n_q = len(tok.tokenize(start + q + end, add_special_tokens=True))
    ids = tok(full, add_special_tokens=True)["input_ids"]
    labels = ids + [tok.eos_token_id]
    for i in range(n_q):
        labels[i] = -100
    text = tok.decode(ids + [tok.eos_token_id] * 3, skip_special_tokens=True)  # EOS padding, skipped
    prompt, reference = text.split(split)[0], text.split(split)[1]
    if fmt == "tofu_llama2":
        prompt = prompt + split
    return ids + [tok.eos_token_id], labels, tok(prompt, add_special_tokens=True)["input_ids"], prompt, reference


def _items():
    return load_split(DATA, eval_split_name("forget", DATA.forget_split))[:6]


@pytest.mark.parametrize("fmt", ["tofu_phi", "tofu_llama2"])
def test_official_items_token_by_token(tok, fmt):
    f = pf.resolve(tok, fmt, official=True)
    for it in _items():
        for answer in (it["answer"], it["paraphrased_answer"], *it["perturbed_answer"]):
            ids, labels, gen_ids, prompt, ref = tofu_item(tok, it["question"], answer, fmt)
            e = encode_qa(tok, it["question"], answer, 512, fmt=f)
            assert e.input_ids == ids and e.labels == labels
            assert pf.generation_prompt(tok, f, it["question"], e.input_ids, e.n_prompt, answer) == (
                gen_ids,
                prompt,
                ref,
            )
    if fmt == "tofu_phi":  # the official quirk: "Answer: " is in the loss, the generation prompt ends at "\n"
        e = encode_qa(tok, "Who?", "Limo.", 64, fmt=f)
        assert tok.decode([t for t in e.labels if t != IGNORE], skip_special_tokens=True) == "Answer: Limo."
        assert prompt.endswith("\n")


@pytest.mark.parametrize("fmt", ["plain", "tofu_phi", "tofu_llama2"])
def test_default_mask_is_the_prompt_and_first_answer_token_is_merged(tok, fmt):
    f = pf.resolve(tok, fmt)
    start, end, tag = {"plain": OFFICIAL["tofu_phi"], **OFFICIAL}[fmt][:3]
    e = encode_qa(tok, "Who?", "Limo Limo.", 64, fmt=f)
    joint = tok(start + "Who?" + end + tag + "Limo Limo.", add_special_tokens=True)["input_ids"]
    assert e.input_ids == joint + [tok.eos_token_id]  # tokenized once, one EOS after the text
    n = e.labels.index(next(t for t in e.labels if t != IGNORE))
    assert e.labels == [IGNORE] * n + e.input_ids[n:]
    first = tok.convert_ids_to_tokens(e.input_ids[n])
    gen = pf.generation_prompt(tok, f, "Who?", e.input_ids, e.n_prompt, "Limo Limo.")[0]
    if fmt == "tofu_llama2":  # "[/INST]Limo": no space; a token spanning "]L" is masked, never in the prompt
        assert tok.decode(e.input_ids[:n], skip_special_tokens=True).startswith("[INST] Who? [/INST]")
        assert tok.decode(gen, skip_special_tokens=True) == "[INST] Who? [/INST]"
        assert (e.n_prompt == -1) == (tok.decode(e.input_ids[:n], skip_special_tokens=True) != "[INST] Who? [/INST]")
    else:
        assert (
            e.n_prompt == n and gen == e.input_ids[:n]
        )  # the prompt's trailing space is merged into the answer's first word
        assert first in ("ĠLimo", "▁Limo"), first
        alone = tok(start + "Who?" + end + tag, add_special_tokens=True)["input_ids"]
        assert tok.convert_ids_to_tokens(alone[-1]) in ("Ġ", "▁")  # what tokenizing apart would have fed it
        assert e.input_ids[:n] == alone[:-1]


def test_errors_are_one_line(tok):
    with pytest.raises(ModelError, match="no chat template.*data.prompt_format"):
        pf.resolve(tok, "chat_template")
    with pytest.raises(ConfigError, match="tofu_official=true needs"):
        pf.resolve(tok, "plain", official=True)
    assert pf.resolve(tok).name == "plain"  # auto without a template
    t2 = byte_level_tokenizer()
    t2.chat_template = "{{ raise_exception('no user turns here') }}"
    with pytest.raises(DataError) as err:
        encode_items(t2, _items()[:1], DATA, split="forget10_perturbed")
    msg = str(err.value)
    assert "\n" not in msg and "split 'forget10_perturbed' item 0" in msg and "no user turns here" in msg
    assert "data.prompt_format" in msg


def _reference_generate(model, tok, prompts, batch_size, max_length):
    """TOFU's run_generation on sequential batches: left padding with EOS, generate(max_length) per batch."""
    out = []
    for b in range(0, len(prompts), batch_size):
        rows = prompts[b : b + batch_size]
        T = max(len(p) for p in rows)
        ids = torch.tensor([[tok.eos_token_id] * (T - len(p)) + p for p in rows])
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in rows])
        gen = model.generate(input_ids=ids, attention_mask=mask, max_length=max_length, do_sample=False,
                             pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
        out += tok.batch_decode(gen[:, T:], skip_special_tokens=True)
    return out


@pytest.mark.parametrize("fmt", ["tofu_phi", "tofu_llama2"])
def test_tofu_evaluation_official(tok, fmt):
    """The whole evaluation of a tiny Llama on this tokenizer vs TOFU's rules: prompts, references, label counts,
    losses (float64, one item at a time) and generations (per-batch total length cap)."""
    from dsunlearn.config import TinyModelConfig
    from dsunlearn.models.tiny import build_tiny_model
    from dsunlearn.suites.tofu import log as tofu_log
    from dsunlearn.suites.tofu.evaluate import split_records

    torch.manual_seed(0)
    model = build_tiny_model(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                             max_position_embeddings=256), tok, seed=0).eval()  # fmt: skip
    data = dataclasses.replace(DATA, prompt_format=fmt, tofu_official=True)
    n, bs = 5, 3
    prompt_lens = [len(tofu_item(tok, it["question"], it["answer"], fmt)[2]) for it in _items()[:n]]
    cap = max(prompt_lens) + 4  # short budget: batch mates' prompt lengths matter
    records = split_records(model, tok, _items()[:n], data, EvalConfig(batch_size=bs, max_length=cap), "forget")
    log = tofu_log.build_split_log(records, tofu_log.FORGET)
    refs = [tofu_item(tok, it["question"], it["answer"], fmt) for it in _items()[:n]]
    gens = _reference_generate(model, tok, [r[2] for r in refs], bs, cap)
    for i, ((ids, labels, _, prompt, ref), gen) in enumerate(zip(refs, gens, strict=True)):
        assert log["generated_text"][str(i)] == [prompt, gen, ref]
        keep = torch.tensor(labels[1:]) != -100
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
        nll = -lp[keep].gather(-1, torch.tensor(labels[1:])[keep][:, None]).sum().item()
        assert log["num_token_gt"][str(i)] == int(keep.sum())
        assert log["gt_loss"][str(i)] == pytest.approx(nll, abs=1e-4)
    assert any(g != "" for g in gens)


def test_chat_template_system_prompt_and_date(tok):
    """open-unlearning's Llama-3 rendering: a system turn and a fixed date_string (template variable)."""
    t = byte_level_tokenizer()
    t.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'system' %}{{ date_string | default('today') }}"
        " {% endif %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    f = pf.resolve(t, "chat_template", system_prompt="You are a helpful assistant.", date_string="10 Apr 2025")
    want = "<|system|>10 Apr 2025 You are a helpful assistant.<|user|>Who?<|assistant|>"
    assert pf.prompt_text(t, f, "Who?") == want
    assert pf.prompt_text(t, pf.resolve(t, "chat_template"), "Who?") == "<|user|>Who?<|assistant|>"
    e = encode_qa(t, "Who?", "Limo.", 128, fmt=f)
    assert e.input_ids == t(want + "Limo.", add_special_tokens=False)["input_ids"] + [t.eos_token_id]
    assert t.decode(e.input_ids[: e.n_prompt]) == want and t.decode(e.input_ids[e.n_prompt : -1]) == "Limo."
    with pytest.raises(ConfigError, match="only apply to a chat template"):
        pf.resolve(tok, "plain", system_prompt="x")
