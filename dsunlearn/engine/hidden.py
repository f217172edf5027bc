"""Hidden states of one decoder layer, taken with a forward hook, for any Hugging Face causal LM and any ZeRO stage.

`decoder_layers(model)` finds the decoder-layer list by the parameter-name rule of `engine/groups.py` (the
ModuleList whose children ``X.0``, ``X.1``, ... are the groups ``layers.0``, ``layers.1``, ...): ``model.layers``
(Llama, Mistral, Qwen, Gemma, Phi), ``transformer.h`` (GPT-2, Falcon), ``gpt_neox.layers``, ``model.decoder.layers``
(OPT), ``transformer.blocks`` (MPT), ...

`LayerOutput` hooks the output of layer k: its first element when the layer returns a tuple (older transformers),
else the tensor itself; [B, T, d]. Under ZeRO-3 the layer's parameters are gathered by DeepSpeed's pre-forward
hook before the layer runs and released after, but the activation it returns is an ordinary full tensor on every
rank (ZeRO partitions parameters, not activations), so the hook sees exactly what it sees without DeepSpeed.

The forward is not cut after layer k: stopping it (an exception from the hook) would leave ZeRO-3's parameter
fetching half-way through its trace, so the model runs to the logits (layers past k cost forward compute only: the
loss does not depend on them and autograd never goes through them).
"""

from __future__ import annotations

import torch

from dsunlearn.engine.groups import group_of
from dsunlearn.errors import ConfigError


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The outermost ModuleList whose i-th child's parameters are in the layer group ``layers.i``."""
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        first = next(iter(module[0].named_parameters()), None)
        if first is not None and group_of(f"{name}.0.{first[0]}") == "layers.0":
            return module
    raise ConfigError(
        f"{type(model).__name__} has no decoder-layer list a hidden-state objective can hook "
        "(expected a ModuleList such as model.layers or transformer.h); use another objective"
    )


class LayerOutput:
    """A forward hook on decoder layer `layer` of `model` keeping the output of its latest forward ([B, T, d]).

    `take()` returns it and forgets it (so an activation and its graph are not kept past the loss that reads
    them); `clear()` forgets it; `remove()` removes the hook."""

    def __init__(self, model: torch.nn.Module, layer: int, where: str = "objective.layer"):
        layers = decoder_layers(model)
        if not 0 <= layer < len(layers):
            raise ConfigError(f"{where}={layer} is out of range: this model has {len(layers)} decoder layers "
                              f"(0..{len(layers) - 1}); set {where} to one of them")  # fmt: skip
        self.layer = layer
        self._out: torch.Tensor | None = None
        self._handle = layers[layer].register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self._out = output[0] if isinstance(output, tuple) else output

    def take(self) -> torch.Tensor:
        out, self._out = self._out, None
        if out is None:
            raise RuntimeError(f"no forward through decoder layer {self.layer} since the last take()")
        return out

    def clear(self) -> None:
        self._out = None

    def remove(self) -> None:
        self._handle.remove()
        self._out = None
