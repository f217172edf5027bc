"""LoRA adapters (peft) on a loaded causal LM: the base frozen, only the adapters trainable (issue 17).

LoRA (Hu et al. 2021, eq. 3): a frozen linear weight W [d_out, d_in] is used as W + s B A, with
A [r, d_in] (random init), B [d_out, r] (zero init, so the adapted model starts equal to the base) and
s = alpha / r. Only A and B get gradients, so DeepSpeed's optimizer (and its ZeRO partitions of gradients and
optimizer state) hold only them, and so do the gradient shards GRU and the G-effect work on.

Called by `engine/unlearn_engine.py` between loading the model and `deepspeed.initialize` (the calling point is
marked there). Under ZeRO-3 the base is loaded straight into partitions (`zero.Init`); the adapter parameters,
created after it, are plain tensors that `deepspeed.initialize` partitions like any other parameter.

The reference model theta_o of an adapter run is the same module with the adapter switched off
(`AdapterOffReference`): no second copy of the weights.
"""

from __future__ import annotations

import torch

from dsunlearn.config import AdapterConfig
from dsunlearn.errors import ModelError


def uses_adapter(a: AdapterConfig) -> bool:
    return a.type != "none"


def is_peft_model(module) -> bool:
    """True for a peft `PeftModel` (what `attach_adapter` returns)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, PeftModel)


def lora_config(a: AdapterConfig):
    """peft's `LoraConfig` of `model.adapter` (task CAUSAL_LM; bias untouched, as the LoRA paper)."""
    from peft import LoraConfig

    targets = a.target_modules
    target = None if not targets else ("all-linear" if targets == ["all-linear"] else list(targets))
    return LoraConfig(
        task_type="CAUSAL_LM", r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=target, bias="none"
    )


def attach_adapter(model: torch.nn.Module, a: AdapterConfig):
    """`model` wrapped as a peft model with a fresh LoRA adapter named `default`; every base parameter frozen.

    Names of the adapter's parameters: `base_model.model.<the base's name of the layer>.lora_A.default.weight`
    (and `lora_B`), so the layer groups of `engine/groups.py` place them in their decoder layer.
    ModelError (one line) when the target modules are not in the model."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, lora_config(a))
    except ValueError as e:
        why = str(e).splitlines()[0][:200]
        raise ModelError(
            f"model.adapter.target_modules={a.target_modules} cannot be adapted in this {type(model).__name__} "
            f"({why}); name modules the model has (e.g. [q_proj, v_proj] for Llama, [c_attn] for GPT-2)"
        ) from None
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if not trainable or any(".lora_" not in n for n in trainable):  # peft freezes the base; check it did
        raise ModelError(f"the LoRA adapter left {len(trainable)} trainable parameters outside lora_A/lora_B")
    return peft_model


def lora_layers(peft_model) -> dict[str, torch.nn.Module]:
    """{name of the adapted module in the base model: peft's LoRA layer}, e.g. `model.layers.0.self_attn.q_proj`."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    return {n: m for n, m in base.named_modules() if isinstance(m, LoraLayer)}


class AdapterOffReference:
    """theta_o of an adapter run: the policy module itself with the adapter disabled (peft's `disable_adapter`).

    The same interface as `engine.reference.ReferenceModel`. `logits` runs in eval mode (no dropout) and
    restores the training mode; under ZeRO-3 it is a forward of the training engine's module, so it must be
    called on every rank, as for the other reference."""

    def __init__(self, peft_model):
        self.module = peft_model

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        was_training = self.module.training
        self.module.eval()
        try:
            with self.module.disable_adapter():
                return self.module(input_ids=input_ids, attention_mask=attention_mask).logits
        finally:
            self.module.train(was_training)
