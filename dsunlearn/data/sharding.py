"""Deal fixed global batches of items round-robin to ranks (for evaluation-style passes over a dataset).

Batch j = items[j*bs:(j+1)*bs] goes to rank j % world. Every item is always computed in the same batch with
the same padding, so results do not depend on the world size; every rank runs the same number of rounds
(`None` = a dummy round: ZeRO-3 forwards are collective and must stay in lockstep).

`order` (``eval.length_batches``): the batches are cut from a permutation of the items instead, e.g.
`length_order` (longest first: less padding per batch, and a batch too large for memory fails in the first
round, not the last). Still fixed globally, so still the same numbers on any world size; but an item's padded
width changes, and with it the float rounding of its results (about 1e-6 relative on CPU): not bit-identical to
the fixed item-order batches.
"""

from __future__ import annotations

import math
from typing import Any


def round_robin_rounds(
    n: int, batch_size: int, rank: int, world: int, order: list[int] | None = None
) -> list[list[int] | None]:
    """This rank's batches of item indices, one per round; round r gives rank k the global batch r*world + k,
    `None` when that is past the last batch (a dummy round). Global batch j holds positions j*bs..(j+1)*bs-1
    of `order` (a permutation of range(n); None: the items in order)."""
    if order is not None and sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of range({n})")
    n_batches = math.ceil(n / batch_size)
    rounds = math.ceil(n_batches / world)
    out: list[list[int] | None] = []
    for r in range(rounds):
        j = r * world + rank
        if j >= n_batches:
            out.append(None)
            continue
        positions = range(j * batch_size, min(n, (j + 1) * batch_size))
        out.append([order[p] for p in positions] if order is not None else list(positions))
    return out


def length_order(lengths: list[int]) -> list[int]:
    """Item indices longest first (ties by index): batches cut from it hold items of similar length."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def eval_order(eval_cfg, lengths: list[int]) -> list[int] | None:
    """The batch order of an evaluation pass over items of these token `lengths`: `length_order` with
    ``eval.length_batches``, else None (item order, the default: bit-identical to every earlier log)."""
    return length_order(lengths) if eval_cfg.length_batches else None


def gather_items(mine: dict[int, Any], n: int) -> list[Any]:
    """Merge every rank's ``{item index: value}`` and return the values of items 0..n-1 on all ranks."""
    from dsunlearn import dist

    merged: dict[int, Any] = {}
    for part in dist.all_gather_object(mine):
        merged.update(part)
    return [merged[i] for i in range(n)]
