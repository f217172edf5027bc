"""Small independent references shared by the metric tests of several suites."""

from __future__ import annotations


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (the O(len a x len b) table): ROUGE-L's core."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def assert_seeded_and_pure(generate) -> str:
    """`generate(seed=...)` neither uses nor advances Python's global RNG and gives byte-identical JSON for a
    seed whatever that RNG's state; returns the JSON of seed 7."""
    import json
    import random

    random.seed(123)
    state = random.getstate()
    a = json.dumps(generate(seed=7), ensure_ascii=False)
    assert random.getstate() == state  # the global RNG is neither used nor advanced
    random.seed(999)
    assert json.dumps(generate(seed=7), ensure_ascii=False) == a
    return a
