"""UIPE for a LoRA adapter run (issue 17): theta(alpha) = theta_o + (1 + alpha) delta with delta = s B A.

An adapter run changes no base weight: its unlearned model is the merged W + s B A in every adapted layer
(B starts at 0, so theta_o is the base itself), and its delta is exactly that low-rank update, delta = s B A.
Extrapolating along it scales the update: W + (1 + alpha) s B A (the same float64 arithmetic as the merged
model of `engine/adapter_save.py`, so alpha = 0 reproduces the run's merged model bit for bit), written as a
plain HF model dir, plus `<out>/adapter/`: the run's adapter with lora_alpha scaled by (1 + alpha), which
`PeftModel.from_pretrained(base, <out>/adapter)` turns into the same model without merging.

A and B are read from the run's `adapter/` (peft's format, the final fp32 values): the delta shards of an
adapter run hold A's and B's own changes, and A's initial value is not in theta_o's files. A checkpoint's
delta has no adapter beside it, so extrapolating a checkpoint of an adapter run is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsunlearn.errors import RunError
from dsunlearn.run_layout import ADAPTER

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft would fall back to a pickle .bin: only this is read


def is_adapter_delta(metas: list[dict]) -> bool:
    """True when the delta shards are of LoRA parameters (an adapter run's)."""
    return any(".lora_A." in n or ".lora_B." in n for m in metas for n in m["params"])


def adapter_dir_of(delta_dir: Path) -> Path:
    """The run's adapter beside its final delta (`<run>/delta` -> `<run>/adapter`); RunError when absent."""
    adapter = Path(delta_dir).parent / ADAPTER
    if not (adapter / ADAPTER_CONFIG).is_file() or not (adapter / ADAPTER_WEIGHTS).is_file() or adapter.is_symlink():
        raise RunError(
            f"'{delta_dir}' holds the deltas of a LoRA adapter run but there is no adapter at '{adapter}' beside it "
            "(a checkpoint's delta has none): extrapolate the finished run (without --checkpoint)"
        )
    return adapter


def extrapolate_adapter(original_dir: Path, adapter_dir: Path, alpha: float, dtype, tmp: Path) -> None:
    """Write W + (1 + alpha) s B A (dtype `dtype`) and the rescaled adapter into the existing staging dir `tmp`."""
    import torch
    from peft import PeftModel

    from dsunlearn.engine.adapter_save import ADAPTER_NAME, save_adapter, save_merged_model
    from dsunlearn.models.adapters import lora_layers
    from dsunlearn.models.load import load_causal_lm

    base = load_causal_lm(str(original_dir), dtype={torch.float32: "float32", torch.bfloat16: "bfloat16",
                                                     torch.float16: "float16"}[dtype])  # fmt: skip
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    except Exception as e:  # a damaged or foreign adapter dir: one line
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        raise RunError(f"cannot load the adapter '{adapter_dir}' onto '{original_dir}' ({why})") from None
    lora_cfg = model.peft_config[ADAPTER_NAME]
    if getattr(lora_cfg, "use_rslora", False):
        raise RunError(f"'{adapter_dir}' uses rsLoRA scaling; dsunlearn extrapolates plain LoRA (scale alpha / r)")
    for layer in lora_layers(model).values():  # scale s -> (1 + alpha) s in every adapted layer
        layer.scaling[ADAPTER_NAME] = (1.0 + alpha) * layer.scaling[ADAPTER_NAME]
    merged = tmp / "merged"
    save_merged_model(model, merged)
    for f in merged.iterdir():
        f.rename(tmp / f.name)
    merged.rmdir()
    lora_cfg.lora_alpha = (1.0 + alpha) * lora_cfg.lora_alpha
    lora_cfg.alpha_pattern = {k: (1.0 + alpha) * v for k, v in (lora_cfg.alpha_pattern or {}).items()}
    save_adapter(model, tmp / ADAPTER)
    meta = json.loads((tmp / ADAPTER / ADAPTER_CONFIG).read_text())
    meta["base_model_name_or_path"] = str(original_dir)
    (tmp / ADAPTER / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))
