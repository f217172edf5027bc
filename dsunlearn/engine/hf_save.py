"""Consolidated Hugging Face safetensors from a DeepSpeed engine, at any ZeRO stage, never the whole model at once.

Parameters are walked in `named_parameters()` order in chunks of at most `chunk_bytes` (cut only between layer
groups, so a conversion that needs several tensors of one layer sees them together); at ZeRO-3 each chunk is
all-gathered (`GatheredParameters`, every rank takes part) and rank 0 copies it to CPU; full shard files of at
most `shard_bytes` are written as `model-XXXXX-of-YYYYY.safetensors` with `model.safetensors.index.json`.
Peak memory on rank 0: one gathered chunk + one shard file's tensors. (DeepSpeed's `save_16bit_model` writes
pickle `.bin`; dsunlearn loads safetensors only.)

File layout = what `save_pretrained` writes for the architecture (`file_tensors`): in-memory names are mapped
back with transformers' own `revert_weight_conversion`, the inverse of the renamings and converters that
`from_pretrained` applied (e.g. Mixtral's fused `mlp.experts.gate_up_proj` [E, 2I, H] back to per-expert
`block_sparse_moe.experts.N.w1/w3.weight`), so any tool that reads hub checkpoints reads this one. Tied weights
are written once, under the name transformers keeps (the tie's source). `config.json` records the dtype the
weights are written in and the 4.4x spellings of its keys (`models/compat.py`); the tokenizer is saved with a
4.4x-loadable `tokenizer_config.json`.

The whole directory is written under a temporary name and renamed into place: a crash leaves no half model.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from dsunlearn import dist
from dsunlearn.engine.groups import group_of
from dsunlearn.engine.partitioning import full_numel, gathered
from dsunlearn.fsutil import atomic_replace_dir
from dsunlearn.models.compat import legacy_config, legacy_tokenizer_config
from dsunlearn.safetensors_writer import ShardedSafetensorsWriter


def _chunks(named: list[tuple[str, torch.Tensor]], chunk_bytes: int):
    chunk, size = [], 0
    for name, p in named:
        nbytes = full_numel(p) * p.element_size()
        if chunk and size + nbytes > chunk_bytes and group_of(name) != group_of(chunk[-1][0]):
            yield chunk
            chunk, size = [], 0
        chunk.append((name, p))
        size += nbytes
    if chunk:
        yield chunk


def saved_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(in-memory name, tensor) of everything a checkpoint holds: parameters once each, persistent buffers."""
    named, keys = list(module.named_parameters()), set(module.state_dict())
    return named + [(n, b) for n, b in module.named_buffers() if n in keys]


def file_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory names/tensors -> the names/tensors `save_pretrained` writes (transformers' inverse conversion).

    `named_parameters()` keeps one name per tied tensor (the first registered); if that is a tie's target
    (`all_tied_weights_keys` maps target -> source), it is renamed to the source, the name transformers keeps."""
    from transformers.core_model_loading import revert_weight_conversion

    ties = getattr(module, "all_tied_weights_keys", None) or {}
    tensors = {(ties[n] if n in ties and ties[n] not in tensors else n): t for n, t in tensors.items()}
    return revert_weight_conversion(module, tensors)


def write_hf_dir(module, out_dir: Path, chunk_bytes: int = 512 << 20, shard_bytes: int = 2 << 30,
                 metadata: dict | None = None, transform=None) -> None:  # fmt: skip
    """Weights (file layout), config.json and generation_config.json of `module` into the existing `out_dir`
    (rank 0 writes; every rank must call it when the parameters are ZeRO-3 partitioned, `engine.partitioning`).
    `transform({name: tensor}) -> {name: tensor}`, if given, maps each gathered chunk (one or more whole layer
    groups, in-memory names) before the file layout: merging LoRA adapters into their weights
    (`engine/adapter_save.py`)."""
    main = dist.is_main()
    writer = ShardedSafetensorsWriter(out_dir, shard_bytes, metadata=metadata) if main else None
    dtype = None
    for chunk in _chunks(saved_tensors(module), chunk_bytes):
        with gathered([p for _, p in chunk if isinstance(p, torch.nn.Parameter)]):
            if writer is not None:
                tensors = {n: p.detach().cpu() for n, p in chunk}
                for name, t in file_tensors(module, transform(tensors) if transform else tensors).items():
                    dtype = dtype or (t.dtype if t.is_floating_point() else None)
                    writer.add(name, t)
    if main:
        writer.close()
        config = copy.deepcopy(module.config)
        config.architectures = [type(module).__name__]  # as save_pretrained does
        if dtype is not None:
            config.dtype = dtype  # the dtype the weights are written in (bf16 training writes bf16)
        config.save_pretrained(out_dir)
        legacy_config(out_dir / "config.json")
        if getattr(module, "generation_config", None) is not None:
            module.generation_config.save_pretrained(out_dir)


def save_tokenizer(tokenizer, out_dir: Path) -> None:
    tokenizer.save_pretrained(out_dir)
    legacy_tokenizer_config(out_dir)


def save_hf_model(
    module: torch.nn.Module,
    out_dir: str | Path,
    tokenizer=None,
    chunk_bytes: int = 512 << 20,
    shard_bytes: int = 2 << 30,
) -> Path:
    """Write `module` (an HF PreTrainedModel, possibly ZeRO-3 partitioned) + tokenizer to `out_dir`.

    Must be called on every rank (gathers of ZeRO-3 partitioned parameters are collective; partitioning is
    detected, `engine.partitioning`). Returns the final directory. Refuses to replace an existing directory:
    callers decide about overwrites.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    main = dist.is_main()
    if main:
        if out_dir.exists():
            raise FileExistsError(f"{out_dir} exists; remove it or choose another directory")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    write_hf_dir(module, tmp, chunk_bytes, shard_bytes)
    if main:
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
        atomic_replace_dir(tmp, out_dir)
    dist.barrier()
    return out_dir
