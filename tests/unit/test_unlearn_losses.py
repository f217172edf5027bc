"""The forget-loss closure (`unlearn_losses.objective_loss`) on one process: a logits objective (UNDIAL) gets the
policy's logits and the reference's, a log-prob objective (SatImp) log-probs, and the scaled micro-batch losses
add up to the global-batch mean of docs/methods.md (or, for positions="all", the mean of the micro-batch means)."""

from __future__ import annotations

import pytest
import torch

from dsunlearn.engine.unlearn_engine import MicroBatch
from dsunlearn.objectives import get_objective, satimp, token_logprobs, undial
from dsunlearn.unlearn_losses import objective_loss

V = 11


def _micro_batches():
    """Two micro-batches of different lengths and answer-token counts (as two accumulation steps)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for b, t, answer_from in ((2, 7, 3), (3, 5, 2)):
        labels = torch.randint(0, V, (b, t), generator=g)
        labels[:, :answer_from] = -100
        ids = torch.randint(0, V, (b, t), generator=g)
        mb = MicroBatch(list(range(b)), ids, torch.ones(b, t, dtype=torch.long), labels)
        policy = 2 * torch.randn(b, t, V, generator=g, dtype=torch.float64)
        ref = 2 * torch.randn(b, t, V, generator=g, dtype=torch.float64)
        out.append((mb, policy, ref))
    return out


def _reference_logits(batches):
    """The frozen reference's logits of each micro-batch, looked up by its input ids (what ReferenceModel.logits
    returns on the device)."""
    table = {id(mb.input_ids): ref for mb, _, ref in batches}
    calls = []

    def ref_logits(input_ids, attention_mask):
        calls.append(input_ids.shape)
        return table[id(input_ids)]

    return ref_logits, calls


@pytest.mark.parametrize("positions", ["answer", "all"])
def test_undial_gets_the_reference_logits_and_the_global_normalisation(positions):
    batches = _micro_batches()
    ref_logits, calls = _reference_logits(batches)
    spec = get_objective("undial")
    params = spec.resolve({"positions": positions, "beta": 3.0})
    count = float(sum((mb.labels[:, 1:] != -100).sum() for mb, _, _ in batches))  # global answer tokens
    fn = objective_loss(spec, params, 0.5, count, ref_logits, n_micro_global=2)
    total = sum(fn(mb, policy)[0] for mb, policy, _ in batches)
    assert calls == [mb.input_ids.shape for mb, _, _ in batches]  # once per micro-batch
    parts = [undial(policy, ref, mb.labels, beta=3.0, positions=positions) for mb, policy, ref in batches]
    if positions == "answer":  # one mean over every answer position of the global batch
        expected = 0.5 * sum(p.loss_sum for p in parts) / count
    else:  # open-unlearning: each micro-batch's mean over all its positions, averaged over the micro-batches
        expected = 0.5 * sum(p.loss_sum / p.count for p in parts) / 2
        assert parts[0].count == 2 * 6 and parts[1].count == 3 * 4
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-12)


def test_a_logits_objective_without_reference_logits_is_refused():
    with pytest.raises(ValueError, match="undial.*ref_logits"):
        objective_loss(get_objective("undial"), {"beta": 10.0, "positions": "answer"}, 1.0, 1.0)


def test_satimp_gets_log_probs_and_the_global_token_mean():
    batches = _micro_batches()
    spec = get_objective("satimp")
    count = float(sum((mb.labels[:, 1:] != -100).sum() for mb, _, _ in batches))
    fn = objective_loss(spec, spec.resolve(), 2.0, count)
    total = sum(fn(mb, policy)[0] for mb, policy, _ in batches)
    expected = 2.0 * sum(satimp(*token_logprobs(policy, mb.labels)).loss_sum for mb, policy, _ in batches) / count
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-12)
