"""TOFU runner on one process: per-item losses and membership-inference scores against an independent float64
computation, generations against one-item-at-a-time greedy decoding (left padding must not change them), log
format, writing and summary."""

import json
import math
import re
import zlib

import pytest
import torch

from dsunlearn.config import DataConfig, EvalConfig, SyntheticConfig
from dsunlearn.data.collate import encode_qa, format_prompt
from dsunlearn.errors import DataError
from dsunlearn.eval.generate import new_token_caps
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu import metrics, mia_log
from dsunlearn.suites.tofu.data import eval_split_name, load_split
from dsunlearn.suites.tofu.evaluate import ROLE_TO_LOG, base_answer, evaluate, write_eval
from dsunlearn.suites.tofu.summary import format_json, format_table
from helpers.tiny_model import briefly_trained_model

DATA = DataConfig(
    synthetic=SyntheticConfig(n_authors=8, n_world_facts=12, n_real_authors=2), max_length=64, forget_split="forget10"
)
EVAL = EvalConfig(max_items=12, batch_size=5, max_new_tokens=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model(tiny_tokenizer, one_thread):
    """A tiny Llama trained for a few steps: its generations vary by question and some end with EOS."""
    return briefly_trained_model(tiny_tokenizer, DATA)


@pytest.fixture(scope="module")
def log(model, tiny_tokenizer):
    return evaluate(model, tiny_tokenizer, DATA, EVAL)


def _items(role):
    return load_split(DATA, eval_split_name(role, DATA.forget_split))[: EVAL.max_items]


def _nll64(model, tok, question, answer):
    """(summed NLL, token count) of one item alone: float32 forward, float64 log_softmax and gather."""
    e = encode_qa(tok, question, answer, 64)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].double()
    labels = torch.tensor(e.labels[1:])
    keep = labels != -100
    lp = torch.log_softmax(logits[:-1], -1)[keep].gather(-1, labels[keep][:, None])
    return -lp.sum().item(), int(keep.sum())


def _prompt(tok, it):
    """The generation prompt: the ground-truth item's prompt tokens."""
    e = encode_qa(tok, it["question"], it["answer"], 64)
    return e.input_ids[: e.n_prompt]


def _greedy_one(model, tok, it, cap):
    """Greedy decoding of one unpadded prompt with full forwards (no cache, no `generate`)."""
    ids = _prompt(tok, it)
    out = []
    with torch.no_grad():
        for _ in range(cap):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True).strip()


def test_log_is_tofu_format(log, tiny_tokenizer):
    tofu_log.validate_log(log)
    assert list(log) == [*ROLE_TO_LOG.values(), mia_log.MIA_FILE]  # eval.mia: on by default
    for role, key in ROLE_TO_LOG.items():
        items, split = _items(role), log[key]
        assert list(split["avg_gt_loss"]) == [str(i) for i in range(len(items))]
        for i, it in enumerate(items):
            prompt, _, answer = split["generated_text"][str(i)]
            assert prompt == format_prompt(tiny_tokenizer, it["question"]) and answer == it["answer"]
            assert len(split["average_perturb_loss"][str(i)]) == len(it["perturbed_answer"])
    assert len(log[tofu_log.FORGET]["avg_gt_loss"]) == 10 and len(log[tofu_log.REAL_AUTHORS]["avg_gt_loss"]) == 8
    assert "normalized_gt_loss" in log[tofu_log.WORLD_FACTS] and "normalized_gt_loss" not in log[tofu_log.RETAIN]


def test_losses_equal_float64_one_item_reference(log, model, tiny_tokenizer):
    for role, key in ROLE_TO_LOG.items():
        split = log[key]
        for i, it in enumerate(_items(role)):
            s, n = _nll64(model, tiny_tokenizer, it["question"], it["answer"])
            assert split["num_token_gt"][str(i)] == n
            assert split["gt_loss"][str(i)] == pytest.approx(s, abs=1e-4)
            assert split["avg_gt_loss"][str(i)] == pytest.approx(s / n, abs=1e-5)
            s, n = _nll64(model, tiny_tokenizer, it["question"], base_answer(it))
            assert split["num_token_paraphrased"][str(i)] == n
            assert split["avg_paraphrased_loss"][str(i)] == pytest.approx(s / n, abs=1e-5)
            ref = [_nll64(model, tiny_tokenizer, it["question"], p) for p in it["perturbed_answer"]]
            assert split["num_token_perturb"][str(i)] == [n for _, n in ref]
            assert split["average_perturb_loss"][str(i)] == pytest.approx([s / n for s, n in ref], abs=1e-5)


def test_truth_ratio_base_answer_per_split(log):
    # Forget/retain use the paraphrase; real authors / world facts have none and use the answer itself.
    for key in (tofu_log.REAL_AUTHORS, tofu_log.WORLD_FACTS):
        assert log[key]["avg_paraphrased_loss"] == log[key]["avg_gt_loss"]
    for key in (tofu_log.FORGET, tofu_log.RETAIN):
        assert log[key]["avg_paraphrased_loss"] != log[key]["avg_gt_loss"]
    assert all("paraphrased_answer" in it for it in _items("forget"))


def test_generations_equal_one_item_at_a_time(log, model, tiny_tokenizer):
    gens, n_eos = [], 0
    for role, key in ROLE_TO_LOG.items():
        for i, it in enumerate(_items(role)):
            want = _greedy_one(model, tiny_tokenizer, it, EVAL.max_new_tokens)
            got = log[key]["generated_text"][str(i)][1]
            assert got == want, (key, i)
            gens.append(got)
            n_eos += len(tiny_tokenizer(got, add_special_tokens=False)["input_ids"]) < EVAL.max_new_tokens
    assert len(set(gens)) > 5 and n_eos > 0  # the model says different things, and some stop at EOS
    rouge = log[tofu_log.FORGET]["rougeL_recall"]["0"]
    assert rouge == metrics.rouge_l_recall(
        log[tofu_log.FORGET]["generated_text"]["0"][1], _items("forget")[0]["answer"]
    )


def test_total_length_cap(model, tiny_tokenizer):
    assert new_token_caps([5, 10, 30], 8, 12) == [7, 2, 0]
    items = _items("world_facts")[:4]
    lens = [len(_prompt(tiny_tokenizer, it)) for it in items]
    cfg = EvalConfig(max_items=4, batch_size=3, max_new_tokens=8, max_length=min(lens) + 2)
    from dsunlearn.eval.generate import greedy_generate

    gens = greedy_generate(model, tiny_tokenizer, [_prompt(tiny_tokenizer, it) for it in items],
                           cfg.batch_size, cfg.max_new_tokens, cfg.max_length)  # fmt: skip
    for it, n, got in zip(items, lens, gens, strict=True):
        assert got == _greedy_one(model, tiny_tokenizer, it, max(0, cfg.max_length - n))


def test_training_mode_is_restored(model, tiny_tokenizer):
    model.train()
    try:
        evaluate(model, tiny_tokenizer, DATA, EvalConfig(max_items=2, batch_size=2, max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_write_eval_files_and_forget_quality(log, tmp_path):
    summary = write_eval(tmp_path, log)
    assert "forget_quality" not in summary
    saved = mia_log.load_log(tmp_path / "eval" / "eval_log_aggregated.json")
    assert tofu_log.load_log(tmp_path / "eval" / "eval_log_aggregated.json") == mia_log.tofu_part(log)
    assert saved == {**log, mia_log.MIA_FILE: mia_log.file_content(log)}  # the MIA part, with PrivLeak
    assert json.loads((tmp_path / "eval" / "summary.json").read_text()) == summary == metrics.aggregate(saved)
    assert mia_log.load_log(tmp_path / "eval") == saved  # the directory form reads it too
    assert summary["privleak_reference_auc"] == 0.5  # no retain log: open-unlearning's default
    both = write_eval(tmp_path / "b", log, retain_log=tmp_path / "eval" / "eval_log_aggregated.json")
    assert both["forget_quality"] == 1.0 and both["Forget Quality"] == 1.0
    # The briefly trained model learnt `full` and never saw holdout10: it tells them apart perfectly (AUC 1, MUSE
    # AUC 0), so against the default reference PrivLeak is (0 - 0.5) / 0.5 x 100 = -100, and against itself the
    # reference AUC is 0: PrivLeak undefined, written as null with the reason, left out of the summary.
    assert summary["mia_min_k_auc"] == 1.0 and summary["privleak"] == -100.0
    written = json.loads((tmp_path / "b" / "eval" / mia_log.MIA_FILE).read_text())["privleak"]
    assert written == {"agg_value": None, "auc": 0.0, "auc_reference": 0.0, "reference": "retain_log",
                       "note": "reference AUC is 0"} and "privleak" not in both  # fmt: skip
    # without the MIA part: TOFU's file the same bytes, and no stale TOFU_EVAL.json left to attach
    plain = write_eval(tmp_path, mia_log.tofu_part(log))
    assert not (tmp_path / "eval" / mia_log.MIA_FILE).exists() and "privleak" not in plain
    agg = (tmp_path / "eval" / "eval_log_aggregated.json").read_bytes()
    assert agg == (tmp_path / "b" / "eval" / "eval_log_aggregated.json").read_bytes()
    assert {k: v for k, v in summary.items() if k not in mia_log.SUMMARY_NAMES} == plain


def test_write_eval_refuses_mismatched_retain_log(log, tmp_path):
    short = {tofu_log.FORGET: {k: dict(list(v.items())[:5]) for k, v in log[tofu_log.FORGET].items()}}
    with pytest.raises(DataError, match="item counts differ"):
        write_eval(tmp_path, log, retain_log=short)
    assert not (tmp_path / "eval").exists()  # nothing written


def test_summary_printing(log):
    summary = metrics.aggregate(log, log)
    table = format_table(summary)
    lines = table.splitlines()
    assert lines[1].split()[0] == "forget_quality" and lines[2].split()[0] == "model_utility"
    for key in ("forget_prob", "retain_rouge", "ra_truth_ratio", "wf_prob", "forget_ks_statistic"):
        assert any(ln.split()[0] == key for ln in lines), key
    assert "Truth Ratio Forget" in table
    assert len({re.match(r"\S+\s+\S+", ln).end() for ln in lines}) == 1  # values right-aligned in one column
    assert json.loads(format_json(summary)) == summary
    assert "n/a" in format_table(metrics.aggregate(log))


def _stats64(model, tok, question, answer):
    """(logp, mu, var, pred, label, text) of one item alone: float32 forward, float64 log_softmax of the whole
    [T, V], the answer's label tokens only."""
    e = encode_qa(tok, question, answer, 64)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].double()
    labels = torch.tensor(e.labels[1:])
    keep = labels != -100
    lv = torch.log_softmax(logits, -1)[keep]
    p = lv.exp()
    mu = (p * lv).sum(-1)
    var = (p * lv * lv).sum(-1) - mu * mu
    y = labels[keep]
    logp = lv.gather(-1, y[:, None]).squeeze(-1)
    text = tok.decode(y.tolist(), skip_special_tokens=True)
    return logp.tolist(), mu.tolist(), var.tolist(), logits[keep].argmax(-1).tolist(), y.tolist(), text


def _lowest_mean(values, k):
    n = max(1, int(len(values) * k))
    return -sum(sorted(values)[:n]) / n


def _scores64(model, tok, it, k):
    """Every score of one item, written out from its definitions (open-unlearning's) in float64."""
    logp, mu, var, pred, label, text = _stats64(model, tok, it["question"], it["answer"])
    n = len(logp)
    loss = -sum(logp) / n
    z = [(lp - m) / math.sqrt(max(v, 1e-6)) for lp, m, v in zip(logp, mu, var, strict=True)]
    suffix = next((j for j in range(n) if pred[j:] == label[j:]), n - 1)  # open-unlearning: n - 1 if none
    return {
        "mia_loss": loss,
        "mia_zlib": loss / len(zlib.compress(text.encode("utf-8"))),
        "mia_min_k": _lowest_mean(logp, k),
        "mia_min_k_plus_plus": _lowest_mean(z, k),
        "exact_memorization": sum(a == b for a, b in zip(pred, label, strict=True)) / n,
        "extraction_strength": 1 - suffix / n,
    }


def _pairwise_auc(forget, holdout):
    """P(holdout score > forget score) + P(tie) / 2, over every pair."""
    wins = sum((h > f) + 0.5 * (h == f) for f in forget for h in holdout)
    return wins / (len(forget) * len(holdout))


def test_mia_entries_equal_float64_reference(log, model, tiny_tokenizer):
    mia = log[mia_log.MIA_FILE]
    forget = load_split(DATA, DATA.forget_split)[: EVAL.max_items]
    holdout = load_split(DATA, "holdout10")[: EVAL.max_items]
    assert len(forget) == len(holdout) == 10  # 8 authors: forget10 and holdout10 are one author each
    assert sorted(mia) == sorted(["mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "exact_memorization",
                                  "extraction_strength"])  # fmt: skip
    for role, items, idx in (("forget", forget, (0, 7)), ("holdout", holdout, (3,))):
        for i in idx:
            want = _scores64(model, tiny_tokenizer, items[i], EVAL.mia_k)
            for attack in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"):
                got = mia[attack][role]["value_by_index"][str(i)]["score"]
                tol = 1e-4 if attack == "mia_min_k_plus_plus" else 1e-5  # float32 vocabulary variance: z amplifies it
                assert got == pytest.approx(want[attack], rel=tol, abs=tol), (role, i, attack)
            if role == "forget":
                for m in ("exact_memorization", "extraction_strength"):
                    assert mia[m]["value_by_index"][str(i)]["score"] == pytest.approx(want[m], abs=1e-12), m
    for attack in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"):
        f, h = ([v["score"] for v in mia[attack][r]["value_by_index"].values()] for r in ("forget", "holdout"))
        assert len(f) == len(h) == 10
        assert mia[attack]["auc"] == mia[attack]["agg_value"] == pytest.approx(_pairwise_auc(f, h), abs=1e-12)
    em = [v["score"] for v in mia["exact_memorization"]["value_by_index"].values()]
    assert mia["exact_memorization"]["agg_value"] == pytest.approx(sum(em) / len(em), abs=1e-12)


def test_mia_off_leaves_the_log_as_tofu_writes_it(model, tiny_tokenizer):
    small = EvalConfig(max_items=2, batch_size=2, max_new_tokens=2)
    off = evaluate(model, tiny_tokenizer, DATA, EvalConfig(max_items=2, batch_size=2, max_new_tokens=2, mia=False))
    on = evaluate(model, tiny_tokenizer, DATA, small)
    assert list(off) == list(ROLE_TO_LOG.values()) and mia_log.tofu_part(on) == off
    assert len(on[mia_log.MIA_FILE]["mia_loss"]["holdout"]["value_by_index"]) == 2  # eval.max_items caps both
