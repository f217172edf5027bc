"""The frozen reference model theta_o (the model before unlearning) for NPO, TNPO, WTNPO, DPO, UNDIAL, the KL
regulariser and RMU's retain term (one decoder layer's hidden states, `hidden`).

Two forms, chosen by what the objective needs:
- Forget-set reference log-probs, precomputed once before step 0 with the policy itself (which IS theta_o
  then): `precompute_forget_ref`. No second model in memory; NPO/TNPO/WTNPO only need these, DPO these of the
  forget answers and of their refusals (one call each, `recipes/forget_inputs.py`).
- A frozen model for on-the-fly logits (KL on retain batches, UNDIAL on forget batches: a whole [B, T, V]
  distribution per batch is too large to precompute): at ZeRO-3 a second DeepSpeed engine without an optimizer
  partitions it (P/N per rank, gathered per layer in forward); below ZeRO-3 a plain replica.
A LoRA run (`model.adapter`) loads neither: its theta_o is the policy with the adapter disabled
(`models/adapters.py: AdapterOffReference`, chosen in `recipes/unlearn.py`).
"""

from __future__ import annotations

import torch

from dsunlearn import dist
from dsunlearn.config import ModelConfig
from dsunlearn.data.collate import Encoded, pad_batch
from dsunlearn.data.sharding import gather_items, round_robin_rounds
from dsunlearn.engine.ds_setup import zero3_init_context
from dsunlearn.engine.hidden import LayerOutput
from dsunlearn.models.load import load_causal_lm
from dsunlearn.objectives.logprobs import token_logprobs


@torch.no_grad()
def precompute_forget_ref(module, encoded: list[Encoded], batch_size: int, pad_id: int) -> list[torch.Tensor]:
    """Per item, log p_o of its answer tokens in shifted layout: a [len - 1] float32 CPU tensor (0 off-answer).

    Sharded over ranks (round-robin fixed batches, gathered), so every rank ends with every item's values.
    Right padding: an item's first len-1 shifted positions are the same in any batch it is put in.
    """
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    mine: dict[int, torch.Tensor] = {}
    for idx in round_robin_rounds(len(encoded), batch_size, dist.rank(), dist.world_size()):
        rows = idx if idx is not None else [0]
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in rows], pad_id).items()}
        logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp, _ = token_logprobs(logits, batch["labels"])
        if idx is not None:
            for b, i in enumerate(idx):
                mine[i] = logp[b, : len(encoded[i].input_ids) - 1].float().cpu().clone()
    module.train(was_training)
    return gather_items(mine, len(encoded))


def ref_batch(ref: list[torch.Tensor], indices: list[int], width: int, device) -> torch.Tensor:
    """[B, width] reference log-probs of a right-padded micro-batch (zeros past each item's length)."""
    out = torch.zeros(len(indices), width, dtype=torch.float32)
    for b, i in enumerate(indices):
        n = min(width, ref[i].numel())
        out[b, :n] = ref[i][:n]
    return out.to(device)


class ReferenceModel:
    """Frozen theta_o for on-the-fly logits. `logits(batch)` must be called on every rank at ZeRO-3."""

    @classmethod
    def load(cls, path: str, model_cfg: ModelConfig, ds_config: dict, zero3: bool,
             hidden_layer: int | None = None) -> ReferenceModel:  # fmt: skip
        """The model at `path` (dtype and remote-code setting of `model_cfg`) as a frozen reference beside an
        engine built with `ds_config` (at ZeRO-3 loaded straight into partitions); with `hidden_layer`, that
        decoder layer's output is hooked for `hidden`."""
        with zero3_init_context(ds_config):
            model = load_causal_lm(path, model_cfg.dtype, model_cfg.trust_remote_code)
        return cls(model, ds_config, zero3, hidden_layer)

    def __init__(self, model: torch.nn.Module, ds_config: dict | None, zero3: bool, hidden_layer: int | None = None):
        self._hidden = LayerOutput(model, hidden_layer) if hidden_layer is not None else None
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        if zero3:
            import deepspeed

            infer_cfg = {k: v for k, v in ds_config.items() if k not in ("gradient_clipping",)}
            self.engine, *_ = deepspeed.initialize(model=model, config=infer_cfg, dist_init_required=False)
            self.module = self.engine.module
        else:
            self.engine = None
            self.module = model.to(dist.device())
        self.module.eval()

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module(input_ids=input_ids, attention_mask=attention_mask).logits

    @torch.no_grad()
    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """theta_o's output hidden states [B, T, d] of the hooked decoder layer (`load(..., hidden_layer)`); a
        full forward (collective at ZeRO-3: call it on every rank)."""
        if self._hidden is None:
            raise RuntimeError("ReferenceModel.hidden: no layer hooked (load it with hidden_layer)")
        self.module(input_ids=input_ids, attention_mask=attention_mask)
        return self._hidden.take()
