"""Distributed TOFU evaluation: 1 rank and 2 ranks give the same per-item numbers and generations, membership
inference and memorization included, for a plain HF model (one replica per rank) and for a DeepSpeed ZeRO-3
engine's module (partitioned parameters, ranks in lockstep through dummy batches and `synced_gpus`)."""

import dataclasses

import pytest
import torch

from dsunlearn.config import DataConfig, EvalConfig, SyntheticConfig
from helpers.spawn import run_distributed
from helpers.tiny_model import briefly_trained_model

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # two spawns + ZeRO-3 on gloo: ~40 s

DATA = DataConfig(
    synthetic=SyntheticConfig(n_authors=8, n_world_facts=12, n_real_authors=2), max_length=64, forget_split="forget10"
)
# 5 items in batches of 2: an odd number of batches everywhere (generation: 3; NLL over all 5 x (1 + 1 + 4) or
# 5 x (1 + 4) sequences: 15 or 13; membership inference over 5 forget10 + 5 holdout10 answers: 5), so on 2 ranks
# one rank runs a dummy batch in the last round of each.
EVAL = EvalConfig(max_items=5, batch_size=2, max_new_tokens=8)
# TOFU's official mode: phi-style prompts, per-batch total length cap (tight, so batch mates' prompt lengths
# decide each item's budget), unstripped generations.
OFFICIAL = (dataclasses.replace(DATA, prompt_format="tofu_phi", tofu_official=True),
            EvalConfig(max_items=5, batch_size=2, max_length=30))  # fmt: skip
NUMBERS = ("avg_gt_loss", "gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall")
MIA_FILE = "TOFU_EVAL.json"  # suites.tofu.mia_log.MIA_FILE: the membership-inference part of the log


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama trained for a few steps (varied generations, some ending early at EOS), saved as HF."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only oversubscribe the shared cores
    m = briefly_trained_model(tiny_tokenizer, DATA)
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("eval_model")
    m.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def _evaluate(model_dir):
    """On every rank: the log of the plain model, then of a ZeRO-3 engine's module built from the same weights."""
    import deepspeed

    from dsunlearn.engine.partitioning import module_is_partitioned
    from dsunlearn.models.load import load_causal_lm, load_tokenizer
    from dsunlearn.suites.tofu.evaluate import evaluate

    tok = load_tokenizer(model_dir)
    plain = evaluate(load_causal_lm(model_dir), tok, DATA, EVAL)
    official = evaluate(load_causal_lm(model_dir), tok, *OFFICIAL)
    by_length = evaluate(load_causal_lm(model_dir), tok, DATA, dataclasses.replace(EVAL, length_batches=True))
    model = load_causal_lm(model_dir)
    ds_cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},  # partition every tensor
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
    }
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
    assert module_is_partitioned(engine.module)
    engine.train()  # as during unlearning: evaluate must switch to eval mode and back
    zero3 = evaluate(engine.module, tok, DATA, EVAL)  # partitioning detected
    official_zero3 = evaluate(engine.module, tok, *OFFICIAL)
    assert engine.module.training
    stats = (_token_stats(load_causal_lm(model_dir), tok), _token_stats(engine.module, tok))
    return plain, zero3, official, official_zero3, stats, by_length


def _token_stats(module, tok):
    """Per-token statistics (the membership-inference inputs) of 5 items in batches of 2 (an odd number of
    batches: a dummy round on 2 ranks)."""
    from dsunlearn.data.collate import encode_qa, pad_id_of
    from dsunlearn.eval.token_stats import item_token_stats

    qa = [("Who?", "Alice."), ("Where was it written?", "In a town by the sea."), ("When?", "In 1999."),
          ("Why?", "Because it rained."), ("How long?", "Three years and a day.")]  # fmt: skip
    encoded = [encode_qa(tok, q, a, 64, "refuse", f"item {i}") for i, (q, a) in enumerate(qa)]
    return item_token_stats(module, encoded, batch_size=2, pad_id=pad_id_of(tok))


def _mia_values(mia: dict) -> dict:
    """{(metric, set, index): value} of a log's MIA part: every per-item score and every aggregate / AUC."""
    out = {}
    for name, entry in mia.items():
        out[(name, "agg")] = entry["agg_value"]
        for part in ("forget", "holdout", None):
            by_index = (entry.get(part, {}) if part else entry).get("value_by_index", {})
            out.update({(name, part, i): v["score"] for i, v in by_index.items()})
    return out


def _check(a, b, atol):
    assert a.keys() == b.keys() and MIA_FILE in a
    a, b = dict(a), dict(b)
    mia_a, mia_b = _mia_values(a.pop(MIA_FILE)), _mia_values(b.pop(MIA_FILE))
    assert mia_a.keys() == mia_b.keys() and len(mia_a) == 4 * (1 + 10) + 2 * (1 + 5)
    for key, v in mia_a.items():
        # an AUC ranks the scores: ZeRO-3's float noise could at most swap two near-equal ones (1 of 25 pairs)
        tol = 1 / 25 if atol and key[1] == "agg" and key[0].startswith("mia_") else atol
        assert v == pytest.approx(mia_b[key], abs=tol), key
    for split in a:
        assert a[split]["generated_text"] == b[split]["generated_text"], split
        assert a[split]["num_token_perturb"] == b[split]["num_token_perturb"], split
        for key in NUMBERS:
            for i, v in a[split][key].items():
                assert v == pytest.approx(b[split][key][i], abs=atol), (split, key, i)


def test_one_rank_equals_two_ranks_plain_and_zero3(model_dir):
    (one,) = run_distributed(_evaluate, 1, model_dir)
    two = run_distributed(_evaluate, 2, model_dir)
    plain1, zero3_1, off1, off_zero3_1, stats1, by_len1 = one
    assert two[0] == two[1]  # every rank returns the whole log
    plain2, zero3_2, off2, off_zero3_2, stats2, by_len2 = two[0]
    # membership-inference inputs: the same floats on 1 and 2 ranks (plain), float noise only under ZeRO-3
    assert stats1[0] == stats2[0]
    for a, b in ((stats1[0], stats1[1]), (stats1[0], stats2[1])):
        for x, y in zip(a, b, strict=True):
            assert x.label == y.label and x.pred == y.pred and len(x.logp) > 0
            for key in ("logp", "mu", "var"):
                assert getattr(x, key) == pytest.approx(getattr(y, key), abs=1e-5), key
    _check(off1, off2, atol=0)  # TOFU's per-batch cap: batches are global, so the same on 1 and 2 ranks
    _check(off1, off_zero3_1, atol=1e-5)
    _check(off1, off_zero3_2, atol=1e-5)
    assert off1 != plain1
    # Same global batches, same padding: the plain numbers are the same floats.
    _check(plain1, plain2, atol=0)
    # ZeRO-3 runs the same arithmetic on gathered parameters; allow float noise only.
    _check(plain1, zero3_1, atol=1e-5)
    _check(plain1, zero3_2, atol=1e-5)
    # eval.length_batches: batches cut longest first, still global: the same floats on 1 and 2 ranks; against
    # item-order batches only the padding changes (float noise, the same texts on this model).
    _check(by_len1, by_len2, atol=0)
    _check(plain1, by_len1, atol=1e-5)
    gens = [t[1] for k, s in plain1.items() if k != MIA_FILE for t in s["generated_text"].values()]
    assert len(set(gens)) > 5  # a real test of generation, not one constant string
    scores = _mia_values(plain1[MIA_FILE])
    assert len({v for k, v in scores.items() if k[0] == "mia_min_k" and k[1] != "agg"}) == 10  # ten distinct
