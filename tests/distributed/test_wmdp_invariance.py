"""Distributed WMDP evaluation: 1 rank and 2 ranks give the same per-question log-likelihoods, predictions and
accuracies, for a plain HF model and for a DeepSpeed ZeRO-3 engine's module (dummy forwards in lockstep)."""

import pytest
import torch

from helpers.spawn import run_distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # two spawns + ZeRO-3 on gloo

# 5 questions per set, 4 sets, batches of 3: 7 global batches, the last round a dummy on rank 1 under ZeRO-3.
OVERRIDES = ["data.suite=wmdp", "data.wmdp.n_hazard=5", "data.wmdp.n_general=5", "eval.batch_size=3"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from dsunlearn.config import TinyModelConfig
    from dsunlearn.config_io import load_config
    from dsunlearn.models.tiny import build_tiny_model, train_tokenizer
    from dsunlearn.suites import get_suite

    cfg = load_config(None, OVERRIDES)
    tok = train_tokenizer(get_suite("wmdp").corpus(cfg.data), 400, 256)
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=256)
    model = build_tiny_model(tiny, tok, seed=0)
    with torch.no_grad():  # varied log-likelihoods, so that the predictions differ across questions
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    path = tmp_path_factory.mktemp("wmdp_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _evaluate(model_dir):
    import deepspeed

    from dsunlearn.config_io import load_config
    from dsunlearn.engine.partitioning import module_is_partitioned
    from dsunlearn.models.load import load_causal_lm, load_tokenizer
    from dsunlearn.suites import get_suite

    cfg = load_config(None, OVERRIDES)
    suite, tok = get_suite("wmdp"), load_tokenizer(model_dir)
    plain = suite.evaluate(load_causal_lm(model_dir), tok, cfg.data, cfg.eval)
    model = load_causal_lm(model_dir)
    ds_cfg = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True, "gradient_clipping": 0.0,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), config=ds_cfg)
    assert module_is_partitioned(engine.module)
    zero3 = suite.evaluate(engine.module, tok, cfg.data, cfg.eval)
    return plain, zero3


def test_one_and_two_ranks_give_the_same_wmdp_log(model_dir):
    ((one_plain, one_zero3),) = run_distributed(_evaluate, 1, model_dir)
    two = run_distributed(_evaluate, 2, model_dir)
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
