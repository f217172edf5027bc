"""Upper (and lower) bounds of every numeric config field: what each value can mean.

Python ints are unbounded and YAML hands over whatever it is given: `engine.micro_batch_size=1000000000`
builds 10^9 batch indices, `run.seed=10**14` overflows the sampler's seed arithmetic, a 5000-digit int cannot
even be printed (`int.__str__` refuses past 4300 digits). So every int and float field of `RunConfig` has a
range here, checked by `config.validate` before anything runs; `tests/unit/test_config_bounds.py` asserts no
numeric field is left out. The objectives' own hyper-parameters (`objective.beta`, ...) are bounded where they
are declared, in their function's signature (`dsunlearn/hyperparams.py`), and checked here the same way.
Bounds that need the data or the model (global batch <= dataset size, generation caps <= the model's
`max_position_embeddings`) are checked where those are known, still before any run directory is written
(`data/sampler.py`, `check_generation_fits` below).

Error messages never print an unbounded value: `short_repr` cuts reprs to a few dozen characters.
"""

from __future__ import annotations

import dataclasses
import math

from dsunlearn.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's seed range (torch's is 2**64 - 1); the sampler's seed x 1e6 + epoch stays < 2**63
_STEPS = 10**8  # 10^8 optimizer steps: years at a step a second; more is a typo
_TOKENS = 2**20  # no model here has a context of over a million tokens

# key: (lo, hi, why). Ints and floats; every bound inclusive. Lower bounds of 0 / > 0 that validate() already
# states with its own message are repeated here for completeness only (validate checks them first).
BOUNDS: dict[str, tuple[float, float, str]] = {
    "model.tiny.hidden_size": (8, 8192, "the embedded tiny Llama is for tests and demos; load bigger models"),
    "model.tiny.num_layers": (1, 128, "the embedded tiny Llama is for tests and demos; load bigger models"),
    "model.tiny.num_heads": (1, 1024, "attention heads, each at least 2 wide"),
    "model.tiny.intermediate_size": (1, 65536, "the MLP width of the embedded tiny Llama"),
    "model.tiny.vocab_size": (300, 1_000_000, "the byte-level BPE needs its 256 byte symbols + 5 specials"),
    "model.tiny.max_position_embeddings": (8, _TOKENS, "the tiny model's context in tokens"),
    "model.adapter.r": (1, 65536, "a LoRA rank; the update is low-rank only well below the layer's width"),
    "model.adapter.alpha": (1e-6, 1e6, "LoRA alpha (scale = alpha / r)"),
    "model.adapter.dropout": (0.0, 0.999, "a dropout probability, in [0, 1)"),
    "data.synthetic.seed": (0, SEED_MAX, "seeds are 32-bit"),
    "data.synthetic.n_authors": (2, 100_000, "fictitious authors"),
    "data.synthetic.n_world_facts": (0, 100_000, "world-facts items"),
    "data.synthetic.n_real_authors": (0, 100_000, "real-author items"),
    "data.synthetic.n_perturbed": (1, 5, "wrong answers per question, at most 5 as in TOFU"),
    "data.max_length": (8, _TOKENS, "tokens of prompt + answer"),
    "data.muse.verbmem_max_new_tokens": (1, _TOKENS, "new tokens"),
    "data.muse.knowmem_max_new_tokens": (1, _TOKENS, "new tokens"),
    "data.muse.privleak_k": (1e-9, 1.0, "a fraction of the scored tokens, in (0, 1]"),
    "data.muse.mia_k": (1e-9, 1.0, "a fraction of the scored tokens, in (0, 1]"),
    "data.muse.auc_retrain": (1e-9, 1.0, "an AUC in (0, 1]"),
    "data.muse.n_forget": (1, 10_000, "synthetic articles"),
    "data.muse.n_retain": (1, 10_000, "synthetic articles"),
    "data.muse.n_holdout": (1, 10_000, "synthetic articles"),
    "data.muse.n_icl": (0, 100, "in-context examples"),
    "data.wmdp.min_chars": (0, 10**7, "characters"),
    "data.wmdp.n_hazard": (4, 10_000, "synthetic questions per hazardous subset"),
    "data.wmdp.n_general": (4, 10_000, "synthetic questions per general subject"),
    "objective.gamma": (0.0, 1e6, "a coefficient this large swamps the other terms: scale engine.lr instead"),
    "objective.lambda": (0.0, 1e6, "a coefficient this large swamps the other terms: scale engine.lr instead"),
    "engine.zero_stage": (0, 3, "DeepSpeed ZeRO stages"),
    "engine.lr": (0.0, 1e30, "larger values overflow the fp32 optimizer step"),
    "engine.weight_decay": (0.0, 1e4, "AdamW decay coefficient"),
    "engine.warmup_ratio": (0.0, 1.0, "a fraction of the steps"),
    "engine.epochs": (0.0, 1e5, "passes over the data"),
    "engine.max_steps": (0, _STEPS, "optimizer steps"),
    "engine.micro_batch_size": (1, 65536, "samples per rank per micro-step"),
    "engine.grad_accum_steps": (0, 65536, "micro-steps per optimizer step"),
    "engine.global_batch_size": (0, 2**22, "samples per optimizer step"),
    "engine.grad_clip": (0.0, 1e30, "a gradient norm"),
    "geometry.gru_ema": (0.0, 1.0, "an EMA coefficient"),
    "geometry.gru_cos_clip": (-1.0, 0.0, "a cosine"),
    "geometry.geffect_every": (0, _STEPS, "steps"),
    "eval.every_steps": (0, _STEPS, "steps"),
    "eval.max_items": (1, 10**7, "items per eval split"),
    "eval.max_length": (1, _TOKENS, "tokens of prompt + generation"),
    "eval.max_new_tokens": (1, _TOKENS, "new tokens"),
    "eval.batch_size": (1, 65536, "prompts per eval batch"),
    "eval.mia_k": (1e-9, 1.0, "a fraction of the scored tokens, in (0, 1]"),
    "tracking.log_every": (1, _STEPS, "steps"),
    "run.seed": (0, SEED_MAX, "seeds are 32-bit (numpy's range)"),
    "run.save_every": (0, _STEPS, "steps"),
}


def short_repr(value, n: int = 60) -> str:
    """repr(value) cut to about n characters; never builds the full text of a huge int, list or string."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * n:
        return f"<an integer of about {int(value.bit_length() * math.log10(2))} digits>"
    if isinstance(value, (list, dict, tuple)) and len(value) > n:
        return f"<a {type(value).__name__} of {len(value)} items>"
    if isinstance(value, str) and len(value) > 4 * n:
        value = value[: 4 * n]
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def numeric_fields(cfg, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of every int / float field (bools excluded) of a config dataclass tree."""
    import typing

    out: dict[str, object] = {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, key = getattr(cfg, f.name), prefix + ("lambda" if f.name == "lambda_" else f.name)
        if dataclasses.is_dataclass(v):
            out.update(numeric_fields(v, key + "."))
        elif any(t in (int, float) for t in (hints[f.name], *typing.get_args(hints[f.name]))):
            out[key] = v
    return out


def check_bounds(cfg, extra: dict[str, tuple] | None = None) -> None:
    """Every numeric field within `BOUNDS` (None = unset is fine), and each `extra` {key: (value, (lo, hi,
    why))} (the objective's hyper-parameters) within its own; ConfigError naming the key otherwise."""
    checks = [(key, value, BOUNDS.get(key)) for key, value in numeric_fields(cfg).items()]
    checks += [(key, value, bound) for key, (value, bound) in (extra or {}).items()]
    for key, value, bound in checks:
        if value is None or isinstance(value, bool):
            continue
        if bound is None:  # a new field without a bound yet: tests/unit/test_config_bounds.py fails on it
            continue
        lo, hi, why = bound
        if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(
                f"{key}={short_repr(value)} is out of range: must be in [{_num(lo)}, {_num(hi)}] ({why}); "
                f"set it in the config or with {key}=<value>"
            )


def check_tiny(t) -> None:
    """The embedded tiny Llama's shape: heads divide the width, and each head is even (rotary pairs)."""
    if t.hidden_size % t.num_heads:
        raise ConfigError(
            f"model.tiny.num_heads={t.num_heads} does not divide model.tiny.hidden_size={t.hidden_size}; choose "
            "heads that divide the width (e.g. hidden_size=192 num_heads=4)"
        )
    if (t.hidden_size // t.num_heads) % 2:
        raise ConfigError(
            f"model.tiny.hidden_size={t.hidden_size} / num_heads={t.num_heads} = {t.hidden_size // t.num_heads} "
            "per head, which is odd: rotary position embeddings rotate pairs; choose an even head width"
        )


def check_adapter(a) -> None:
    """model.adapter.target_modules: a list of module-name strings (or the single peft shortcut all-linear)."""
    t = a.target_modules
    ok = all(isinstance(m, str) and m.strip() and len(m) <= 200 for m in t) and len(t) <= 1000
    if not ok:
        raise ConfigError(
            f"model.adapter.target_modules={short_repr(t)} is not a list of module names; write e.g. "
            "model.adapter.target_modules=[q_proj,v_proj] (or [] for peft's default of the architecture)"
        )
    if "all-linear" in t and len(t) > 1:
        raise ConfigError(
            f"model.adapter.target_modules={short_repr(t)} mixes all-linear with names; give [all-linear] alone"
        )


def check_generation_fits(eval_cfg, positions: int | None, model: str) -> None:
    """The generation caps within the model's context (`max_position_embeddings`), once the model is known.

    `eval.max_new_tokens` (when set) can mean at most `positions - 1` (one prompt token); without it the
    total cap `eval.max_length` alone bounds generation, so it must be <= positions.
    """
    if positions is None:  # a config without a context length (some remote-code models): nothing to check
        return
    if eval_cfg.max_new_tokens is not None and eval_cfg.max_new_tokens >= positions:
        raise ConfigError(
            f"eval.max_new_tokens={eval_cfg.max_new_tokens} is not below the context of {model} "
            f"(max_position_embeddings={positions}): generation would run past it; set eval.max_new_tokens <= "
            f"{positions - 1}"
        )
    if eval_cfg.max_new_tokens is None and eval_cfg.max_length > positions:
        raise ConfigError(
            f"eval.max_length={eval_cfg.max_length} is longer than the context of {model} "
            f"(max_position_embeddings={positions}) and eval.max_new_tokens is unset, so generation would run "
            f"past it; set eval.max_length <= {positions} (or eval.max_new_tokens)"
        )
