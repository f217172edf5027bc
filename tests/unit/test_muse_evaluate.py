"""The MUSE evaluation (suites/muse/evaluate.py) of a real tiny Llama against muse_bench's own loops re-stated
here: one item at a time, `model.generate` unpadded, the reference cut to 128 tokens, the stop words; the
MIA scores from a float64 log-softmax over the whole vocabulary (muse_bench's compute_ppl, Min-K% with its
``int(n * k)``). The suite batches with left padding and chunks the vocabulary statistics: the numbers must
not move."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from dsunlearn.config_io import load_config
from dsunlearn.eval import metric_log, mia
from dsunlearn.suites import get_suite
from dsunlearn.suites.muse import metrics

OVERRIDES = ["data.suite=muse", "data.muse.n_forget=4", "data.muse.n_retain=4", "data.muse.n_holdout=4",
             "data.muse.n_icl=2", "data.muse.verbmem_max_new_tokens=12", "data.muse.knowmem_max_new_tokens=6",
             "eval.batch_size=3", "model.tiny.max_position_embeddings=512"]  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    from dsunlearn.config import TinyModelConfig
    from dsunlearn.models.tiny import build_tiny_model, train_tokenizer

    cfg = load_config(None, OVERRIDES)
    suite = get_suite("muse")
    tok = train_tokenizer(suite.corpus(cfg.data), 400, 512)
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                           max_position_embeddings=512)  # fmt: skip
    model = build_tiny_model(tiny, tok, seed=3).eval()
    log = suite.evaluate(model, tok, cfg.data, cfg.eval)
    return cfg, suite, tok, model, log


def _official_generate(model, tok, prompt: str, max_new: int) -> str:
    ids = tok(prompt, return_tensors="pt", add_special_tokens=True).input_ids
    out = model.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)[0]


def test_verbmem_equals_muse_benchs_unbatched_loop(setup):
    cfg, suite, tok, model, log = setup
    items = suite_set(cfg, "verbmem/forget")
    cap = cfg.data.muse.verbmem_max_new_tokens
    for i, it in enumerate(items):
        out = _official_generate(model, tok, it["prompt"], cap)
        gt = tok.batch_decode(tok(it["gt"], return_tensors="pt").input_ids[:, :cap], skip_special_tokens=True)[0]
        got = log[metrics.VERBMEM]["value_by_index"][str(i)]
        assert got["generation"] == out and got["ground_truth"] == gt
        assert got["rougeL_f1"] == metrics.rouge_l(gt, out)[0]
    f1s = metric_log.item_values(log[metrics.VERBMEM], "rougeL_f1")
    assert log[metrics.VERBMEM]["agg_value"] == pytest.approx(sum(f1s) / len(f1s))


@pytest.mark.parametrize("metric", list(metrics.KNOWMEM))
def test_knowmem_equals_muse_benchs_unbatched_loop(setup, metric):
    cfg, suite, tok, model, log = setup
    qa_name, icl_name = metrics.KNOWMEM[metric]
    icl = [(x["question"], x["answer"]) for x in suite_set(cfg, icl_name)]
    for i, it in enumerate(suite_set(cfg, qa_name)):
        prompt = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl) + f"Question: {it['question']}\nAnswer: "
        out = _official_generate(model, tok, prompt, cfg.data.muse.knowmem_max_new_tokens)
        for word in ["\n\n", "\nQuestion", "Question:"]:
            out = out.split(word)[0]
        got = log[metric]["value_by_index"][str(i)]
        assert got["input"] == prompt and got["generation"] == out
        assert got["rougeL_f1"] == metrics.rouge_l(it["answer"], out)[0]


def suite_set(cfg, name):
    from dsunlearn.suites.muse.data import load

    return load(cfg.data, name)[: cfg.eval.max_items]


def _float64_stats(model, tok, text: str):
    """muse_bench compute_ppl in float64: log-probs of input_ids[1:], plus Min-K%++'s mu and var."""
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].double()
    lv = torch.log_softmax(logits, -1)
    p = lv.exp()
    mu = (p * lv).sum(-1)
    var = (p * lv * lv).sum(-1) - mu * mu
    lp = lv.gather(-1, ids[0, 1:, None]).squeeze(-1)
    return lp.tolist(), mu.tolist(), var.tolist()


def test_mia_scores_equal_a_float64_full_softmax(setup):
    cfg, suite, tok, model, log = setup
    k, kp = cfg.data.muse.mia_k, cfg.data.muse.privleak_k
    for part in ("forget", "holdout"):
        for i, it in enumerate(suite_set(cfg, f"privleak/{part}")):
            lp, mu, var = _float64_stats(model, tok, it["text"])
            n = len(lp)
            loss = -sum(lp) / n
            lowest = sorted(lp)[: int(n * kp)]  # muse_bench: int(len * ratio), no floor at 1
            z = sorted((a - m) / math.sqrt(max(v, 1e-6)) for a, m, v in zip(lp, mu, var, strict=True))
            expect = {
                "mia_loss": loss,
                "mia_zlib": loss / len(zlib.compress(it["text"].encode("utf-8"))),
                "mia_min_k": -sum(sorted(lp)[: max(1, int(n * k))]) / max(1, int(n * k)),
                "mia_min_k_plus_plus": -sum(z[: max(1, int(n * k))]) / max(1, int(n * k)),
                "privleak": -sum(lowest) / len(lowest),
            }
            for metric, value in expect.items():
                got = log[metric][part]["value_by_index"][str(i)]["score"]
                assert got == pytest.approx(value, rel=1e-5, abs=1e-5), (metric, part, i)


def test_privleak_auc_counts_pairs(setup):
    _, _, _, _, log = setup
    p = log["privleak"]
    f, h = metric_log.item_values(p["forget"]), metric_log.item_values(p["holdout"])
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a in f for b in h]
    assert p["auc"] == pytest.approx(sum(pairs) / len(pairs))
    ref = mia.MUSE_AUC_RETRAIN["news"]
    assert p["agg_value"] == pytest.approx((p["auc"] - ref) / ref * 100) and "AUC_RETRAIN" in p["reference"]
    for attack in ("mia_loss", "mia_min_k"):
        e = log[attack]
        fa, ha = metric_log.item_values(e["forget"]), metric_log.item_values(e["holdout"])
        pairs = [1.0 if b > a else 0.5 if a == b else 0.0 for a in fa for b in ha]
        assert e["auc"] == e["agg_value"] == pytest.approx(sum(pairs) / len(pairs))


def test_memorization_on_verbmem_gt_tokens(setup):
    cfg, suite, tok, model, log = setup
    for i, it in enumerate(suite_set(cfg, "verbmem/forget")):
        ids = tok(it["prompt"] + " " + it["gt"]).input_ids
        n_prompt = len(tok(it["prompt"]).input_ids)
        with torch.no_grad():
            pred = model(torch.tensor([ids])).logits[0, :-1].argmax(-1).tolist()
        labels, preds = ids[n_prompt:], pred[n_prompt - 1 :]
        em = sum(a == b for a, b in zip(preds, labels, strict=True)) / len(labels)
        assert log["exact_memorization"]["value_by_index"][str(i)]["score"] == pytest.approx(em)
        assert log["extraction_strength"]["value_by_index"][str(i)]["score"] == pytest.approx(
            mia.extraction_strength(preds, labels)
        )


def test_log_round_trips_and_summarizes(setup, tmp_path):
    cfg, suite, tok, model, log = setup
    summary = suite.write_eval(tmp_path, log)
    again = suite.load_log(tmp_path / "eval")
    assert again == metric_log.check(log, "x") and suite.summarize(again) == summary
    assert set(suite.eval_files()) == {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "mia_min_k_plus_plus_auc"} <= set(summary)


def test_reference_attack_against_a_second_model_equals_float64_losses(setup, tmp_path):
    """mia_reference from the two logs = LOSS(model) - LOSS(reference), both from a float64 full softmax; a log
    given as its own reference writes none."""
    from dsunlearn.config import TinyModelConfig
    from dsunlearn.models.tiny import build_tiny_model

    cfg, suite, tok, model, log = setup
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                           max_position_embeddings=512)  # fmt: skip
    reference = build_tiny_model(tiny, tok, seed=4).eval()
    summary = suite.write_eval(tmp_path, log, suite.evaluate(reference, tok, cfg.data, cfg.eval))
    entry = suite.load_log(tmp_path / "eval")["mia_reference"]
    want = {}
    for part in ("forget", "holdout"):
        want[part] = []
        for it in suite_set(cfg, f"privleak/{part}"):
            lp, rp = (_float64_stats(m, tok, it["text"])[0] for m in (model, reference))
            want[part].append(-math.fsum(lp) / len(lp) + math.fsum(rp) / len(rp))
        assert metric_log.item_values(entry[part]) == pytest.approx(want[part], rel=1e-5, abs=1e-5)
    pairs = [1.0 if h > f else 0.5 if h == f else 0.0 for f in want["forget"] for h in want["holdout"]]
    assert summary["mia_reference_auc"] == entry["auc"] == pytest.approx(sum(pairs) / len(pairs))
    suite.write_eval(tmp_path / "self", log, log)
    assert "mia_reference" not in suite.load_log(tmp_path / "self" / "eval")


def test_inputs_checked_before_any_model(setup, tmp_path):
    import json

    from dsunlearn.errors import DataError
    from dsunlearn.suites.muse.data import synthetic_sets
    from dsunlearn.suites.muse.synthetic import write_splits

    cfg, suite, tok, _, _ = setup
    write_splits(tmp_path, synthetic_sets(cfg.data))
    local = load_config(None, [*OVERRIDES, "data.source=local", f"data.path={tmp_path}"])
    suite.check_eval_inputs(tok, local.data, local.eval, positions=512)  # the synthetic sets fit
    with pytest.raises(DataError, match="run past the model's 40 positions"):
        suite.check_eval_inputs(tok, local.data, local.eval, positions=40)
    (tmp_path / "privleak" / "holdout.json").write_text(json.dumps([{"text": "a"}]))
    with pytest.raises(DataError, match=r"'privleak/holdout' item 0 tokenizes to 1 token\(s\)"):
        suite.check_eval_inputs(tok, local.data, local.eval, positions=512)
