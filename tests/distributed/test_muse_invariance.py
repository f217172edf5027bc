"""Distributed MUSE evaluation: 1 rank and 2 ranks give the same per-item VerbMem / KnowMem generations and
scores and the same MIA and PrivLeak values, for a plain HF model and for a DeepSpeed ZeRO-3 engine's module."""

import pytest
import torch

from helpers.spawn import run_distributed
from helpers.suite_eval import plain_and_zero3_logs, save_model, tiny_suite_model

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # two spawns + ZeRO-3 on gloo

# 3 items per set in batches of 2: two rounds, the second a dummy batch on rank 1 under ZeRO-3.
OVERRIDES = ["data.suite=muse", "data.muse.n_forget=3", "data.muse.n_retain=3", "data.muse.n_holdout=3",
             "data.muse.n_icl=2", "data.muse.verbmem_max_new_tokens=8", "data.muse.knowmem_max_new_tokens=6",
             "eval.batch_size=2"]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama trained for a few steps on the synthetic MUSE documents (varied generations), saved as HF."""
    from dsunlearn.data.collate import pad_batch
    from dsunlearn.suites import get_suite

    cfg, tok, model = tiny_suite_model("muse", OVERRIDES)
    torch.manual_seed(0)
    windows = get_suite("muse").finetune_set(cfg.data, "full").encode(tok, cfg.data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        batch = pad_batch([windows[(2 * step + j) % len(windows)] for j in range(2)], tok.pad_token_id)
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return save_model(model, tok, tmp_path_factory.mktemp("muse_model"))


def _numbers(log):
    """Every number of a MUSE log, by path, and every text."""
    out = {}

    def walk(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}")
        else:
            out[path] = x

    walk(log, "")
    return out


def _check(a, b, atol):
    na, nb = _numbers(a), _numbers(b)
    assert na.keys() == nb.keys()
    for path, v in na.items():
        if isinstance(v, float):
            assert v == pytest.approx(nb[path], abs=atol), path
        else:
            assert v == nb[path], path


def test_one_rank_equals_two_ranks_plain_and_zero3(model_dir):
    (one,) = run_distributed(plain_and_zero3_logs, 1, "muse", OVERRIDES, model_dir)
    two = run_distributed(plain_and_zero3_logs, 2, "muse", OVERRIDES, model_dir)
    assert two[0] == two[1]  # every rank gets the whole log
    (plain1, zero3_1), (plain2, zero3_2) = one, two[0]
    assert plain1 == plain2  # same global batches, same padding: the same floats and texts
    for other in (zero3_1, zero3_2):  # ZeRO-3: the same arithmetic on gathered parameters, float noise only
        _check(plain1, other, atol=1e-5)
    gens = [v["generation"] for m in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE")
            for v in plain1[m]["value_by_index"].values()]  # fmt: skip
    assert len(set(gens)) >= 2  # not one constant string
    scores = [v["score"] for v in plain1["mia_loss"]["forget"]["value_by_index"].values()]
    assert len(set(scores)) == len(scores)  # per-item numbers, not a constant
