"""Loading causal LMs and tokenizers safely: safetensors only, no remote code unless asked.

A pickle checkpoint (`pytorch_model.bin`, `*.pt`) can run arbitrary code when loaded, so a directory that has
only pickle weights is refused with a message saying how to convert it. Local directories are checked before
anything heavy is imported so that a wrong path costs a second, not a model load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dsunlearn.engine.partitioning import full_shape
from dsunlearn.errors import ModelError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1


def _missing_model(path) -> ModelError:
    """The error for a model / tokenizer path that is not there (with the way out for `tiny`)."""
    if str(path) == "tiny":
        return ModelError(
            "model.name_or_path=tiny is the embedded default that only `dsunlearn finetune` builds (into "
            "<output_dir>/base/model); to unlearn or evaluate, set model.name_or_path=<finetune output_dir>/full/model "
            "(e.g. runs/tiny_finetune/full/model after `dsunlearn finetune --config tiny_finetune`)"
        )
    return ModelError(
        f"model path '{path}' does not exist or is not a directory; set model.name_or_path (or model.tokenizer, "
        "--model) to a saved HF model dir (safetensors + tokenizer: `dsunlearn finetune` writes one to "
        "<output_dir>/full/model) or to a hub id org/name"
    )


# Sizes no causal LM has; beyond them config.json is damaged or hostile (building the model would hang or
# exhaust memory before any error).
_CONFIG_BOUNDS = {"num_hidden_layers": 4096, "n_layer": 4096, "num_layers": 4096, "vocab_size": 1 << 24,
                  "hidden_size": 1 << 17, "n_embd": 1 << 17, "d_model": 1 << 17, "intermediate_size": 1 << 20,
                  "num_attention_heads": 1 << 12, "n_head": 1 << 12, "max_position_embeddings": 1 << 24}  # fmt: skip


def read_hf_config(cfg_file: Path) -> dict:
    """config.json as a dict with a string model_type and sane sizes; ModelError (one line) otherwise."""
    if cfg_file.stat().st_size > 1 << 24:
        raise ModelError(f"'{cfg_file}' is {cfg_file.stat().st_size} bytes: not a model config (they are a few kB)")
    try:
        hf_config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ModelError(f"'{cfg_file}' is not a valid HF config ({type(e).__name__}): not UTF-8 JSON") from None
    if not isinstance(hf_config, dict) or not isinstance(hf_config.get("model_type"), str):
        raise ModelError(f"'{cfg_file}' is not a valid HF config (a JSON object with a string model_type)")
    for key, hi in _CONFIG_BOUNDS.items():
        v = hf_config.get(key)
        if v is None or isinstance(v, (list, dict)):  # absent, or per-layer lists (some architectures)
            continue
        if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= hi):
            shown = repr(v)[:40]
            raise ModelError(
                f"'{cfg_file}': {key}={shown} is out of range (an integer in [1, {hi}]); the config is damaged or "
                "not a causal LM's"
            )
    return hf_config


def check_model_dir(path: str | Path, trust_remote_code: bool | None = None) -> Path:
    """A local HF model dir with a causal-LM config and safetensors weights; ModelError otherwise.

    Reads only files (config.json, the weight names), so it runs before any of a model's own code could:
    a model whose type transformers does not know is a causal LM only through config.json's `auto_map`
    (`AutoModelForCausalLM` -> its code), which needs `trust_remote_code` (None: not decided here).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise _missing_model(path)
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"'{p}' has no config.json: it is not a Hugging Face model directory")
    if not (list(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").is_file()):
        pickles = [f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickles:
            raise ModelError(
                f"'{p}' holds only pickle weights ({', '.join(sorted(pickles)[:3])}); dsunlearn loads safetensors "
                "only (pickle can run code): convert with model.save_pretrained(dir, safe_serialization=True)"
            )
        raise ModelError(f"'{p}' has no *.safetensors weights")
    hf_config = read_hf_config(cfg_file)
    model_type = hf_config["model_type"]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    # A saved classifier (e.g. LlamaForSequenceClassification) has a causal-LM model_type, but loading it as a
    # causal LM would silently attach a freshly initialised lm_head: refuse by its saved architecture.
    archs = hf_config.get("architectures") or []
    lm_heads = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
    if archs and not any(a.endswith(lm_heads) for a in archs):
        raise ModelError(
            f"'{p}' holds a {', '.join(archs)}, not a causal language model; pass a *ForCausalLM checkpoint"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        auto_map = hf_config.get("auto_map")
        remote = auto_map.get("AutoModelForCausalLM") if isinstance(auto_map, dict) else None
        if remote and trust_remote_code is False:
            raise ModelError(
                f"'{p}' is a '{model_type}' model that needs its own code ({remote}, config.json auto_map; "
                "checked from config.json, none of that code ran); set model.trust_remote_code=true only if you "
                "trust that code"
            )
        if not remote:
            why = " (its auto_map has no AutoModelForCausalLM; checked before any of its code ran)" if auto_map else ""
            raise ModelError(
                f"'{p}' is a '{model_type}' model, not a causal language model{why}; dsunlearn unlearns decoder "
                "LMs (Llama, Mistral, Qwen, Phi, GPT-2, GPT-NeoX, OPT, ...)"
            )
    return p


def check_before_remote_code(name_or_path: str, trust_remote_code: bool) -> None:
    """Check a local model dir from its files before transformers reads it: with trust_remote_code,
    AutoConfig / AutoTokenizer import the directory's own code (config.json's auto_map), so a directory that
    is no causal LM, or needs code it may not run, is refused before any of that code runs."""
    p = Path(name_or_path).expanduser()
    if not (p / "config.json").is_file():
        return
    # Without trust_remote_code and auto_map no code of the directory can run: load_causal_lm checks it later
    # (importing transformers' model mapping here would cost every run seconds).
    if trust_remote_code or '"auto_map"' in (p / "config.json").read_text(encoding="utf-8", errors="replace"):
        check_model_dir(p, trust_remote_code=trust_remote_code)


def model_positions(model_dir: str | Path) -> int | None:
    """The context length in config.json (max_position_embeddings or its GPT-2 / other names), or None."""
    try:
        hf_config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = hf_config.get(key) if isinstance(hf_config, dict) else None
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def local_model_dir(name_or_path: str) -> Path:
    """The directory holding a model's files: the path itself, or the hub cache snapshot of a hub id."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as e:
        raise ModelError(f"cannot find the files of '{name_or_path}' locally ({type(e).__name__}: {e})") from None


def _generic_fast(name_or_path: str) -> bool:
    """A local dir whose tokenizer_config.json names a plain tokenizer.json reader (what dsunlearn saves).

    AutoTokenizer in transformers 5 swaps in the model type's own class for some model types whatever the file
    says (qwen2 -> Qwen2Tokenizer, which adds `<|endoftext|>`): the loaded tokenizer would not be the saved one."""
    from dsunlearn.models.compat import GENERIC_FAST

    p = Path(name_or_path).expanduser()
    try:
        cls = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return False
    return cls in GENERIC_FAST and (p / "tokenizer.json").is_file()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    # A local path that is not there would otherwise be tried as a hub id ("Repo id must be in the form ...").
    if _looks_like_path(name_or_path) and not Path(name_or_path).expanduser().is_dir():
        raise _missing_model(name_or_path)
    check_before_remote_code(name_or_path, trust_remote_code)
    try:
        if _generic_fast(name_or_path):  # load exactly the tokenizer.json that was saved
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(name_or_path)
        else:
            tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"could not load a tokenizer from '{name_or_path}' ({type(e).__name__}: {e})") from None
    if tok.pad_token_id is None:  # Llama-style tokenizers ship without a pad token; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """`AutoModelForCausalLM.from_pretrained` with safetensors only. Local dirs are checked first.

    Under ZeRO-3 the caller keeps an `HfDeepSpeedConfig` alive so weights load straight into partitions.
    """
    from transformers import AutoModelForCausalLM

    if _looks_like_path(name_or_path):
        check_model_dir(name_or_path, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except Exception as e:
        raise ModelError(f"could not load the causal LM '{name_or_path}' ({type(e).__name__}: {e})") from None
    return model


def check_vocab(model, tokenizer, where: str = "") -> None:
    """Every token id the tokenizer can produce must have an embedding row."""
    rows = full_shape(model.get_input_embeddings().weight)[0]  # a ZeRO-3 partition's own shape is a flat slice
    if len(tokenizer) > rows:
        extra = [f"{i}={tokenizer.convert_ids_to_tokens(i)!r}"[:40] for i in range(rows, min(len(tokenizer), rows + 3))]
        raise ModelError(
            f"tokenizer{(' ' + where) if where else ''} ({type(tokenizer).__name__}) has {len(tokenizer)} tokens but "
            f"the model's embedding has {rows} rows: ids {rows}..{len(tokenizer) - 1} ({', '.join(extra)}) have no "
            "embedding, they do not belong together: use the tokenizer the model was trained with (model.tokenizer "
            "unset = the one saved with the model)"
        )
