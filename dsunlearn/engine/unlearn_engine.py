"""`UnlearnEngine`: a DeepSpeed engine that runs the forget and retain backwards and exposes gradient shards.

The one training engine of dsunlearn: `unlearn` (objective, regulariser, GRU, G-effect), `finetune` (the answer
NLL through `accumulate`) and the offline G-effect (`grad_of`, never stepped) all set up and back-propagate here.

Two ways through a step:
- `accumulate(parts)`: every loss's micro-backwards into the same gradient buffers inside one accumulation
  block: gamma L_f + lambda L_r with a single reduction. Used when no geometry is needed (fast path).
- `grad_of(batches, loss_fn)`: reset the buffers, run one loss's micro-backwards, return this rank's shard of
  the reduced gradient as an owned `ShardedGrad` (a copy: the next backward reuses DeepSpeed's buffers).
  Then `set_grad(shard)` writes a combined gradient back and `step()` lets clipping and the optimizer act
  on what was written (docs/deepspeed.md: reset between backwards; write through the safe setter).
- `live_grad_of(batches, loss_fn)`: the same for the LAST gradient of a step, left in DeepSpeed's buffers
  (`LiveGrad`: nothing copied where the buffers allow it); whatever is written into it is what `step()` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dsunlearn import dist
from dsunlearn.config import RunConfig
from dsunlearn.data.collate import Encoded, pad_batch
from dsunlearn.engine.ds_setup import accumulation, build_ds_config, create_engine, zero3_init_context
from dsunlearn.engine.hidden import LayerOutput
from dsunlearn.engine.reference import ref_batch
from dsunlearn.engine.shard import (
    LiveGrad,
    ShardedGrad,
    read_grad_shard,
    read_live_grad,
    write_grad_shard,
    zero_grad_buffers,
)
from dsunlearn.engine.trainable import freeze_except
from dsunlearn.models.adapters import attach_adapter, uses_adapter
from dsunlearn.models.load import check_vocab, load_causal_lm


@dataclass
class MicroBatch:
    """One rank's micro-batch: item indices, tensors on the device, and reference log-probs if needed.

    A paired micro-batch (`build_pairs`, for objectives that compare two answers to each question) holds 2B rows
    for its B items: rows [0, B) one answer of each item, rows [B, 2B) the other, in the same item order, so both
    go through the model in one forward.
    """

    indices: list[int]
    input_ids: torch.Tensor  # [B, T]  ([2B, T] paired)
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], -100 off the answer
    ref_logp: torch.Tensor | None = None  # [B, T-1]
    paired: bool = False

    @classmethod
    def build(
        cls, encoded: list[Encoded], indices: list[int], pad: int, device, ref: list[torch.Tensor] | None = None
    ) -> MicroBatch:
        """encoded[indices] right-padded onto `device`; with `ref` (per-item theta_o log-probs,
        `precompute_forget_ref`) their [B, T-1] reference log-probs too."""
        b = {key: v.to(device) for key, v in pad_batch([encoded[i] for i in indices], pad).items()}
        ref_logp = ref_batch(ref, indices, b["input_ids"].shape[1] - 1, device) if ref is not None else None
        return cls(indices, b["input_ids"], b["attention_mask"], b["labels"], ref_logp)

    @classmethod
    def build_pairs(
        cls,
        first: list[Encoded],
        second: list[Encoded],
        indices: list[int],
        pad: int,
        device,
        refs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    ) -> MicroBatch:
        """first[indices] then second[indices] (two encodings of the same items) right-padded together onto
        `device`, with `refs` = (first's, second's) per-item theta_o log-probs if given: a paired micro-batch."""
        n = len(first)
        rows = [*indices, *(n + i for i in indices)]
        ref = [*refs[0], *refs[1]] if refs is not None else None
        mb = cls.build([*first, *second], rows, pad, device, ref)
        return cls(list(indices), mb.input_ids, mb.attention_mask, mb.labels, mb.ref_logp, paired=True)


# loss_fn(micro_batch, logits [B, T, V]) -> (scaled loss to back-propagate, detached stats for logging)
LossFn = Callable[[MicroBatch, torch.Tensor], tuple[torch.Tensor, dict]]


class UnlearnEngine:
    """The model at `model_path` on a DeepSpeed engine (cfg.engine: ZeRO stage, optimizer, schedule over
    `total_steps`). `seed`: torch's RNG is seeded after the model is loaded and before the engine is built.
    `trainable`: keep(name) of the only parameters that train (`engine/trainable.py`), None for all.
    `hidden_layer`: hook that decoder layer's output (`self.hidden`, `engine/hidden.py`) for a hidden-state loss."""

    def __init__(self, cfg: RunConfig, model_path: str, tokenizer, total_steps: int, seed: int | None = None,
                 trainable=None, hidden_layer: int | None = None):  # fmt: skip
        world = dist.world_size()
        self.ds_config = build_ds_config(cfg.engine, world)
        with zero3_init_context(self.ds_config):
            model = load_causal_lm(model_path, cfg.model.dtype, cfg.model.trust_remote_code)
        check_vocab(model, tokenizer, where=f"of '{cfg.model.tokenizer or model_path}'")
        self.hidden = LayerOutput(model, hidden_layer) if hidden_layer is not None else None
        if trainable is not None:
            freeze_except(model, trainable, "objective.train_params in objective.train_layers")
        # --- adapters (issue 17): the base frozen, LoRA parameters created, before deepspeed.initialize ---
        if uses_adapter(cfg.model.adapter):
            with torch.random.fork_rng():  # the adapter's init does not shift the run's RNG stream
                torch.manual_seed(cfg.run.seed)
                model = attach_adapter(model, cfg.model.adapter)
        if seed is not None:
            torch.manual_seed(seed)
        self.deepspeed, _ = create_engine(model, cfg.engine, total_steps, self.ds_config)
        self.zero3 = self.deepspeed.zero_optimization_stage() == 3
        self.named = [(n, p) for n, p in self.deepspeed.module.named_parameters() if p.requires_grad]

    @property
    def module(self) -> torch.nn.Module:
        return self.deepspeed.module

    @property
    def device(self) -> torch.device:
        return self.deepspeed.device

    def _backward_all(self, parts: list[tuple[list[MicroBatch], LossFn]]) -> list[list[dict]]:
        n_micro = sum(len(batches) for batches, _ in parts)
        stats: list[list[dict]] = []
        k = 0
        with accumulation(self.deepspeed, n_micro) as micro_ctx:
            for batches, loss_fn in parts:
                part_stats = []
                for mb in batches:
                    logits = self.deepspeed(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
                    loss, st = loss_fn(mb, logits)
                    if self.hidden is not None:
                        self.hidden.clear()  # a loss that did not read it: do not keep its graph alive
                    with micro_ctx(k):
                        self.deepspeed.backward(loss)
                    part_stats.append(st)
                    k += 1
                stats.append(part_stats)
        return stats

    def accumulate(self, parts: list[tuple[list[MicroBatch], LossFn]]) -> list[list[dict]]:
        """All losses' gradients summed in DeepSpeed's buffers (one reduction). Returns per-part stats."""
        zero_grad_buffers(self.deepspeed, self.named)
        return self._backward_all(parts)

    def grad_of(self, batches: list[MicroBatch], loss_fn: LossFn) -> tuple[ShardedGrad, list[dict]]:
        """This rank's shard of the reduced gradient of one loss (buffers reset first; the shard is a copy)."""
        zero_grad_buffers(self.deepspeed, self.named)
        (stats,) = self._backward_all([(batches, loss_fn)])
        return read_grad_shard(self.deepspeed, self.named), stats

    def live_grad_of(self, batches: list[MicroBatch], loss_fn: LossFn) -> tuple[LiveGrad, list[dict]]:
        """Like `grad_of`, but the gradient stays in DeepSpeed's buffers (`read_live_grad`, in place unless
        `in_place_grads` is off): valid until the next backward; what is written into it becomes the gradient
        of the next `step()` once `set_grad(live)` is called."""
        zero_grad_buffers(self.deepspeed, self.named)
        (stats,) = self._backward_all([(batches, loss_fn)])
        return read_live_grad(self.deepspeed, self.named, in_place=self.in_place_grads), stats

    # Read and write the step's last gradient in DeepSpeed's own buffers where they allow it (False: always
    # through an owned copy; the tests compare both and turn it off to make `set_grad` the only write).
    in_place_grads = True

    def set_grad(self, grad: ShardedGrad | LiveGrad) -> None:
        """Make `grad` the gradient of the next `step()`: a shard is written into DeepSpeed's buffers; a
        `LiveGrad` written in place already is, one written into its copy is written back (`LiveGrad.commit`)."""
        if isinstance(grad, LiveGrad):
            grad.commit()
        else:
            write_grad_shard(self.deepspeed, grad, self.named)

    def step(self) -> None:
        self.deepspeed.step()

    def lr(self) -> float:
        return float(self.deepspeed.get_lr()[0])
