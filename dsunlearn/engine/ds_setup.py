"""Building a DeepSpeed engine from the run config: ds JSON, batch sizes, client optimizer, schedule.

This and the other `engine/` modules are the only places that call DeepSpeed. Decisions made here once:
- `gradient_accumulation_steps` is always 1 in the DeepSpeed JSON: dsunlearn accumulates micro-batches itself
  (`accumulation`) so the reduced gradient of one loss can be read before the next loss's backward.
- Losses are sums over the micro-batch scaled by world / (global unit count): DeepSpeed averages gradients
  over ranks, so the result is exactly the mean over the global batch whatever the world size.
- `gradient_clipping` is always written (DeepSpeed 0.19 clips at 1.0 when it is absent).
- The optimizer is a client `torch.optim` one: DeepSpeed's own would JIT-compile FusedAdam on CPU.

bf16 is the same update at every stage up to bf16 rounding, not bit for bit (measured on 2 ranks: stages differ
by at most the bf16-vs-float64 error of any one of them, about 0.7% of the update). Where rounding differs:
- the micro-gradients of one block are summed in bf16 `p.grad` at stage 0 (`no_sync`) and ZeRO-2/3 (the
  coalesced block leaves them on the parameters), in fp32 at ZeRO-1 (`BF16_Optimizer` adds each into its
  fp32 buffer); then reduced in bf16 (DeepSpeed's default `communication_data_type` under bf16). For the same
  weights the reduced gradient of a block is bitwise equal at stage 0, ZeRO-2 and ZeRO-3, not at ZeRO-1;
- ZeRO-3: the first step is bitwise equal to stage 0 (gradients, fp32 master, bf16 weights), later steps
  differ by bf16 rounding (measured; the cause inside DeepSpeed's stage-3 step is not isolated);
- a gradient written back (GRU) is kept in fp32 at ZeRO-1/2/3 and rounded to bf16 at stage 0 (`p.grad`).
Bitwise equal (measured): stage 0 == ZeRO-2 without geometry; ZeRO-1 == ZeRO-2 with GRU.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch

from dsunlearn import dist
from dsunlearn.batch_size import resolve_batch
from dsunlearn.config import EngineConfig
from dsunlearn.errors import ConfigError

SHIPPED_DS = Path(__file__).resolve().parent.parent / "ds_configs"


def _check_ds_json(ds, path: Path) -> None:
    """The parts of a DeepSpeed JSON dsunlearn reads itself: a JSON object, `zero_optimization` an object
    whose `stage` (if given) is 0..3. DeepSpeed checks the rest."""
    where = f"engine.ds_config '{path}'"
    if not isinstance(ds, dict):
        raise ConfigError(
            f'{where} holds a JSON {type(ds).__name__}, not an object; write {{"zero_optimization": ...}}'
        )
    zero = ds.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigError(f'{where}: zero_optimization must be an object like {{"stage": 2}}')
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        shown = json.dumps(stage)[:40]
        raise ConfigError(f"{where}: zero_optimization.stage={shown} is not a ZeRO stage; use 0, 1, 2 or 3")


def build_ds_config(e: EngineConfig, world: int) -> dict:
    """The DeepSpeed JSON (shipped name or path) with batch sizes, clipping and precision filled in."""
    name = e.ds_config or f"zero{e.zero_stage}"
    path = Path(name)
    if not path.is_file():
        path = SHIPPED_DS / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SHIPPED_DS.glob("*.json")))
        raise ConfigError(f"engine.ds_config='{name}' not found; give a JSON path or one of: {shipped}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as ex:
        raise ConfigError(f"engine.ds_config '{path}' is not valid JSON (line {ex.lineno}: {ex.msg})") from None
    except (UnicodeDecodeError, RecursionError) as ex:
        raise ConfigError(
            f"engine.ds_config '{path}' cannot be read ({type(ex).__name__}); save it as UTF-8 JSON"
        ) from None
    _check_ds_json(ds, path)
    ds.pop("optimizer", None)
    ds.pop("scheduler", None)
    zero = ds.setdefault("zero_optimization", {})
    if e.ds_config is None:
        zero["stage"] = e.zero_stage
    micro, _, _ = resolve_batch(e, world)
    ds["train_micro_batch_size_per_gpu"] = micro
    ds["gradient_accumulation_steps"] = 1
    ds["train_batch_size"] = micro * world
    ds["gradient_clipping"] = e.grad_clip
    ds["zero_allow_untested_optimizer"] = True
    ds["steps_per_print"] = 10**9
    ds["bf16"] = {"enabled": e.precision == "bf16"}
    ds.pop("fp16", None)
    if e.precision == "bf16" and zero.get("stage", 0) > 0:
        # fp32 gradient accumulation: the shards read for GRU / G-effect are fp32 and writes are kept.
        # (Stage 0 cannot have it: DeepSpeed 0.19 raises. What then differs between stages is in the
        # module docstring; tests/distributed/test_bf16_stages.py measures it.)
        ds.setdefault("data_types", {})["grad_accum_dtype"] = "fp32"
    if zero.get("offload_optimizer"):
        ds["zero_force_ds_cpu_optimizer"] = False  # keep the client torch optimizer
    return ds


def stage_of(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def build_optimizer(model: torch.nn.Module, e: EngineConfig) -> torch.optim.Optimizer:
    """Client optimizer. As HF Trainer: no weight decay on biases and norm weights (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if e.optimizer == "sgd":
        return torch.optim.SGD(params, lr=e.lr)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": e.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=e.lr, betas=(0.9, 0.999), eps=1e-8)


def lr_lambda(e: EngineConfig, total_steps: int):
    """Multiplier of the peak lr at step s: linear warm-up, then constant / linear / cosine decay to 0."""
    warm = int(e.warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if e.scheduler == "constant":
            return 1.0
        frac = (step - warm) / max(1, total_steps - warm)
        if e.scheduler == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    return f


def create_engine(model: torch.nn.Module, e: EngineConfig, total_steps: int, ds_config: dict | None = None):
    """`deepspeed.initialize` with the client optimizer and schedule. Returns (engine, ds_config)."""
    import deepspeed

    ds_config = ds_config or build_ds_config(e, dist.world_size())
    optimizer = build_optimizer(model, e)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(e, total_steps))
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=False
    )
    return engine, ds_config


@contextlib.contextmanager
def zero3_init_context(ds_config: dict):
    """While active, `from_pretrained` loads weights straight into ZeRO-3 partitions (never whole on a rank).

    transformers checks a live `HfDeepSpeedConfig`; it must stay referenced until the model is built.
    """
    if stage_of(ds_config) != 3:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig

    keep = HfDeepSpeedConfig(ds_config)
    try:
        yield
    finally:
        del keep


def accumulation(engine, n_micro: int):
    """Contexts for the n micro-backwards of ONE loss such that the gradient is reduced once, at the end.

    ZeRO-1/2/3 (`DeepSpeedZeroOptimizer(_Stage3)`): one `coalesce_grad_reduction` block around all of them
    (reading shards after a non-boundary backward raises at ZeRO-1/2 and gives partial sums at ZeRO-3).
    ZeRO-0 and `BF16_Optimizer` (ZeRO-1 + bf16 + fp32 accumulation), where 0.19 does not implement coalescing:
    `no_sync` for all but the last. BF16_Optimizer then adds each micro-batch's bf16 gradient into its fp32
    gradient buffer (`backward_epilogue`, every backward; `backward_prologue` clears the bf16 one) and the
    last backward all-reduces that buffer once: the fp32 sum of the micro-gradients, reduced once.
    Usage: `with accumulation(engine, n) as micro: for k ...: with micro(k): engine.backward(loss_k)`.
    """
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer

    @contextlib.contextmanager
    def outer():
        stage = engine.zero_optimization_stage()
        if n_micro == 1:
            yield lambda k: contextlib.nullcontext()
        elif stage == 0 or isinstance(engine.optimizer, BF16_Optimizer):
            yield lambda k: engine.no_sync() if k < n_micro - 1 else contextlib.nullcontext()
        else:
            with engine.coalesce_grad_reduction():
                yield lambda k: contextlib.nullcontext()

    return outer()
