"""The run configuration: a dataclass schema whose fields carry their help text.

Loaded from YAML (`load_config`), overridden with dotted `key=value` pairs from the command line
(`objective.beta=0.1`), validated (`validate`) and written back resolved (`dump_config`). Unknown keys, wrong
types and out-of-range values raise a one-line `ConfigError` naming the key, what is allowed and how to fix it.
Parsing lives in `config_io.py`; this file is the schema and the rules.

The YAML key `lambda` (the retain coefficient λ of docs/methods.md) is the field `lambda_` here (`lambda` is a
Python keyword); files and overrides use `lambda`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dsunlearn.config_bounds import check_adapter, check_bounds, check_tiny, short_repr
from dsunlearn.errors import ConfigError
from dsunlearn.suites import DEFAULT as DEFAULT_SUITE
from dsunlearn.suites import NAMES as SUITE_NAMES


def _f(default, help: str, choices: tuple | None = None, canonical=None, **kw):
    """A dataclass field with help text (and allowed values) in its metadata; `canonical(key, value)` maps a value
    given another way (an alias) to the one stored, before the choices are checked."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if canonical is not None:
        meta["canonical"] = canonical
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TinyModelConfig:
    hidden_size: int = _f(192, "hidden width of the embedded tiny Llama")
    num_layers: int = _f(3, "decoder layers")
    num_heads: int = _f(4, "attention heads (must divide hidden_size)")
    intermediate_size: int = _f(768, "MLP width")
    vocab_size: int = _f(1400, "target vocabulary of the locally trained byte-level BPE tokenizer")
    max_position_embeddings: int = _f(128, "longest sequence the tiny model accepts")
    tie_word_embeddings: bool = _f(True, "share input embedding and lm_head")


# --- LoRA / PEFT adapters (issue 17): model.adapter ---
ADAPTER_TYPES = ("none", "lora")


@dataclass
class AdapterConfig:
    type: str = _f("none", "none = train every weight; lora = freeze the base, train LoRA adapters (peft)",
                   ADAPTER_TYPES)  # fmt: skip
    r: int = _f(32, "LoRA rank r (the update of a d_out x d_in weight is scale * B A, B: d_out x r, A: r x d_in)")
    alpha: float = _f(32.0, "LoRA alpha: scale = alpha / r")
    dropout: float = _f(0.0, "dropout on the adapter's input (peft lora_dropout), in [0, 1)")
    target_modules: list = _f([], "module names to adapt (e.g. [q_proj, v_proj]); [] = peft's default for the "
                              "architecture, all-linear = every linear layer but the head")  # fmt: skip
    save_merged: bool = _f(False, "also write <run>/model: the merged model base + scale * B A (a plain HF dir)")


@dataclass
class ModelConfig:
    name_or_path: str = _f(
        "tiny",
        "'tiny' (embedded default: built from model.tiny, tokenizer trained locally), a local HF dir, or a hub id",
    )
    tokenizer: str | None = _f(None, "tokenizer dir or hub id; default: same as name_or_path")
    dtype: str = _f("float32", "weights dtype when loading", ("float32", "bfloat16", "float16"))
    trust_remote_code: bool = _f(False, "allow model code from the hub (off by default: it runs arbitrary code)")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)


@dataclass
class SyntheticConfig:
    seed: int = _f(0, "seed of the fictitious-author generator")
    n_authors: int = _f(40, "fictitious authors (10 QA each)")
    n_world_facts: int = _f(40, "world-facts utility items")
    n_real_authors: int = _f(10, "'real authors' utility authors")
    n_perturbed: int = _f(4, "wrong answers per question in the *_perturbed splits (max 5, as TOFU)")


@dataclass
class MuseConfig:
    """MUSE's own settings (data.suite=muse); defaults are muse_bench's (docs/evaluation.md#muse)."""

    corpus: str = _f("news", "MUSE corpus: news (BBC articles) or books (Harry Potter)", ("news", "books"))
    revision: str = _f("main", "hub revision of muse-bench/MUSE-<Corpus> (a commit id pins it; source=hub)")
    windows: str = _f(
        "concat",
        "training text -> windows: concat (muse_bench: documents joined, cut, last window filled from the first) "
        "or document (no window crosses two documents)",
        ("concat", "document"),
    )
    verbmem_max_new_tokens: int = _f(128, "VerbMem: greedy new tokens; the reference is cut to as many tokens")
    knowmem_max_new_tokens: int = _f(32, "KnowMem: greedy new tokens")
    privleak_k: float = _f(0.4, "PrivLeak: Min-K% fraction of lowest token log-probs (MUSE: 40%)")
    mia_k: float = _f(0.4, "Min-K% / Min-K%++ fraction of the other MIA attacks (open-unlearning's MUSE: 0.4)")
    rouge_stemmer: bool = _f(False, "ROUGE-L with Porter stemming (muse_bench: false; open-unlearning: true)")
    auc_retrain: float | None = _f(
        None,
        "PrivLeak reference AUC (MUSE convention); null = the retrained model's log (eval.retain_log) if given, "
        "else MUSE's published value for the corpus",
    )
    n_forget: int = _f(16, "synthetic: forget articles")
    n_retain: int = _f(16, "synthetic: articles in each of retain1 and retain2")
    n_holdout: int = _f(16, "synthetic: holdout articles (never trained on)")
    n_icl: int = _f(3, "synthetic: in-context QA examples of KnowMem")


@dataclass
class WmdpConfig:
    """WMDP's own settings (data.suite=wmdp): hub ids of its sets, what is evaluated (docs/evaluation.md#wmdp)."""

    subsets: str = _f(
        "auto",
        "WMDP subsets evaluated, comma-separated (bio, cyber, chem); auto = all the source has (synthetic: bio, cyber)",
    )
    mmlu_subjects: str = _f(
        "all",
        "MMLU subjects evaluated (general accuracy), comma-separated; all = every subject of the source "
        "(hub/local: MMLU's 57; synthetic: its general-knowledge subjects)",
    )
    acc_norm: bool = _f(False, "also report lm-eval's acc_norm (log-likelihood / choice length; = acc for A..D)")
    windows: str = _f(
        "document",
        "training text -> windows: document (RMU: each text its own window, cut at data.max_length) or concat",
        ("document", "concat"),
    )
    min_chars: int = _f(50, "training texts of at most this many characters are dropped (RMU's min_len: 50)")
    mmlu_hub: str = _f("cais/mmlu", "hub id of MMLU (config = subject, split test)")
    bio_forget_hub: str = _f("cais/wmdp-bio-forget-corpus", "hub id of the bio forget corpus (gated; split train)")
    cyber_forget_hub: str = _f("cais/wmdp-cyber-forget-corpus", "hub id of the cyber forget corpus (split train)")
    corpora_hub: str = _f(
        "cais/wmdp-corpora", "hub id of the older corpora (configs cyber-forget-corpus, cyber-retain-corpus, ...)"
    )
    wikitext_hub: str = _f("wikitext", "hub id of WikiText (config wikitext-2-raw-v1, split test: RMU's retain)")
    n_hazard: int = _f(24, "synthetic: questions (and documents) per hazardous subset (bio, cyber)")
    n_general: int = _f(16, "synthetic: questions (and documents) per general-knowledge subject")


@dataclass
class DataConfig:
    suite: str = _f(
        DEFAULT_SUITE,
        "benchmark: its training sets, evaluation, metrics and summary (dsunlearn/suites/<suite>/)",
        SUITE_NAMES,
    )
    source: str = _f(
        "synthetic",
        "where the suite's data comes from: its offline generator, the hub, local files",
        ("synthetic", "hub", "local"),
    )
    path: str | None = _f(None, "local dir with <split>.json / .jsonl files (source=local)")
    hub_name: str = _f("auto", "dataset id on the hub (source=hub); auto = the suite's (locuslab/TOFU, muse-bench/...)")
    forget_split: str = _f("auto", "forget set; auto = the suite's default (TOFU forget10, MUSE forget)")
    retain_split: str = _f(
        "auto", "retain set; auto = the suite's default (TOFU: the complement, forget10 -> retain90; MUSE: retain1)"
    )
    max_length: int = _f(256, "max tokens of prompt + answer")
    truncation: str = _f(
        "refuse", "items longer than max_length: refuse (error) or truncate (warn)", ("refuse", "truncate")
    )
    train_utility_sets: bool = _f(
        False, "fine-tuning also trains on real_authors + world_facts (the tiny model has no pretraining)"
    )
    prompt_format: str = _f(
        "auto",
        "text around question and answer (docs/prompt_formats.md); auto = chat_template if the tokenizer has one,"
        " else plain",
        ("auto", "chat_template", "plain", "tofu_llama2", "tofu_phi"),
    )
    tofu_official: bool = _f(
        False,
        "reproduce the official TOFU code (tofu_* formats): its question-token mask ('Answer: ' in the loss),"
        " generation prompt and per-batch 200-token generation cap",
    )
    system_prompt: str | None = _f(
        None, "chat_template: a system turn before the question (open-unlearning: 'You are a helpful assistant.')"
    )
    date_string: str | None = _f(
        None, "chat_template: the template's date_string variable (Llama-3 templates; open-unlearning: 10 Apr 2025)"
    )
    idk_file: str | None = _f(
        None,
        "refusal answers ('I don't know') that idk_nll and dpo train the forget questions toward: a UTF-8 text file,"
        " one sentence per line; null = dsunlearn's list (dsunlearn/data/refusals.txt)",
    )
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    muse: MuseConfig = field(default_factory=MuseConfig)
    wmdp: WmdpConfig = field(default_factory=WmdpConfig)


# The objectives' names and hyper-parameters, read without importing torch (`objective_catalog.py`): a config
# is validated, and a bad one refused, before any heavy import.
def _objective_names() -> tuple[str, ...]:
    from dsunlearn.objective_catalog import hyperparameter_table

    return tuple(hyperparameter_table())


def _canonical_objective(key: str, name) -> str:
    """`objective.name` as stored: an open-unlearning alias (`NPO`) becomes dsunlearn's name (`npo`)."""
    from dsunlearn.objective_names import canonical_objective

    return canonical_objective(name, key=key)


def _hyperparameter_types() -> dict[str, type]:
    from dsunlearn.hyperparams import types_of
    from dsunlearn.objective_catalog import hyperparameter_table

    return types_of(hyperparameter_table())


@dataclass
class ObjectiveConfig:
    """The forget objective and its coefficients; its own hyper-parameters are flat keys (`objective.beta`).

    `params` holds them: which keys exist, their types, defaults and bounds are the keyword-only parameters of
    the objective's function (`dsunlearn/hyperparams.py`), so an objective with a new parameter needs no
    edit here. `validate` fills in the defaults, so the written config.yaml shows every effective value.
    """

    name: str = _f(
        "npo",
        "forget objective; open-unlearning's names (NPO, GradDiff, ...) are aliases, stored as dsunlearn's",
        _objective_names,  # choices: the registry's names
        canonical=_canonical_objective,
    )
    gamma: float = _f(1.0, "coefficient of the forget loss")
    lambda_: float = _f(1.0, "coefficient of the retain regulariser (YAML key: lambda)")
    retain_loss: str = _f(
        "auto", "retain regulariser; auto = objective's default", ("auto", "none", "nll", "kl", "embed_diff")
    )
    kl_positions: str = _f("answer", "positions the KL regulariser averages over", ("answer", "all"))
    loss_mean: str = _f(
        "global",
        "what each loss of a step averages over: global (the global batch's units: any world size and split give "
        "the same step) or micro_batch (open-unlearning's: the mean of each micro-batch's mean)",
        ("global", "micro_batch"),
    )
    params: dict = field(
        default_factory=dict,
        metadata={
            "help": "a hyper-parameter of the objective; default: the objective's signature, null = default",
            "flat_keys": _hyperparameter_types,  # written objective.<key>, not objective.params.<key>
        },
    )


@dataclass
class EngineConfig:
    zero_stage: int = _f(2, "DeepSpeed ZeRO stage", (0, 1, 2, 3))
    ds_config: str | None = _f(
        None, "DeepSpeed JSON (path or shipped name zero0..zero3, zero3_offload); default zero<stage>"
    )
    precision: str = _f("fp32", "training precision", ("fp32", "bf16"))
    optimizer: str = _f("adamw", "client torch optimizer", ("adamw", "sgd"))
    lr: float = _f(1e-5, "peak learning rate")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_ratio: float = _f(0.0, "fraction of steps of linear warm-up")
    scheduler: str = _f("linear", "lr schedule after warm-up", ("constant", "linear", "cosine"))
    epochs: float = _f(5.0, "passes over the forget set (unlearn) or the training set (finetune)")
    max_steps: int = _f(0, "stop after this many optimizer steps (0 = epochs decide)")
    micro_batch_size: int = _f(4, "samples per rank per micro-step (forget and retain each)")
    grad_accum_steps: int = _f(1, "micro-steps per optimizer step; 0 = global_batch_size / (micro x world)")
    global_batch_size: int = _f(0, "samples per optimizer step; 0 = micro x world x accum, else must equal it")
    grad_clip: float = _f(0.0, "max gradient norm (0 = no clipping, as the papers)")


@dataclass
class GeometryConfig:
    gru: bool = _f(False, "project the unlearning gradient off the retain-gradient EMA when they conflict")
    gru_ema: float = _f(0.8, "GRU EMA coefficient c: G_r = c g_r + (1-c) G_r")
    gru_project: str = _f(
        "forget",
        "gradient GRU rectifies: forget = gamma grad L_f, lambda grad L_reg added after (the GRU code's *_gru+ce);"
        " combined = gamma grad L_f + lambda grad L_reg (its gd_gru, npo_gd_gru)",
        ("forget", "combined"),
    )
    gru_ema_from: str = _f(
        "nll",
        "retain-batch gradient GRU's EMA averages: nll = the retain NLL's; kl = the KL to theta_o's (objective."
        "kl_positions; the GRU code's *_grukl)",
        ("nll", "kl"),
    )
    gru_cos_clip: float | None = _f(
        None,
        "GRU cosine clip kappa in [-1, 0): a conflict with cos < kappa is removed as if cos were kappa (the GRU"
        " code's cos_clip: -0.5); null = off",
    )
    geffect_every: int = _f(0, "log the G-effect every N steps (0 = off)")


@dataclass
class EvalConfig:
    every_steps: int = _f(0, "evaluate during unlearning every N steps (0 = only at the end)")
    at_end: bool = _f(True, "evaluate when the run finishes: unlearn -> <output_dir>/eval/, finetune -> <target>/eval/")
    max_items: int = _f(300, "items per eval split (TOFU: 300)")
    max_length: int = _f(200, "generation: prompt + generation cap in tokens, per item (TOFU: 200, per batch)")
    max_new_tokens: int | None = _f(None, "generation: extra cap on new tokens (null = none, as TOFU)")
    batch_size: int = _f(30, "eval batch per rank (TOFU: 30)")
    retain_log: str | None = _f(
        None,
        "the retain model's eval log (TOFU's format with its TOFU_EVAL.json, or open-unlearning's TOFU_EVAL.json /"
        " MUSE_EVAL.json): forget quality, and PrivLeak's reference",
    )
    mia: bool = _f(
        True,
        "membership inference (forget vs holdout answers), memorization and PrivLeak -> eval/TOFU_EVAL.json; costs"
        " one more forward over both answer sets",
    )
    mia_k: float = _f(0.4, "Min-K% / Min-K%++: the fraction of lowest-probability answer tokens, in (0, 1]")
    length_batches: bool = _f(
        False,
        "cut eval batches from the items sorted by length, longest first (less padding: faster), not in item order;"
        " the same on any world size, but float results move by ~1e-6 with the padding (off: bit-identical to"
        " earlier logs). TOFU's official mode keeps its item-order generation batches",
    )


@dataclass
class TrackingConfig:
    wandb: bool = _f(False, "log to Weights & Biases (rank 0 only)")
    mode: str = _f("auto", "auto = online if an API key is configured, else offline", ("auto", "offline", "online"))
    project: str = _f("dsunlearn", "W&B project")
    entity: str | None = _f(None, "W&B entity")
    log_every: int = _f(1, "log per-step metrics every N steps")
    log_model: bool = _f(False, "upload the final model as a W&B artifact")


@dataclass
class RunSettings:
    output_dir: str = _f("runs/default", "where config.yaml, events.jsonl, model/, eval/ ... go")
    seed: int = _f(42, "seed of model init, sampling and dropout")
    overwrite: bool = _f(False, "replace an existing output_dir of another run")
    save_every: int = _f(0, "checkpoint every N steps (0 = only at the end)")
    finetune_targets: list = _f(["full", "retain"], "models `dsunlearn finetune` trains: full and/or retain")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunSettings = field(default_factory=RunSettings)


def retain_split_for(forget_split: str) -> str:
    """TOFU's complement of a forget split: forget01 -> retain99, forget05 -> retain95, forget10 -> retain90."""
    return "retain" + str(100 - int(forget_split.removeprefix("forget")))


def _resolve_splits(d: DataConfig) -> None:
    """The suite's `auto` hub name and splits filled in; a forget split the suite does not have refused."""
    from dsunlearn.suites import SPLITS

    rules = SPLITS[d.suite]
    if d.forget_split == "auto":
        d.forget_split = rules.forget_default
    if d.forget_split not in rules.forget:
        raise ConfigError(
            f"data.forget_split={short_repr(d.forget_split)} is not a forget set of data.suite={d.suite}; "
            f"choose one of: {', '.join(rules.forget)}"
        )
    if d.retain_split == "auto":
        d.retain_split = retain_split_for(d.forget_split) if d.suite == "tofu" else rules.retain_default
    if d.hub_name == "auto":
        d.hub_name = rules.hub_name.format(Corpus=d.muse.corpus.capitalize())


def _require(ok: bool, key: str, value, need: str) -> None:
    if not ok:
        raise ConfigError(
            f"{key}={short_repr(value)} is out of range: {need}; set it in the config or with {key}=<value>"
        )


def _finite_positive(key: str, value, allow_zero: bool = False) -> None:
    ok = value is not None and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    _require(ok, key, value, "must be a finite number " + (">= 0" if allow_zero else "> 0"))


def _check_hyperparameters(o: ObjectiveConfig) -> dict[str, tuple]:
    """Check the sign of each hyper-parameter the config sets; returns {dotted key: (value, (lo, hi, why))} for
    `check_bounds`. Whether the objective takes the key is checked after the bounds (`validate`'s last step).

    A value is checked against the chosen objective's declaration of its key, or another objective's if it
    does not take it (`objective.beta=0` with `ga` is reported as beta <= 0, as it always was). The sign comes
    from the declared range's lower bound: lo > 0 means "> 0", lo == 0 ">= 0", below 0 only "finite". A string
    must be one of its `Literal`'s values (`objective.positions`).
    """
    from dsunlearn.objective_catalog import hyperparameter_table

    table = hyperparameter_table()
    declarations = [table[o.name], *table.values()]
    ranges = {}
    for key, value in o.params.items():
        hp = next(params[key] for params in declarations if key in params)
        if value is not None and hp.choices is not None and value not in hp.choices:
            allowed = ", ".join(map(str, hp.choices))
            raise ConfigError(f"objective.{key}={short_repr(value)} is not allowed; choose one of: {allowed}")
        rng = hp.range
        if value is None or rng is None or isinstance(value, bool):
            continue
        if rng.lo < 0:
            _require(math.isfinite(value), f"objective.{key}", value, "must be a finite number")
        else:
            _finite_positive(f"objective.{key}", value, allow_zero=rng.lo == 0)
        ranges[f"objective.{key}"] = (value, (rng.lo, rng.hi, rng.why))
    return ranges


def _check_embed_diff(o: ObjectiveConfig) -> None:
    """embed_diff compares hidden states at the layer a hidden-state objective (rmu) reads: only with one."""
    from dsunlearn.objective_catalog import hyperparameter_table

    if o.retain_loss == "embed_diff" and "layer" not in hyperparameter_table()[o.name]:
        raise ConfigError(f"objective.retain_loss=embed_diff compares hidden states at objective.layer, which "
                          f"objective.name={o.name} does not have; use it with objective.name=rmu, or "
                          "objective.retain_loss nll or kl")  # fmt: skip


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges and cross-field rules the types cannot express; resolve `auto` values. Returns cfg."""
    e, o, d = cfg.engine, cfg.objective, cfg.data
    _finite_positive("engine.lr", e.lr)
    # torch's fp32 optimizers raise (traceback) on a step size past float32's range (3.4e38; Adam's first step
    # is lr / 0.1): refuse those here. 1e30 is far above any learning rate that trains anything.
    _require(e.lr <= 1e30, "engine.lr", e.lr, "must be <= 1e30 (larger values overflow the fp32 optimizer step)")
    _finite_positive("engine.weight_decay", e.weight_decay, allow_zero=True)
    _finite_positive("engine.epochs", e.epochs, allow_zero=e.max_steps > 0)
    _finite_positive("engine.grad_clip", e.grad_clip, allow_zero=True)
    _require(0.0 <= e.warmup_ratio < 1.0, "engine.warmup_ratio", e.warmup_ratio, "must be in [0, 1)")
    for key in ("max_steps", "global_batch_size"):
        _require(getattr(e, key) >= 0, f"engine.{key}", getattr(e, key), "must be >= 0")
    _require(e.micro_batch_size >= 1, "engine.micro_batch_size", e.micro_batch_size, "must be >= 1")
    _require(e.grad_accum_steps >= 0, "engine.grad_accum_steps", e.grad_accum_steps, "must be >= 0 (0 = derive)")
    if e.grad_accum_steps == 0 and not e.global_batch_size:
        raise ConfigError("engine.grad_accum_steps=0 (derive) needs engine.global_batch_size; set one of them")
    o.name = _canonical_objective("objective.name", o.name)  # also for a RunConfig built in code
    _finite_positive("objective.gamma", o.gamma, allow_zero=True)
    _finite_positive("objective.lambda", o.lambda_, allow_zero=True)
    hyperparameter_ranges = _check_hyperparameters(o)
    _check_embed_diff(o)
    _require(0.0 < cfg.geometry.gru_ema <= 1.0, "geometry.gru_ema", cfg.geometry.gru_ema, "must be in (0, 1]")
    clip = cfg.geometry.gru_cos_clip
    _require(clip is None or (math.isfinite(clip) and -1.0 <= clip < 0.0), "geometry.gru_cos_clip", clip,
             "must be a cosine in [-1, 0) (the GRU code's -0.5) or null (off)")  # fmt: skip
    _require(cfg.geometry.geffect_every >= 0, "geometry.geffect_every", cfg.geometry.geffect_every, "must be >= 0")
    _require(d.max_length >= 8, "data.max_length", d.max_length, "must be >= 8 tokens")
    for key in ("max_items", "max_length", "max_new_tokens", "batch_size"):
        if getattr(cfg.eval, key) is not None:
            _require(getattr(cfg.eval, key) >= 1, f"eval.{key}", getattr(cfg.eval, key), "must be >= 1")
    if d.tofu_official and d.prompt_format not in ("tofu_llama2", "tofu_phi"):
        raise ConfigError(f"data.tofu_official=true needs data.prompt_format tofu_phi or tofu_llama2 (got "
                          f"{d.prompt_format}); set one of them or data.tofu_official=false")  # fmt: skip
    _require(cfg.eval.every_steps >= 0, "eval.every_steps", cfg.eval.every_steps, "must be >= 0")
    _require(cfg.run.save_every >= 0, "run.save_every", cfg.run.save_every, "must be >= 0")
    bad = [t for t in cfg.run.finetune_targets if t not in ("full", "retain")]
    _require(not bad and cfg.run.finetune_targets, "run.finetune_targets", cfg.run.finetune_targets,
             "must be a non-empty list of 'full' and/or 'retain'")  # fmt: skip
    if d.source == "local" and not d.path:
        raise ConfigError("data.source=local needs data.path: the directory holding <split>.json files")
    _resolve_splits(d)
    check_bounds(cfg, hyperparameter_ranges)  # every numeric field within what it can mean (config_bounds.BOUNDS)
    check_tiny(cfg.model.tiny)
    check_adapter(cfg.model.adapter)
    from dsunlearn.hyperparams import resolve
    from dsunlearn.objective_catalog import hyperparameter_table

    # The signature's defaults updated with the config's, so config.yaml shows every effective value; a key the
    # objective does not take is refused naming the allowed ones.
    declared = hyperparameter_table()[o.name]
    o.params = resolve(o.name, {k: hp.default for k, hp in declared.items()}, o.params, "objective")
    return cfg
