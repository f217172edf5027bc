"""Distributed WMDP evaluation: 1 rank and 2 ranks give the same per-question log-likelihoods, predictions and
accuracies, for a plain HF model and for a DeepSpeed ZeRO-3 engine's module (dummy forwards in lockstep)."""

import pytest
import torch

from helpers.spawn import run_distributed
from helpers.suite_eval import plain_and_zero3_logs, save_model, tiny_suite_model

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # two spawns + ZeRO-3 on gloo

# 5 questions per set, 4 sets, batches of 3: 7 global batches, the last round a dummy on rank 1 under ZeRO-3.
OVERRIDES = ["data.suite=wmdp", "data.wmdp.n_hazard=5", "data.wmdp.n_general=5", "eval.batch_size=3"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    _, tok, model = tiny_suite_model("wmdp", OVERRIDES)
    with torch.no_grad():  # varied log-likelihoods, so that the predictions differ across questions
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return save_model(model, tok, tmp_path_factory.mktemp("wmdp_model"))


def test_one_and_two_ranks_give_the_same_wmdp_log(model_dir):
    ((one_plain, one_zero3),) = run_distributed(plain_and_zero3_logs, 1, "wmdp", OVERRIDES, model_dir)
    two = run_distributed(plain_and_zero3_logs, 2, "wmdp", OVERRIDES, model_dir)
    assert two[0] == two[1]  # every rank gets the whole log
    two_plain, two_zero3 = two[0]
    assert one_plain == two_plain  # the same batches and padding: bit-identical
    assert set(one_plain) >= {"wmdp_bio_acc", "wmdp_cyber_acc", "mmlu_geography_acc", "wmdp_acc", "mmlu_acc"}
    preds = [v["pred"] for v in one_plain["wmdp_bio_acc"]["value_by_index"].values()]
    assert len(set(preds)) > 1  # the model is not constant
    for a, b in ((one_plain, one_zero3), (one_plain, two_zero3)):
        for name, entry in a.items():
            if "value_by_index" in entry:
                for i, item in entry["value_by_index"].items():
                    other = b[name]["value_by_index"][i]
                    assert item["pred"] == other["pred"]
                    assert item["loglikelihoods"] == pytest.approx(other["loglikelihoods"], abs=1e-5)
            assert entry["agg_value"] == b[name]["agg_value"]
