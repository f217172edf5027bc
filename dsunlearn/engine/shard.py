"""`ShardedGrad`: this rank's elements of the reduced gradient, at every ZeRO stage, and the geometry on them.

Every element of the model's gradient belongs to exactly one rank's shard (see `ds_internals` for what a
shard is at each stage), so a global inner product is a sum of shard-local partial sums: one all_reduce of
a few float64 numbers. No rank ever gathers the full gradient, except to write back a *replicated* gradient
(stage 0, and BF16_Optimizer at ZeRO-1 with bf16 + fp32 accumulation), where DeepSpeed already keeps the
full gradient on every rank and computes the clipping norm over it, so every rank must hold all of it.

Cost model (P trainable parameters, N ranks, G layer groups, k inner products):
- read_grad_shard: one copy of P/N elements into a fresh fp32 flat tensor (the shard owns its memory, so a
  second backward cannot overwrite it; no clone needed before it). Memory: 4P/N bytes per live shard.
- dot / norm_sq: P/N multiply-adds in float64 (chunked casts, at most 2 * CHUNK float64 temporaries) + one
  all_reduce of 1 float64 (`dots`: k pairs, one all_reduce of k). per_group_dot / inner_products: one float64 dot
  per run of same-group elements, no per-element scatter;
  all k pairs share one all_reduce of k*G float64 (latency-bound, a few microseconds of payload).
- axpy / scale_: P/N fp32 flops, no communication.
- write_grad_shard: one copy of P/N back into DeepSpeed's buffers (ZeRO-1/2/3); the replicated kinds add
  one all_gather of P elements (about half the traffic of the all-reduce DeepSpeed already did) and a
  transient P-element buffer.
- zero_grad_buffers: memset of the local gradient buffers.
- read_live_grad: nothing copied where DeepSpeed's buffer holds this rank's fp32 fragments and `step()` reads
  them there (ZeRO-1/2/3 with fp32 gradients, no offload): the last gradient of a step is read and written in
  place (`LiveGrad`); elsewhere one copy, written back by `LiveGrad.commit`.
- gram: the k x k Gram matrix of k gradients (per layer group or total) in ONE pass over them: per piece of
  `PIECE` elements one float64 [k, n] x [n, k] product on a cached copy of the piece; one all_reduce.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from dsunlearn import dist
from dsunlearn.engine import ds_internals as dsi
from dsunlearn.engine.groups import group_names, group_of

CHUNK = 1 << 22  # elements per float64 cast: bounds temporaries to 2 * 32 MiB whatever the shard size
# Elements per piece of the one-pass kernels (`gram`, GRU's fused update): every operand's piece stays in cache
# between the few element-wise ops on it (4 operands x 256 KiB of fp32 on CPU), so each pass reads main memory
# once. On an accelerator a larger piece amortises the kernel launches instead.
PIECE = 1 << 16
PIECE_ACCEL = 1 << 22


@dataclass(frozen=True)
class Segment:
    """One parameter's fragment in the flat shard: flat[offset : offset + numel] holds elements
    [start, start + numel) of the flattened parameter `name` (full size `param_numel`), in layer group `group`."""

    name: str
    group: int
    offset: int
    numel: int
    start: int
    param_numel: int


@dataclass(frozen=True, eq=False)
class ShardLayout:
    """The segments of one engine on this rank, shared by every shard read from it (compared by identity)."""

    segments: tuple[Segment, ...]
    groups: tuple[str, ...]
    numel: int
    # Maximal runs (offset, numel, group) of consecutive elements in one group: O(segments) memory. (A group id
    # per element would cost 8 bytes per shard element, twice the fp32 shard itself.)
    runs: tuple[tuple[int, int, int], ...] = field(repr=False)

    def group_ids(self) -> torch.Tensor:
        """[numel] int64 group index of every flat element (materialised on demand, for tests/diagnostics)."""
        ids = torch.empty(self.numel, dtype=torch.int64)
        for off, n, g in self.runs:
            ids[off : off + n] = g
        return ids

    @classmethod
    def build(
        cls, segments: Sequence[tuple[str, int, int, int]], all_names: Iterable[str], device: torch.device
    ) -> ShardLayout:
        """segments: (name, numel, start, param_numel) in flat order; all_names: every parameter name on every
        rank, so that all ranks agree on the groups (a rank may hold no element of some group)."""
        groups = tuple(group_names(all_names))
        index = {g: i for i, g in enumerate(groups)}
        segs, offset = [], 0
        for name, numel, start, param_numel in segments:
            segs.append(Segment(name, index[group_of(name)], offset, numel, start, param_numel))
            offset += numel
        runs: list[list[int]] = []
        for s in segs:
            if s.numel == 0:
                continue
            if runs and runs[-1][2] == s.group and runs[-1][0] + runs[-1][1] == s.offset:
                runs[-1][1] += s.numel
            else:
                runs.append([s.offset, s.numel, s.group])
        return cls(tuple(segs), groups, offset, tuple(tuple(r) for r in runs))


class ShardedGrad:
    """This rank's gradient elements (`flat` [n] fp32) with their `layout` (segments, groups).

    Collective methods (`dot`, `norm_sq`, `norm`, `per_group_dot`, `inner_products`) must be called on every
    rank in the same order; they return the global value, identical on all ranks.
    """

    def __init__(self, flat: torch.Tensor, layout: ShardLayout):
        if flat.shape != (layout.numel,):
            raise ValueError(f"flat shard has shape {tuple(flat.shape)}, layout expects ({layout.numel},)")
        self.flat, self.layout = flat, layout

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.layout.segments

    @property
    def groups(self) -> tuple[str, ...]:
        return self.layout.groups

    def clone(self) -> ShardedGrad:
        return ShardedGrad(self.flat.clone(), self.layout)

    def zeros_like(self) -> ShardedGrad:
        return ShardedGrad(torch.zeros_like(self.flat), self.layout)

    def _check(self, other: ShardedGrad) -> None:
        if other.layout is not self.layout:
            raise ValueError("ShardedGrads come from different layouts (engines or parameter lists)")

    def _local_dot(self, other: ShardedGrad) -> torch.Tensor:
        """Shard-local sum of products, accumulated in float64 (0-dim)."""
        self._check(other)
        acc = torch.zeros((), dtype=torch.float64, device=self.flat.device)
        for i in range(0, self.layout.numel, CHUNK):
            a, b = self.flat[i : i + CHUNK], other.flat[i : i + CHUNK]
            acc += torch.dot(a.double(), b.double())
        return acc

    def _local_group_dot(self, other: ShardedGrad, out: torch.Tensor) -> torch.Tensor:
        """Add shard-local per-group sums of products into out [G] float64: one float64 dot per run of
        consecutive same-group elements (chunked), no per-element scatter."""
        self._check(other)
        for off, n, g in self.layout.runs:
            for i in range(off, off + n, CHUNK):
                j = min(off + n, i + CHUNK)
                out[g] += torch.dot(self.flat[i:j].double(), other.flat[i:j].double())
        return out

    def dot(self, other: ShardedGrad) -> float:
        """<self, other> over all parameters, all ranks: float64 partial sum, one all_reduce of one number."""
        return float(dist.all_reduce_sum(self._local_dot(other).reshape(1)).item())

    def norm_sq(self) -> float:
        return self.dot(self)

    def norm(self) -> float:
        return self.norm_sq() ** 0.5

    def per_group_dot(self, other: ShardedGrad) -> torch.Tensor:
        """[G] float64: <self, other> restricted to each layer group (`groups` order); sums to `dot`."""
        return self.inner_products([(self, other)])[0]

    @staticmethod
    def inner_products(pairs: Sequence[tuple[ShardedGrad, ShardedGrad]]) -> torch.Tensor:
        """[k, G] float64 per-group inner products of k pairs with ONE all_reduce; row sums are the totals."""
        if not pairs:
            raise ValueError("inner_products needs at least one pair")
        layout = pairs[0][0].layout
        out = torch.zeros(len(pairs), len(layout.groups), dtype=torch.float64, device=pairs[0][0].flat.device)
        for row, (a, b) in zip(out, pairs, strict=True):
            a._check(b)
            if a.layout is not layout:
                raise ValueError("all pairs of inner_products must share one layout")
            a._local_group_dot(b, row)
        return dist.all_reduce_sum(out)

    @staticmethod
    def dots(pairs: Sequence[tuple[ShardedGrad, ShardedGrad]]) -> torch.Tensor:
        """[k] float64 global inner products of k pairs (totals only) with ONE all_reduce: GRU's fast path."""
        if not pairs:
            raise ValueError("dots needs at least one pair")
        local = torch.stack([a._local_dot(b) for a, b in pairs])
        return dist.all_reduce_sum(local)

    def axpy(self, a: float, other: ShardedGrad) -> ShardedGrad:
        """self += a * other, in place (local, no communication); returns self."""
        self._check(other)
        self.flat.add_(other.flat, alpha=a)
        return self

    def scale_(self, a: float) -> ShardedGrad:
        self.flat.mul_(a)
        return self


# Layouts per engine and parameter list: built once (the partitioning is fixed after deepspeed.initialize).
_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _params(named_params) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in named_params if p.requires_grad]


def _layout(engine, kind: dsi.EngineKind, named: list[tuple[str, torch.nn.Parameter]]) -> ShardLayout:
    per_engine = _LAYOUTS.setdefault(engine, {})
    key = tuple(n for n, _ in named)
    if key not in per_engine:
        r, w = dist.rank(), dist.world_size()
        segs = []
        for name, p in named:
            if kind.replicated:
                start, k = dsi.replicated_slice(p.numel(), r, w)
            else:
                frag = dsi.local_grad_fragment(engine, kind, p, r, w)
                k, start = (0, 0) if frag is None else (frag[0].numel(), frag[1])
            if k:
                segs.append((name, k, start, p.ds_numel if kind.kind == dsi.ZERO3 else p.numel()))
        per_engine[key] = ShardLayout.build(segs, key, dist.device())
    return per_engine[key]


def read_grad_shard(engine, named_params=None) -> ShardedGrad:
    """This rank's shard of the reduced gradient after `engine.backward` at an accumulation boundary (with
    gradient_accumulation_steps = 1, every backward), as an owned fp32 copy: flat [n_local].

    named_params: (name, param) pairs, default `engine.module.named_parameters()` (tied weights once);
    frozen parameters are skipped. Call on every rank with the same list.
    """
    kind = dsi.engine_kind(engine)
    named = _params(engine.module.named_parameters() if named_params is None else named_params)
    layout = _layout(engine, kind, named)
    flat = torch.empty(layout.numel, dtype=torch.float32, device=dist.device())
    params = dict(named)
    r, w = dist.rank(), dist.world_size()
    for s in layout.segments:
        frag, start = dsi.local_grad_fragment(engine, kind, params[s.name], r, w)
        if frag.numel() != s.numel or start != s.start:
            raise RuntimeError(f"DeepSpeed fragment of {s.name} moved since the layout was built")
        flat[s.offset : s.offset + s.numel].copy_(frag)
    return ShardedGrad(flat, layout)


def write_grad_shard(engine, shard: ShardedGrad, named_params=None) -> None:
    """Write `shard` into DeepSpeed's gradient buffers so that the next `engine.step()` (clipping, loss
    scaling, optimizer) acts on it. Collective at stage 0 and with the bf16 optimizer (an all_gather)."""
    kind = dsi.engine_kind(engine)
    named = _params(engine.module.named_parameters() if named_params is None else named_params)
    if _layout(engine, kind, named) is not shard.layout:
        raise ValueError("this shard was not read from this engine with this parameter list")
    if kind.replicated:
        dsi.gather_replicated_grad(engine, kind, [p for _, p in named], shard.flat)
        return
    params = dict(named)
    for s in shard.segments:
        dsi.set_local_grad_fragment(engine, kind, params[s.name], shard.flat[s.offset : s.offset + s.numel])


def zero_grad_buffers(engine, named_params=None) -> None:
    """Reset the gradient buffers so that the next backward does not add onto the last one (call between
    the forget and the retain backward, after reading the first shard)."""
    kind = dsi.engine_kind(engine)
    named = _params(engine.module.named_parameters() if named_params is None else named_params)
    dsi.reset_grad_buffers(engine, kind, [p for _, p in named])


def get_local_param_fragment(engine, p: torch.nn.Parameter):
    """This rank's fp32 master fragment of p: (tensor [k] fp32, start in flattened p) or None (for delta
    checkpoints). Its layout is the optimizer's partition: see `ds_internals.get_local_param_fragment`."""
    return dsi.get_local_param_fragment(engine, p)


class LiveGrad:
    """The last backward's reduced gradient, left where DeepSpeed holds it (`read_live_grad`).

    In place (`frags`: this rank's fp32 fragment of each layout segment, views into the buffers that
    `engine.step()` reads): reading it copies nothing, and writing a piece of it is writing the gradient the
    optimizer will use. Otherwise (bf16 or offloaded buffers, replicated kinds) `copy` holds an owned fp32 copy
    and `commit()` writes it back. Either way, `piece(lo, hi, si)` is the [hi - lo] fp32 view of flat elements
    [lo, hi) inside segment si, for the one-pass kernels; `commit()` must follow the last write."""

    def __init__(self, engine, named, layout: ShardLayout, frags: list[torch.Tensor] | None, copy: ShardedGrad | None):
        self.engine, self.named, self.layout, self.frags, self.copy = engine, named, layout, frags, copy

    @property
    def in_place(self) -> bool:
        return self.frags is not None

    def piece(self, lo: int, hi: int, si: int) -> torch.Tensor:
        if self.frags is None:
            return self.copy.flat[lo:hi]
        off = self.layout.segments[si].offset
        return self.frags[si][lo - off : hi - off]

    def to_shard(self) -> ShardedGrad:
        """An owned fp32 copy (what `read_grad_shard` returns)."""
        if self.frags is None:
            return self.copy.clone()
        flat = torch.empty(self.layout.numel, dtype=torch.float32, device=dist.device())
        for s, f in zip(self.layout.segments, self.frags, strict=True):
            flat[s.offset : s.offset + s.numel].copy_(f)
        return ShardedGrad(flat, self.layout)

    def commit(self) -> None:
        """Make what was written the gradient `engine.step()` acts on (a write-back only for a copy; collective
        for the replicated kinds). Called by `UnlearnEngine.set_grad`, not by the kernels that write."""
        if self.frags is None:
            write_grad_shard(self.engine, self.copy, self.named)


def device_of(x) -> torch.device:
    """Where a `ShardedGrad`'s or `LiveGrad`'s elements live."""
    if isinstance(x, ShardedGrad):
        return x.flat.device
    return x.copy.flat.device if x.frags is None else (x.frags[0].device if x.frags else dist.device())


def piece_of(x, lo: int, hi: int, si: int) -> torch.Tensor:
    return x.piece(lo, hi, si) if isinstance(x, LiveGrad) else x.flat[lo:hi]


def pieces(layout: ShardLayout, device: torch.device, size: int | None = None) -> list[tuple[int, int, int, int]]:
    """(lo, hi, segment index, group) covering flat [0, numel) in order, each inside one segment and at most
    `size` (default `PIECE` on CPU, `PIECE_ACCEL` on `device` otherwise) elements long: the unit of the one-pass
    kernels."""
    if size is None:
        size = PIECE if device.type == "cpu" else PIECE_ACCEL
    out = []
    for si, s in enumerate(layout.segments):
        for lo in range(s.offset, s.offset + s.numel, size):
            out.append((lo, min(lo + size, s.offset + s.numel), si, s.group))
    return out


def gram(vectors: Sequence, per_group: bool = False) -> torch.Tensor:
    """Gram matrix K[i, j] = <v_i, v_j> of k gradients (`ShardedGrad` or `LiveGrad` of one layout), over all
    parameters and ranks: [k, k] float64, or [G, k, k] restricted to each layer group (sums to the total).

    One pass: each piece of the k vectors is copied into one float64 [k, n] buffer (in cache: k x `PIECE`
    elements) and multiplied by its transpose, products and sums in float64, as the pairwise `dot`s
    (float32 products would move the totals by ~1e-7 relative between differently cut shards, where the
    stage-equivalence tests allow 1e-12). One all_reduce of k*k (or G*k*k) numbers."""
    if not vectors:
        raise ValueError("gram needs at least one vector")
    layout = vectors[0].layout
    if any(v.layout is not layout for v in vectors):
        raise ValueError("ShardedGrads come from different layouts (engines or parameter lists)")
    k, n_groups = len(vectors), len(layout.groups)
    device = device_of(vectors[0])
    acc = torch.zeros(n_groups if per_group else 1, k, k, dtype=torch.float64, device=device)
    ps = pieces(layout, device)
    buf = torch.empty(k, max((hi - lo for lo, hi, _, _ in ps), default=0), dtype=torch.float64, device=device)
    for lo, hi, si, g in ps:
        m = buf[:, : hi - lo]
        for row, v in zip(m, vectors, strict=True):
            row.copy_(piece_of(v, lo, hi, si))
        acc[g if per_group else 0] += m @ m.T
    acc = dist.all_reduce_sum(acc)
    return acc if per_group else acc[0]


def axpy_piece(out_piece: torch.Tensor, terms: Sequence[tuple[float, torch.Tensor]], alias: int | None) -> None:
    """out_piece <- sum_i c_i x_i over terms (c_i, x_i), in order; terms[alias] is out_piece itself (scaled first,
    the others added onto it) or None (out_piece is overwritten: it may hold an input already consumed)."""
    if alias is None:
        c0, x0 = terms[0]
        torch.mul(x0, c0, out=out_piece)
        rest = terms[1:]
    else:
        out_piece.mul_(terms[alias][0])
        rest = [*terms[:alias], *terms[alias + 1 :]]
    for c, x in rest:
        if c != 0.0:
            out_piece.add_(x, alpha=c)


def combine_into(out, terms: Sequence[tuple[float, object]]) -> None:
    """out <- sum_i c_i v_i (`ShardedGrad` / `LiveGrad` of one layout; out may be one of the v_i), one pass."""
    alias = next((i for i, (_, v) in enumerate(terms) if v is out), None)
    for lo, hi, si, _ in pieces(out.layout, device_of(out)):
        axpy_piece(piece_of(out, lo, hi, si), [(c, piece_of(v, lo, hi, si)) for c, v in terms], alias)


def read_live_grad(engine, named_params=None, in_place: bool = True) -> LiveGrad:
    """The reduced gradient of the last backward as a `LiveGrad`: in place where DeepSpeed allows it
    (`ds_internals.writable_grad_fragment`) and `in_place`, else one owned copy. Only the LAST gradient of a step
    may be read so: the next backward overwrites it."""
    kind = dsi.engine_kind(engine)
    named = _params(engine.module.named_parameters() if named_params is None else named_params)
    layout = _layout(engine, kind, named)
    if not in_place:
        return LiveGrad(engine, named, layout, None, read_grad_shard(engine, named))
    params = dict(named)
    r, w = dist.rank(), dist.world_size()
    frags = []
    for s in layout.segments:
        frag = dsi.writable_grad_fragment(engine, kind, params[s.name], r, w)
        if frag is None or frag[0].numel() != s.numel or frag[1] != s.start:
            return LiveGrad(engine, named, layout, None, read_grad_shard(engine, named))
        frags.append(frag[0])
    return LiveGrad(engine, named, layout, frags, None)
