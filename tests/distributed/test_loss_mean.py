"""`objective.loss_mean: micro_batch` (open-unlearning's normalisation) against a hand-worked example and the
float64 reference, on real 2-rank ZeRO-2 / partitioned ZeRO-3 engines and on 1 rank.

Under micro_batch each loss of a step is the mean over the micro-batches of the whole global batch of each
micro-batch's own mean (docs/methods.md#normalisation). The global batch of 8 is cut into the same four
micro-batches of 2 by 2 ranks x accum 2 and by 1 rank x accum 4 (data/sampler.py), so those two runs must agree,
and both must equal the reference doing the same on one process in float64 (`helpers/reference_unlearn.py`,
`mean` of its micro-batches). The synthetic TOFU answers differ in length, so the result differs from the
global-batch mean: checked too, so that the setting cannot silently be ignored.
"""

from __future__ import annotations

import math

import pytest
import torch
from distributed import test_unlearn_sharded as sharded
from distributed.test_unlearn_sharded import STEPS, _overrides, _worker

from helpers.reference_unlearn import max_abs_diff, reference_unlearn
from helpers.spawn import run_distributed

env = sharded.env  # the same fixture: the tiny model with odd-sized biases and the partitioned ZeRO-3 config
MICRO = ["objective.loss_mean=micro_batch"]
SGD_ATOL = 1e-6


def test_micro_batch_mean_hand_worked():
    """Two micro-batches on one rank: A with one answer token of p = 1/2, B with three of p = 1/4 each.
    Global mean: (log 2 + 3 log 4) / 4 = 1.75 log 2; mean of the micro-batch means: (log 2 + log 4) / 2 =
    1.5 log 2. The closures' back-propagated values summed over the step's micro-batches are these, and each
    record's `mean_part` adds up to the same number."""
    from dsunlearn.data.collate import Encoded
    from dsunlearn.engine.unlearn_engine import MicroBatch
    from dsunlearn.unlearn_losses import mean_parts, nll_loss

    # vocab 4; the answer token is id 0; logits log([2, 1, 1, 0]) -> p(0) = 1/2, logits 0 -> p(0) = 1/4
    half = torch.log(torch.tensor([2.0, 1.0, 1.0, 1e-30]))
    a = Encoded(input_ids=[1, 0], labels=[-100, 0])
    b = Encoded(input_ids=[1, 0, 0, 0], labels=[-100, 0, 0, 0])
    batches = [MicroBatch.build([a], [0], 3, "cpu"), MicroBatch.build([b], [0], 3, "cpu")]
    logits = [torch.stack([half, torch.zeros(4)])[None], torch.zeros(1, 4, 4)]
    for mode, want in (("global", 1.75 * math.log(2)), ("micro_batch", 1.5 * math.log(2))):
        fn = nll_loss(1.0, 4.0, n_micro_global=2, loss_mean=mode)
        outs = [fn(mb, lg) for mb, lg in zip(batches, logits, strict=True)]
        assert sum(float(o[0]) for o in outs) == pytest.approx(want, rel=1e-6), mode
        assert mean_parts([o[1] for o in outs]) == pytest.approx(want, rel=1e-6), mode


def _runs(env, world: int) -> dict:
    accum = 4 // world  # micro 2: the same four micro-batches of the global batch of 8 on 1 and 2 ranks
    runs = {}
    for st in ("z2", "z3") if world == 2 else ("z2",):
        runs[f"gru_graddiff_{st}"] = (_overrides(env, st, "graddiff", "sgd", geffect=1, micro=2, accum=accum) + MICRO,
                                      False)  # fmt: skip
    # the combined path (no geometry): npo's sequence unit and the retain NLL into the same buffers
    runs["npo_z2"] = (_overrides(env, "z2", "npo", "sgd", gru=False, micro=2, accum=accum) + MICRO, False)
    return runs


@pytest.fixture(scope="module")
def results(env):
    two = _runs(env, 2)
    r0, _ = run_distributed(_worker, 2, two)
    (one,) = run_distributed(_worker, 1, _runs(env, 1))
    for name, (ov, _) in two.items():
        r0[name]["overrides"] = ov
    return r0, one


def _reference(overrides, mode: str):
    from dsunlearn.config_io import load_config

    ov = [o for o in overrides if not o.startswith("objective.loss_mean")] + [f"objective.loss_mean={mode}"]
    cfg = load_config("tiny_npo", ov)
    return reference_unlearn(cfg, STEPS, world=2, geffect=cfg.geometry.geffect_every == 1)


@pytest.mark.parametrize("name", ["gru_graddiff_z2", "gru_graddiff_z3", "npo_z2"])
def test_micro_batch_mean_matches_float64_reference(results, name):
    two, one = results
    res = two[name]
    ref = _reference(res["overrides"], "micro_batch")
    assert max_abs_diff(res["params"], ref.final) <= SGD_ATOL
    for got, want in zip(res["records"], ref.steps, strict=True):
        assert got["loss_forget"] == pytest.approx(want.loss_forget, rel=1e-5)  # the logged loss is the micro mean
        assert got["loss_retain"] == pytest.approx(want.loss_retain, rel=1e-5)
        if want.gru_dot is not None and "gru_dot" in got:
            assert got["gru_dot"] == pytest.approx(want.gru_dot, rel=1e-5, abs=1e-12)
    # the setting matters here: the global-batch mean moves the weights elsewhere
    assert max_abs_diff(ref.final, _reference(res["overrides"], "global").final) > 100 * SGD_ATOL


@pytest.mark.parametrize("name", ["gru_graddiff_z2", "npo_z2"])
def test_micro_batch_mean_one_rank_equals_two(results, name):
    two, one = results
    assert (one[name]["world"], one[name]["accum"], two[name]["world"], two[name]["accum"]) == (1, 4, 2, 2)
    assert max_abs_diff(one[name]["params"], two[name]["params"]) <= SGD_ATOL
