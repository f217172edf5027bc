"""UIPE (arXiv 2503.04693): extrapolate along the unlearning delta, theta(alpha) = theta_o + (1 + alpha) delta.

Offline, one process. The delta shards record fragments of the parameters under their in-memory names (what
`named_parameters()` of the engine's module yields), which differ from the checkpoint's tensor names for many
architectures (GPT-NeoX, Mixtral's fused experts in transformers 5, hub layouts without the base-model prefix,
tied weights). Instead of a name table, theta_o is loaded the way the run loaded it, with transformers'
`from_pretrained` (its key renaming, weight converters, prefix handling and tying), so its parameters carry
exactly the names and shapes the deltas do; the result is written back with `engine/hf_save.write_hf_dir`, the
same writer (transformers' inverse conversion, `save_pretrained`'s layout) that wrote the run's `model/`.
Why not stream tensor by tensor from the files: a converter can build one in-memory tensor from many file
tensors (Mixtral: 2E of them), so a file-name -> in-memory-name map does not exist in general. Cost: the
original model in fp32 in CPU memory (4 bytes per parameter), one tensor's delta on top.

Per tensor [numel] fp32: d is reassembled from the rank files' fragments (any number of ranks) and
`o + (1 + alpha) * d` is computed in fp32, with theta_u + alpha * d at the fix-up elements (the files:
`uipe/delta_format.py`).

Dtype: every floating tensor is written in the dtype the run trained in (`base_dtype` of the shards), the
dtype `model/` holds: with bf16 training that is bf16, rounding the fp32 result as DeepSpeed rounds its fp32
master into the bf16 module, so alpha = 0 reproduces `model/` bit for bit in every dtype combination. theta_o
is loaded in fp32 (exact for fp32/bf16/fp16 files) and rounded to `base_dtype` first: that is the theta_o the
deltas are relative to.

Refused before anything is written (RunError, nothing left on disk): |alpha| > ALPHA_MAX or not finite, a
result that is not finite in some tensor (named), deltas for tensors the model does not have, wrong shapes, an
original model other than the one the run started from (its hash is recorded in the shards).
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from pathlib import Path

import torch

from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_replace_dir
from dsunlearn.uipe.adapter_extrapolate import adapter_dir_of, extrapolate_adapter, is_adapter_delta
from dsunlearn.uipe.delta_format import fix_idx_key, fix_u_key, model_hash, read_delta_meta

# UIPE's useful range is alpha of order 1 (the paper sweeps 0..~10); beyond 100 the delta outweighs theta_o a
# hundredfold and the result is no longer a model near the unlearned one.
ALPHA_MAX = 100.0
# Besides every file with "token" in its name (tokenizer.json, tokenizer_config.json, tokenizer.model, ...).
TOKENIZER_FILES = ("special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")  # fmt: skip


def _extrapolate_tensor(
    o: torch.Tensor, name: str, frags: list, handles: dict, alpha: float, base_dtype: torch.dtype
) -> torch.Tensor:
    """o + (1 + alpha) * d in fp32 [shape of o], with theta_u + alpha * d at the fix-up elements."""
    flat_o = o.to(base_dtype).float().reshape(-1)
    out = flat_o.clone()
    for rank, pm in frags:
        fh, a, n = handles[rank], pm["start"], pm["fragment_numel"]
        d = fh.get_tensor(name)
        part = flat_o[a : a + n] + (1.0 + alpha) * d
        if fix_idx_key(name) in fh.keys():
            idx = fh.get_tensor(fix_idx_key(name))
            u, inc = fh.get_tensor(fix_u_key(name)), alpha * d[idx]
            part[idx] = torch.where(inc == 0, u, u + inc)  # -0.0 + 0.0 would be +0.0: keep u's bits
        out[a : a + n] = part
    return out.view(o.shape)


def _check_alpha(alpha: float) -> None:
    if not math.isfinite(alpha) or abs(alpha) > ALPHA_MAX:
        raise RunError(f"alpha={alpha:g} is out of range; pass a finite --alpha with |alpha| <= {ALPHA_MAX:g}")


def _copy_tokenizer(tok_dir: Path, out: Path) -> None:
    from dsunlearn.models.compat import legacy_tokenizer_config

    for f in tok_dir.iterdir():
        if f.is_file() and ("token" in f.name or f.name in TOKENIZER_FILES):
            shutil.copy2(f, out / f.name)
    legacy_tokenizer_config(out)


def extrapolate(
    original_dir: str | Path, delta_dir: str | Path, alpha: float, out_dir: str | Path, tokenizer_dir=None
) -> Path:
    """Write theta_o + (1 + alpha) * delta as an HF model dir (config, tokenizer, safetensors) at out_dir."""
    from safetensors import safe_open

    from dsunlearn.engine.hf_save import write_hf_dir
    from dsunlearn.models.load import load_causal_lm

    _check_alpha(alpha)
    original_dir, out_dir = Path(original_dir), Path(out_dir)
    if out_dir.exists():
        raise RunError(f"'{out_dir}' exists; choose another --output-dir (an existing model is never replaced)")
    metas = read_delta_meta(delta_dir)
    want, got = metas[0]["original_hash"], model_hash(original_dir)
    if got != want:
        raise RunError(
            f"original model '{original_dir}' (hash {got[:12]}) is not the one the run started from "
            f"(hash {want[:12]}); pass the model the run unlearned from"
        )
    base_dtype = getattr(torch, metas[0].get("base_dtype", "float32"))
    if is_adapter_delta(metas):  # a LoRA run (issue 17): delta = s B A, read from the run's adapter
        adapter = adapter_dir_of(Path(delta_dir))
        tmp = out_dir.with_name(f".{out_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            extrapolate_adapter(original_dir, adapter, alpha, base_dtype, tmp)
            _copy_tokenizer(Path(tokenizer_dir) if tokenizer_dir else original_dir, tmp)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            return atomic_replace_dir(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    where: dict[str, list[tuple[int, dict]]] = defaultdict(list)  # in-memory name -> [(rank, param meta)]
    for m in metas:
        for name, pm in m["params"].items():
            where[name].append((m["rank"], pm))
    model = load_causal_lm(str(original_dir), dtype="float32")
    params = dict(model.named_parameters())
    missing = sorted(set(where) - set(params))
    if missing:
        raise RunError(
            f"the deltas in '{delta_dir}' cover parameter(s) {missing[:3]} that '{original_dir}' does not have "
            "when loaded with transformers: pass the model the run unlearned from"
        )
    handles = {m["rank"]: safe_open(m["file"], framework="pt") for m in metas}
    with torch.no_grad():
        for name, p in params.items():
            new = p.data
            if name in where:
                shape = list(where[name][0][1]["shape"])
                if list(p.shape) != shape:
                    raise RunError(f"delta of '{name}' has shape {shape} but the original's is {list(p.shape)}")
                new = _extrapolate_tensor(p.data, name, where[name], handles, alpha, base_dtype)
            if new.is_floating_point():
                new = new.to(base_dtype)
                bad = int((~torch.isfinite(new)).sum())
                if bad:
                    raise RunError(
                        f"theta_o + (1 + alpha) * delta at alpha={alpha:g} has {bad} non-finite value(s) in "
                        f"'{name}' ({base_dtype}): the delta in '{delta_dir}' is corrupt or alpha too large"
                    )
            p.data = new
        for _, b in model.named_buffers():
            if b.is_floating_point():
                b.data = b.data.to(base_dtype)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_hf_dir(model, tmp, metadata={"uipe_alpha": repr(alpha)})
        _copy_tokenizer(Path(tokenizer_dir) if tokenizer_dir else original_dir, tmp)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return atomic_replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
