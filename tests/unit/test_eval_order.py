"""Evaluation batch orders (data/sharding.py): item order by default, longest first with eval.length_batches;
either way fixed global batches (the same on any world size), every item exactly once."""

import pytest

from dsunlearn.config import EvalConfig
from dsunlearn.data import prompt_format as pf
from dsunlearn.data.collate import encode_qa
from dsunlearn.data.sharding import eval_order, length_order, round_robin_rounds

LENGTHS = [3, 9, 9, 1, 7, 2, 9]


def _global_batches(n, bs, world, order):
    """Every rank's rounds merged into the list of global batches (round r, rank k -> batch r*world + k)."""
    per_rank = [round_robin_rounds(n, bs, k, world, order) for k in range(world)]
    out = []
    for r in range(len(per_rank[0])):
        out += [per_rank[k][r] for k in range(world) if per_rank[k][r] is not None]
    return out


def test_length_order_hand_worked():
    # longest first, ties by index: 9 (1, 2, 6), 7 (4), 3 (0), 2 (5), 1 (3)
    assert length_order(LENGTHS) == [1, 2, 6, 4, 0, 5, 3]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_batches_cut_from_the_order_on_any_world_size(world):
    order = length_order(LENGTHS)
    batches = _global_batches(len(LENGTHS), 2, world, order)
    assert batches == [[1, 2], [6, 4], [0, 5], [3]]  # the same global batches for every world size
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert _global_batches(len(LENGTHS), 2, world, None) == [[0, 1], [2, 3], [4, 5], [6]]  # item order


def test_order_must_be_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        round_robin_rounds(3, 2, 0, 1, [0, 0, 1])


def test_eval_order_only_when_asked():
    assert eval_order(EvalConfig(), LENGTHS) is None
    assert eval_order(EvalConfig(length_batches=True), LENGTHS) == length_order(LENGTHS)


@pytest.mark.parametrize("template", [True, False])
def test_prompt_rendered_once_encodes_the_same(tiny_tokenizer, template):
    """TOFU's evaluation renders each question's prompt once for its 2 + K answers: the same tokens as
    rendering it per answer (chat template, and a plain format)."""
    fmt = pf.resolve(tiny_tokenizer, "auto" if template else "tofu_phi")
    assert fmt.uses_template == template
    q = "Where was the author born?"
    prompt = pf.prompt_text(tiny_tokenizer, fmt, q)
    for a in ("In a small town.", "Nowhere at all, said the record."):
        assert encode_qa(tiny_tokenizer, q, a, 64, fmt=fmt, prompt=prompt) == encode_qa(
            tiny_tokenizer, q, a, 64, fmt=fmt
        )
