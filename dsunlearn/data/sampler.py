"""Which samples each rank sees at each step: the same global batch whatever the world size.

A stream is the concatenation of seeded permutations of the dataset, epoch after epoch (no sample dropped: the
last partial batch of an epoch continues into the next permutation). Global batch b is stream[b*G:(b+1)*G]
with G = micro x world x accum; accumulation micro-step k of rank r takes the contiguous slice
[(k*world + r)*micro, ... + micro) of it. So 1 rank x 8 and 2 ranks x 4 train on the same 8 samples in the
same order, every rank sees different samples, and the position is just the step index (resume is exact).

Forget and retain streams are independent (different seeds); in unlearning the forget set defines the epochs
and the retain stream is drawn alongside it.
"""

from __future__ import annotations

import math

import torch

from dsunlearn.errors import ConfigError, DataError


class BatchStream:
    """Deterministic indices for step `b`, micro-step `k`, rank `r` over a dataset of size n."""

    def __init__(self, n: int, global_batch: int, micro: int, world: int, seed: int, shuffle: bool = True,
                 what: str = "the training data"):  # fmt: skip
        if micro * world <= 0 or global_batch % (micro * world):
            raise ValueError(f"global batch {global_batch} is not a multiple of micro {micro} x world {world}")
        if global_batch > n:  # one step would hold some items twice (and 10^9 indices would be built)
            raise DataError(
                f"the global batch of {global_batch} samples (engine.micro_batch_size {micro} x world size {world} x "
                f"grad_accum_steps {global_batch // (micro * world)}) is larger than the {n} items of {what}; "
                f"set engine.global_batch_size / engine.micro_batch_size so the global batch is at most {n}"
            )
        if not 0 <= seed <= 2**32:  # run.seed (+ 1 for retain): seed x 1_000_003 + epoch stays below 2**63
            raise ConfigError(f"run.seed={seed} is out of range: must be in [0, {2**32 - 1}]")
        self.n, self.global_batch, self.micro, self.world = n, global_batch, micro, world
        self.accum = global_batch // (micro * world)
        self.seed, self.shuffle = seed, shuffle
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            else:
                self._perms[epoch] = list(range(self.n))
            if len(self._perms) > 4:  # only neighbouring epochs are ever needed
                self._perms.pop(min(self._perms))
        return self._perms[epoch]

    def _at(self, pos: int) -> int:
        return self._perm(pos // self.n)[pos % self.n]

    def global_indices(self, step: int) -> list[int]:
        start = step * self.global_batch
        return [self._at(p) for p in range(start, start + self.global_batch)]

    def micro_indices(self, step: int, micro_step: int, rank: int) -> list[int]:
        off = step * self.global_batch + (micro_step * self.world + rank) * self.micro
        return [self._at(p) for p in range(off, off + self.micro)]

    def steps_for_epochs(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.n / self.global_batch))
