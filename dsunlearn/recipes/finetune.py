"""`dsunlearn finetune`: train the target ("full") and the "retain" model the way TOFU does, on DeepSpeed.

TOFU fine-tunes a base model on all fictitious authors (the target to unlearn from) and, separately, on the
retain split only (the gold standard forget quality is measured against). Both start from the same base.
With `model.name_or_path: tiny` the base is built here: tokenizer trained on the data's text, tiny Llama
from `model.tiny`, saved to `<output_dir>/base/` so every later step loads it like any HF model.

Outputs: `<output_dir>/{base,full,retain}/model/` (safetensors + tokenizer), `events.jsonl`, `finetune.json`
(answer probability on forget and retain before/after, wall time per model) and, with `eval.at_end`, each
model's TOFU evaluation in `<output_dir>/<target>/eval/` as `dsunlearn eval` writes it (the full model's forget
quality against the retain model trained here, else against `eval.retain_log`), so `dsunlearn unlearn` can use
`<output_dir>/retain/eval/eval_log_aggregated.json` as its `eval.retain_log` without a separate evaluation.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dsunlearn import dist
from dsunlearn.config import RunConfig
from dsunlearn.data.collate import pad_id_of
from dsunlearn.data.sampler import BatchStream
from dsunlearn.engine.ds_setup import resolve_batch
from dsunlearn.engine.hf_save import save_hf_model
from dsunlearn.engine.unlearn_engine import MicroBatch, UnlearnEngine
from dsunlearn.errors import ConfigError, DataError
from dsunlearn.eval.nll import answer_nll, mean_answer_probability
from dsunlearn.fsutil import atomic_replace_dir, atomic_write_json
from dsunlearn.models.load import load_tokenizer
from dsunlearn.run_layout import FINETUNE_BASE, RunDir
from dsunlearn.rundir import check_output_dir, prepare_output_dir, release_output_dir
from dsunlearn.suites import get_suite
from dsunlearn.tracking import EventLog
from dsunlearn.unlearn_losses import global_count, nll_loss, reduce_stats


def _corpus(cfg: RunConfig) -> list[str]:
    """Every string of the training and evaluation splits: the tiny tokenizer must cover all of them."""
    return get_suite(cfg.data.suite).corpus(cfg.data)


def base_tokenizer(cfg: RunConfig):
    """The tokenizer of the base model: trained in memory for `tiny` (deterministic: every rank gets the same),
    else loaded. Built BEFORE the run directory exists, so bad data or a bad path leaves nothing behind."""
    if cfg.model.name_or_path == "tiny":
        from dsunlearn.models.tiny import train_tokenizer

        return train_tokenizer(_corpus(cfg), cfg.model.tiny.vocab_size, cfg.model.tiny.max_position_embeddings)
    return load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.trust_remote_code)


def _check_base_vocab(cfg: RunConfig, tokenizer) -> None:
    """A tokenizer/model mismatch is refused from the base's config.json, before any weights are loaded."""
    import json

    from dsunlearn.errors import ModelError
    from dsunlearn.models.load import local_model_dir

    if cfg.model.name_or_path == "tiny":
        return
    config = local_model_dir(cfg.model.name_or_path) / "config.json"
    vocab = json.loads(config.read_text()).get("vocab_size") if config.is_file() else None
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelError(
            f"tokenizer has {len(tokenizer)} tokens but the model '{cfg.model.name_or_path}' has {vocab} embedding "
            "rows: they do not belong together; unset model.tokenizer to use the model's own"
        )


def prepare_base(cfg: RunConfig, out: Path, tokenizer) -> str:
    """The model every fine-tune starts from: a hub id / local dir, or the tiny model built into out/base."""
    if cfg.model.name_or_path != "tiny":
        return cfg.model.name_or_path
    base = RunDir(out).finetuned_model(FINETUNE_BASE)
    if dist.is_main() and not base.exists():
        from dsunlearn.engine.hf_save import save_tokenizer
        from dsunlearn.models.tiny import build_tiny_model

        model = build_tiny_model(cfg.model.tiny, tokenizer, seed=cfg.run.seed)
        tmp = base.with_name(".model.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)  # a plain module on rank 0 alone: no collective save here
        save_tokenizer(tokenizer, tmp)  # the files transformers 4.4x loads too
        atomic_replace_dir(tmp, base)
    dist.barrier()
    return str(base)


def _probe_sets(cfg: RunConfig, tokenizer) -> dict:
    d = cfg.data
    sets = [get_suite(d.suite).training_set(d, role) for role in ("forget", "retain")]
    return {t.role: t.encode(tokenizer, d) for t in sets}


def _probabilities(module, probes: dict, cfg: RunConfig, pad: int) -> dict[str, float]:
    return {
        role: mean_answer_probability(answer_nll(module, enc, cfg.eval.batch_size, pad)[0])
        for role, enc in probes.items()
    }


def check_eval_inputs(cfg: RunConfig, tokenizer) -> None:
    """The evaluation at the end (`eval.at_end`) needs the suite's eval sets, encodable: checked up front (the
    tiny model's context is known before it is built; a loaded base's is checked by the evaluation itself)."""
    try:
        positions = cfg.model.tiny.max_position_embeddings if cfg.model.name_or_path == "tiny" else None
        get_suite(cfg.data.suite).check_eval_inputs(tokenizer, cfg.data, cfg.eval, positions)
    except DataError as e:
        raise DataError(f"{e} (for the evaluation after fine-tuning; eval.at_end=false skips it)") from None


def train_one(cfg: RunConfig, base: str, tokenizer, enc: list, out_model: Path, events: EventLog, tag: str,
              probes: dict):  # fmt: skip
    """Fine-tune `base` on the encoded items `enc` (answer-token NLL, global-batch mean); save to out_model.

    Returns (answer probability on the probe sets before, after). Both are measured on the engine's module,
    so at ZeRO-3 no rank ever holds a full replica.
    """
    world, rank = dist.world_size(), dist.rank()
    e = cfg.engine
    micro, accum, global_batch = resolve_batch(e, world)
    stream = BatchStream(len(enc), global_batch, micro, world, seed=cfg.run.seed)
    steps = e.max_steps or stream.steps_for_epochs(e.epochs)
    engine = UnlearnEngine(cfg, base, tokenizer, steps, seed=cfg.run.seed)
    pad, device = pad_id_of(tokenizer), engine.device
    before = _probabilities(engine.module, probes, cfg, pad)
    bar = tqdm(range(steps), desc=f"finetune {tag}", disable=not dist.is_main(), dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        n_tokens = global_count(enc, stream.global_indices(step), "token")
        batches = [MicroBatch.build(enc, stream.micro_indices(step, k, rank), pad, device) for k in range(accum)]
        # Sum / global token count x world: DeepSpeed's mean over ranks makes it the global mean.
        (stats,) = engine.accumulate([(batches, nll_loss(1.0, n_tokens))])
        engine.step()
        loss_sum = torch.tensor(reduce_stats(stats)[0], dtype=torch.float64)
        loss = dist.all_reduce_sum(loss_sum).item() / n_tokens
        lr = engine.lr()
        dt = time.perf_counter() - t0
        events.log("finetune_step", model=tag, step=step + 1, loss=loss, lr=lr, tokens_per_s=n_tokens / dt)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}")
    save_hf_model(engine.module, out_model, tokenizer=tokenizer)
    after = _probabilities(engine.module, probes, cfg, pad)
    suite = get_suite(cfg.data.suite)
    log = suite.evaluate(engine.module, tokenizer, cfg.data, cfg.eval) if cfg.eval.at_end else None
    return before, after, log


def _write_evals(cfg: RunConfig, out: Path, logs: dict, summary: dict) -> None:
    """Each evaluated model's log + summary into `<out>/<target>/eval/`; retain first, its log then gives the
    full model's forget quality (else `eval.retain_log`; the retain model alone has none)."""
    retain, suite = logs.get("retain", cfg.eval.retain_log), get_suite(cfg.data.suite)
    for target in sorted(logs, key=lambda t: t != "retain"):
        result = suite.write_eval(out / target, logs[target], retain if target == "full" else cfg.eval.retain_log)
        summary["models"][target]["eval"] = result


def run_finetune(cfg: RunConfig, resume: bool = False) -> dict:
    if cfg.model.adapter.type != "none":  # adapters (issue 17) are for unlearning; finetune saves a full model
        raise ConfigError(
            f"model.adapter.type={cfg.model.adapter.type} is for `dsunlearn unlearn`; `dsunlearn finetune` trains "
            "every weight: set model.adapter.type=none"
        )
    dist.init_distributed()
    check_output_dir(cfg, "finetune", resume=resume)
    # Everything that can be wrong with the inputs is found here, before the run directory exists.
    d = cfg.data
    tokenizer = base_tokenizer(cfg)
    _check_base_vocab(cfg, tokenizer)
    probes = _probe_sets(cfg, tokenizer)
    if cfg.eval.at_end:
        check_eval_inputs(cfg, tokenizer)
    encoded = {t: get_suite(d.suite).finetune_set(d, t).encode(tokenizer, d) for t in cfg.run.finetune_targets}
    out = prepare_output_dir(cfg, "finetune", resume=resume)
    events = EventLog(RunDir(out).events, cfg, job="finetune")
    base = prepare_base(cfg, out, tokenizer)
    summary: dict = {"base": base, "world_size": dist.world_size(), "models": {}}
    logs: dict = {}  # target -> TOFU log, written once all targets are trained (see _write_evals)
    for target in cfg.run.finetune_targets:
        t0 = time.time()
        model_dir = RunDir(out).finetuned_model(target)
        if model_dir.exists() and resume:
            summary["models"][target] = {"path": str(model_dir), "skipped": "already trained (resume)"}
            continue
        before, after, log = train_one(cfg, base, tokenizer, encoded[target], model_dir, events, target, probes)
        if log is not None:
            logs[target] = log
        row = {
            "path": str(model_dir),
            "train_items": len(encoded[target]),
            "prob_before": before,
            "prob_after": after,
            "wall_seconds": round(time.time() - t0, 1),
        }
        summary["models"][target] = row
        events.log("finetune_done", model=target, **{f"prob_{k}_{r}": v for k, d in (("before", before),
                   ("after", after)) for r, v in d.items()}, wall_seconds=row["wall_seconds"])  # fmt: skip
    _write_evals(cfg, out, logs, summary)
    if dist.is_main():
        atomic_write_json(RunDir(out).finetune_summary, summary)
    events.close()
    release_output_dir(out)  # on an error the process exits, and the kernel drops the lock with it
    return summary
