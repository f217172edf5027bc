"""Saving a LoRA adapter run (issue 17): the adapter in peft's format, and on request the merged model.

- `save_adapter`: `<dir>/adapter_model.safetensors` + `adapter_config.json`, the layout `save_pretrained` of a
  peft model writes, so `PeftModel.from_pretrained(base, dir)` loads it (safetensors only). The adapter's
  parameters are gathered at ZeRO-3 (they are small: 2 r (d_in + d_out) per adapted layer).
- `save_merged_model`: a plain HF model dir with every adapted weight replaced by W + s B A (LoRA eq. 3, in
  float64, rounded once to W's dtype), written layer group by layer group through `hf_save.write_hf_dir`:
  never the whole model on one rank.
Both directories are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dsunlearn import dist
from dsunlearn.engine.hf_save import save_tokenizer, write_hf_dir
from dsunlearn.engine.partitioning import gathered
from dsunlearn.fsutil import atomic_replace_dir
from dsunlearn.models.adapters import lora_layers

ADAPTER_NAME = "default"  # peft's name of the one adapter dsunlearn attaches
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _staging(out_dir: Path) -> Path:
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if dist.is_main():
        if out_dir.exists():
            raise FileExistsError(f"{out_dir} exists; remove it or choose another directory")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def save_adapter(peft_model, out_dir: str | Path) -> Path:
    """The adapter of `peft_model` (trainable parameters only) in peft's format into `out_dir`; every rank calls."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tmp = _staging(out_dir)
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    with gathered([p for _, p in named]):
        tensors = {n: p.detach().cpu().clone() for n, p in named} if dist.is_main() else None
    if dist.is_main():
        state = get_peft_model_state_dict(peft_model, state_dict=tensors, save_embedding_layers=False)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        peft_model.peft_config[ADAPTER_NAME].save_pretrained(str(tmp))
        atomic_replace_dir(tmp, out_dir)
    dist.barrier()
    return out_dir


def merge_transform(peft_model):
    """`{in-memory name: tensor} -> {name: tensor}` for `write_hf_dir` over the base model: each adapted layer's
    `<layer>.base_layer.weight` becomes `<layer>.weight` = W + s (B A) (transposed for fan_in_fan_out layers:
    GPT-2's Conv1D), its lora_A / lora_B dropped; every other tensor unchanged. A chunk holds whole layer groups,
    so a layer's W, A and B are always in the same chunk."""
    layers = {n: (float(m.scaling[ADAPTER_NAME]), bool(m.fan_in_fan_out)) for n, m in lora_layers(peft_model).items()}

    def transform(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, t in tensors.items():
            layer, _, rest = name.rpartition(".base_layer.")
            if layer in layers and rest == "weight":
                scale, fan_in_fan_out = layers[layer]
                a = tensors[f"{layer}.lora_A.{ADAPTER_NAME}.weight"].double()  # [r, d_in]
                b = tensors[f"{layer}.lora_B.{ADAPTER_NAME}.weight"].double()  # [d_out, r]
                delta = scale * (b @ a)
                out[f"{layer}.{rest}"] = (t.double() + (delta.T if fan_in_fan_out else delta)).to(t.dtype)
            elif ".lora_A." in name or ".lora_B." in name:
                continue
            elif ".base_layer." in name:  # a bias of an adapted layer: unchanged
                out[name.replace(".base_layer.", ".")] = t
            else:
                out[name] = t
        return out

    return transform


def save_merged_model(peft_model, out_dir: str | Path, tokenizer=None) -> Path:
    """The merged model (base + s B A in every adapted layer) as a plain HF dir; every rank calls."""
    out_dir = Path(out_dir)
    tmp = _staging(out_dir)
    base = peft_model.get_base_model()
    write_hf_dir(base, tmp, transform=merge_transform(peft_model))
    if dist.is_main():
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
        atomic_replace_dir(tmp, out_dir)
    dist.barrier()
    return out_dir
