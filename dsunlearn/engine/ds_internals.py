"""Every touch of DeepSpeed internals, one small function each. Verified on DeepSpeed 0.19.8 only.

Which optimizer DeepSpeed 0.19 wraps the client optimizer in (`DeepSpeedEngine._do_optimizer_sanity_check`):

| config                                 | `engine.optimizer`              | kind     | reduced gradient      |
|----------------------------------------|---------------------------------|----------|-----------------------|
| ZeRO-0, fp32                           | the client torch optimizer      | `STAGE0` | `p.grad`, every rank  |
| ZeRO-0, bf16 (grad_accum bf16)         | `FP16_(Unfused)Optimizer`       | `STAGE0` | `p.grad`, every rank  |
| ZeRO-0, bf16 + fp32 grad_accum         | DeepSpeed raises                | -        | -                     |
| ZeRO-1, bf16 + fp32 grad_accum, no off.| `BF16_Optimizer`                | `BF16`   | fp32 buf, every rank  |
| ZeRO-1/2, otherwise                    | `DeepSpeedZeroOptimizer`        | `ZERO12` | this rank's partition |
| ZeRO-3                                 | `DeepSpeedZeroOptimizer_Stage3` | `ZERO3`  | this rank's partition |

The shard of a *replicated* gradient (`STAGE0`, `BF16`): rank r of N owns the contiguous slice
[n*r//N, n*(r+1)//N) of every parameter (n = numel), so partial sums over shards add up to each element
exactly once. Writing such a shard back all-gathers the slices into the full buffer on every rank
(see `gather_replicated_grad`): DeepSpeed computes the clipping norm over the full replicated buffer on
each rank, so every rank must hold the same, complete written gradient.

Not supported (refused or unverified): fp16 (its buffers hold loss-scaled gradients: refused, use bf16);
ZeRO-3 hpZ / MiCS partition groups (fragments assume the partition rank is the data-parallel rank);
pipeline / tensor parallelism. `engine.coalesce_grad_reduction()` raises at stage 0 and with BF16_Optimizer
(DeepSpeed 0.19): there, several micro-batches are accumulated under `engine.no_sync()` instead
(`ds_setup.accumulation`).

Observed without a reset between two backwards (the second read then holds the sum of both): stage 0,
ZeRO-3, BF16_Optimizer, ZeRO-1/2 with fp32 accumulation of bf16 grads or with offload. ZeRO-1/2 with fp32
grads and no offload happened to start from zero; reset anyway (tests/distributed/test_shard.py pins this).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsunlearn import dist as _dist
from dsunlearn.errors import ConfigError

STAGE0, BF16, ZERO12, ZERO3 = "stage0", "bf16_optimizer", "zero12", "zero3"


@dataclass(frozen=True)
class EngineKind:
    """What the engine exposes: `kind` (one of the constants above), ZeRO `stage`, `replicated` gradient."""

    kind: str
    stage: int
    offload: bool

    @property
    def replicated(self) -> bool:
        return self.kind in (STAGE0, BF16)


def engine_kind(engine) -> EngineKind:
    """Classify `engine.optimizer` by class (DeepSpeed 0.19: `runtime.zero.stage_1_and_2`, `runtime.zero.stage3`,
    `runtime.bf16_optimizer`), so later calls know which internal buffers hold the reduced gradient."""
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    stage, opt = int(engine.zero_optimization_stage()), engine.optimizer
    if engine.fp16_enabled():
        raise ConfigError(
            "fp16 is not supported for gradient geometry: DeepSpeed keeps loss-scaled fp16 gradients, so inner "
            'products would be off by the loss scale squared; use "bf16": {"enabled": true} instead'
        )
    offload = bool(engine.zero_cpu_offload()) if stage > 0 else False
    if isinstance(opt, DeepSpeedZeroOptimizer_Stage3):
        return EngineKind(ZERO3, stage, offload)
    if isinstance(opt, DeepSpeedZeroOptimizer):
        return EngineKind(ZERO12, stage, offload)
    if isinstance(opt, BF16_Optimizer):
        return EngineKind(BF16, stage, False)
    if stage == 0:
        return EngineKind(STAGE0, 0, False)
    raise ConfigError(
        f"unsupported DeepSpeed optimizer wrapper {type(opt).__name__} at ZeRO stage {stage}: dsunlearn reads "
        "gradient shards of DeepSpeedZeroOptimizer(_Stage3), BF16_Optimizer or a stage-0 engine; "
        "check zero_optimization / bf16 / data_types in the DeepSpeed config"
    )


def replicated_slice(numel: int, rank: int, world: int) -> tuple[int, int]:
    """(start, numel) of the slice of a replicated n-element tensor that `rank` owns: [n*r//N, n*(r+1)//N)."""
    start, end = numel * rank // world, numel * (rank + 1) // world
    return start, end - start


def _bf16_full_buffers(engine) -> dict[int, torch.Tensor]:
    """id(param) -> its full fp32 gradient buffer in `BF16_Optimizer` (0.19: `bf16_groups[i][j]` pairs with
    `fp32_groups_gradients[i][j]`, views into one flat buffer that the engine all-reduces)."""
    opt = engine.optimizer
    cache = getattr(opt, "_dsunlearn_full_grads", None)
    if cache is None:
        cache = {
            id(p): g
            for ps, gs in zip(opt.bf16_groups, opt.fp32_groups_gradients, strict=True)
            for p, g in zip(ps, gs, strict=True)
        }
        opt._dsunlearn_full_grads = cache
    return cache


def replicated_full_grad(engine, kind: EngineKind, p: torch.nn.Parameter) -> torch.Tensor | None:
    """The full reduced gradient of `p` (flat [numel], a view) on a replicated-gradient engine; None if p got
    no gradient. Stage 0: `p.grad` after the engine's all-reduce (0.19 `allreduce_gradients` averages in
    place). BF16_Optimizer: its fp32 accumulation buffer (`p.grad` is the bf16 staging copy)."""
    if kind.kind == BF16:
        return _bf16_full_buffers(engine)[id(p)].view(-1)
    return None if p.grad is None else p.grad.view(-1)


def local_grad_fragment(engine, kind: EngineKind, p: torch.nn.Parameter, rank: int, world: int):
    """This rank's fragment of p's reduced gradient: (tensor [k] in DeepSpeed's accumulation dtype, start index in
    flattened p), or None when this rank holds no element of p. May be a view into DeepSpeed's buffers.

    ZeRO-3 (0.19 `safe_get_local_grad`): the partition is `p.ds_tensor.numel()` elements starting at
    rank * that; the last rank's tail beyond `p.ds_numel` is padding, trimmed here. In bf16 without fp32
    grad accumulation it is a copy, so writes must go through `set_local_grad_fragment`.
    ZeRO-1/2 (0.19 `tensor_fragment.get_lp_grad_fragment`): `p._hp_mapping` is None when p has no element
    in this rank's partition; the fragment starts at `lp_fragment_address.start`.
    """
    if kind.kind == ZERO3:
        import deepspeed.utils

        part = p.ds_tensor.numel()
        start = rank * part
        k = min(part, p.ds_numel - start)
        if k <= 0:
            return None
        g = deepspeed.utils.safe_get_local_grad(p)
        return (g.view(-1)[:k] if g is not None else torch.zeros(k, device=p.device)), start
    if kind.kind == ZERO12:
        mapping = getattr(p, "_hp_mapping", None)
        if mapping is None:
            return None
        addr = mapping.lp_fragment_address
        return mapping.get_lp_grad_fragment(p._index_in_param_group).view(-1), addr.start
    start, k = replicated_slice(p.numel(), rank, world)
    if k == 0:
        return None
    full = replicated_full_grad(engine, kind, p)
    return (full[start : start + k] if full is not None else torch.zeros(k, device=p.device)), start


def writable_grad_fragment(engine, kind: EngineKind, p: torch.nn.Parameter, rank: int, world: int):
    """This rank's fragment of p's reduced gradient as (fp32 VIEW [k] of the buffer `engine.step()` reads, start
    in flattened p), where an in-place write is a write of the gradient; None where it is not (then read a copy
    with `local_grad_fragment` and write through `set_local_grad_fragment`), or when this rank holds no element.

    ZeRO-3 without offload, fp32 gradient partitions (0.19 `gradient_accumulation_dtype`): `safe_get_local_grad`
    returns `__param_id_to_grad_partition[p.ds_id]` itself (`.float()` of fp32 is a no-op; the setter copies
    into that same tensor). bf16 partitions: the getter returns a copy. Offload: the setter also records the
    fragment's norm. ZeRO-1/2 without offload, fp32 fragments: `get_lp_grad_fragment` is the buffer the setter
    copies into. Replicated kinds: every rank needs the whole written gradient (`gather_replicated_grad`)."""
    if kind.offload or kind.kind not in (ZERO3, ZERO12):
        return None
    if kind.kind == ZERO3:
        import deepspeed.utils

        if getattr(engine.optimizer, "gradient_accumulation_dtype", None) != torch.float32:
            return None
        part = p.ds_tensor.numel()
        start = rank * part
        k = min(part, p.ds_numel - start)
        g = deepspeed.utils.safe_get_local_grad(p) if k > 0 else None
        return None if g is None or g.dtype != torch.float32 else (g.view(-1)[:k], start)
    frag = local_grad_fragment(engine, kind, p, rank, world)
    return None if frag is None or frag[0].dtype != torch.float32 else frag


def set_local_grad_fragment(engine, kind: EngineKind, p: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Write this rank's fragment (value [k] fp32, as returned by `local_grad_fragment`) back.

    ZeRO-3: through 0.19 `safe_set_local_grad`, zero-padded to the partition size (the setter asserts it).
    ZeRO-1/2: in place into the `get_lp_grad_fragment` view (the buffer `step()` reads); with offload the
    0.19 overflow tracker is updated as `set_full_hp_grad` does. Replicated kinds: use
    `gather_replicated_grad` instead (every rank needs the whole gradient).
    """
    if kind.kind == ZERO3:
        import deepspeed.utils

        part = p.ds_tensor.numel()
        if value.numel() < part:
            value = torch.cat([value, value.new_zeros(part - value.numel())])
        deepspeed.utils.safe_set_local_grad(p, value)
    elif kind.kind == ZERO12:
        mapping = p._hp_mapping
        mapping.get_lp_grad_fragment(p._index_in_param_group).view(-1).copy_(value)
        if kind.offload:
            engine.optimizer.update_offload_overflow_tracker(value)
    else:
        raise ValueError("replicated gradients are written with gather_replicated_grad")


def gather_replicated_grad(engine, kind: EngineKind, params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """All-gather every rank's replicated-kind shard (flat [n_r] fp32, segments = the `replicated_slice` of each
    of `params` in order) and write the full gradient into each p's buffer on every rank.

    One `all_gather_into_tensor` of max_r n_r elements per rank (shards differ by at most len(params)
    elements, so they are zero-padded to equal size). Stage 0 writes `p.grad` (created if a parameter got
    no gradient); BF16_Optimizer writes its fp32 buffer. Transient memory: N * max_r n_r (about P).
    """
    import torch.distributed as tdist

    world = _dist.world_size()
    sizes = [[replicated_slice(p.numel(), r, world) for p in params] for r in range(world)]
    longest = max(sum(k for _, k in s) for s in sizes)
    padded = flat.new_zeros(longest)
    padded[: flat.numel()] = flat
    if world > 1:
        gathered = flat.new_empty(world * longest)
        tdist.all_gather_into_tensor(gathered, padded)
    else:
        gathered = padded
    for r in range(world):
        offset = r * longest
        for p, (start, k) in zip(params, sizes[r], strict=True):
            if k == 0:
                continue
            full = replicated_full_grad(engine, kind, p)
            if full is None:
                p.grad = torch.zeros_like(p)
                full = p.grad.view(-1)
            full[start : start + k].copy_(gathered[offset : offset + k])
            offset += k


def reset_grad_buffers(engine, kind: EngineKind, params: list[torch.nn.Parameter]) -> None:
    """Make the next backward's reduced gradient start from zero (the resets of docs/deepspeed.md).

    ZeRO-3 (0.19): `optimizer.zero_grad()` sets micro_step_id = 0, so the next reduce-scatter overwrites the
    partition instead of adding to it. ZeRO-1/2: zero every local fragment (the fp32-accumulation compact
    buffer adds across backwards) and, with offload, `accumulated_grads_in_cpu`; then `zero_grad()` drops
    the lp grads. BF16_Optimizer: `clear_hp_grads()` + `clear_lp_grads()`. Stage 0: `p.grad = None`.
    """
    opt = engine.optimizer
    if kind.kind == ZERO3:
        opt.zero_grad()
    elif kind.kind == ZERO12:
        for p in params:
            mapping = getattr(p, "_hp_mapping", None)
            if mapping is not None:
                try:
                    mapping.get_lp_grad_fragment(p._index_in_param_group).zero_()
                except ValueError:  # no gradient since the last step: nothing to reset
                    pass
        if kind.offload:
            for buf in getattr(opt, "accumulated_grads_in_cpu", {}).values():
                buf.zero_()
        opt.zero_grad()
    elif kind.kind == BF16:
        opt.clear_hp_grads()
        opt.clear_lp_grads()
    else:
        for p in params:
            p.grad = None


def get_local_param_fragment(engine, p: torch.nn.Parameter):
    """This rank's fp32 master fragment of p: (tensor [k] fp32, a view where DeepSpeed has one; start index in
    flattened p), or None. The layout follows where the master copy lives, not `local_grad_fragment`:

    ZeRO-3: 0.19 `safe_get_local_fp32_param`, trimmed like the gradient. ZeRO-1/2 and BF16_Optimizer:
    `p._hp_mapping.get_hp_fragment()` at `lp_fragment_address.start` (the optimizer partition). Stage 0:
    the `replicated_slice` of p itself (fp32 models) or of its fp32 master in the mixed-precision wrapper
    (0.19 `FP16_Optimizer.fp32_groups_flat`: each group flattened in order; `FP16_UnfusedOptimizer.fp32_groups`:
    one tensor per parameter).
    """
    kind, rank, world = engine_kind(engine), _dist.rank(), _dist.world_size()
    if kind.kind == ZERO3:
        import deepspeed.utils

        part = p.ds_tensor.numel()
        start = rank * part
        k = min(part, p.ds_numel - start)
        return (deepspeed.utils.safe_get_local_fp32_param(p).view(-1)[:k], start) if k > 0 else None
    if kind.kind in (ZERO12, BF16):
        mapping = getattr(p, "_hp_mapping", None)
        if mapping is None:
            return None
        return mapping.get_hp_fragment().view(-1), mapping.lp_fragment_address.start
    start, k = replicated_slice(p.numel(), rank, world)
    if k == 0:
        return None
    if p.dtype == torch.float32:
        return p.detach().view(-1)[start : start + k], start
    opt = engine.optimizer
    if hasattr(opt, "fp32_groups_flat"):  # FP16_Optimizer (fused client optimizer): one flat master per group
        for group, flat in zip(opt.fp16_groups, opt.fp32_groups_flat, strict=True):
            offset = 0
            for q in group:
                if q is p:
                    return flat[offset + start : offset + start + k], start
                offset += q.numel()
    else:  # FP16_UnfusedOptimizer (torch client optimizers): one fp32 master per parameter
        for group, masters in zip(opt.fp16_groups, opt.fp32_groups, strict=True):
            for q, master in zip(group, masters, strict=True):
                if q is p:
                    return master.detach().view(-1)[start : start + k], start
    raise ValueError("parameter not found in the stage-0 mixed-precision optimizer's groups")
