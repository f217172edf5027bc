"""`dsunlearn unlearn`: one readable unlearning loop on a ZeRO-sharded DeepSpeed engine.

Per optimizer step, with a forget and a retain global batch (the same samples whatever the world size):
- no geometry this step: gamma L_f (+ lambda L_reg) back-propagated into the same buffers, one reduction.
- GRU and/or G-effect this step: gradients of the needed losses are read one by one as this rank's shard
  (`ShardedGrad`); the G-effect reduces one [5, groups] tensor, GRU two scalars per group; the combined
  gradient g = GRU(gamma grad L_f) + lambda grad L_reg is written back into the shard and the optimizer steps.
  No rank ever holds the full gradient.
Logs every step to events.jsonl; saves the unlearned model (consolidated safetensors) at the end.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dsunlearn import dist
from dsunlearn.config import RunConfig
from dsunlearn.config_bounds import check_generation_fits
from dsunlearn.data.collate import encode_items, pad_batch, pad_id_of
from dsunlearn.data.sampler import BatchStream
from dsunlearn.engine.checkpoint import _maybe_fault, check_resume_state, load_checkpoint, save_checkpoint
from dsunlearn.engine.delta import model_hash, save_delta_shard, snapshot_fragments
from dsunlearn.engine.ds_setup import build_ds_config, resolve_batch, zero3_init_context
from dsunlearn.engine.hf_save import save_hf_model
from dsunlearn.engine.reference import ReferenceModel, precompute_forget_ref, ref_batch
from dsunlearn.engine.unlearn_engine import MicroBatch, UnlearnEngine
from dsunlearn.errors import DivergedError, RunError
from dsunlearn.fsutil import atomic_replace_dir
from dsunlearn.geometry.geffect import g_effect
from dsunlearn.geometry.gru import GRU
from dsunlearn.manifest import write_manifest
from dsunlearn.models.load import (
    check_before_remote_code,
    load_causal_lm,
    load_tokenizer,
    local_model_dir,
    model_positions,
)
from dsunlearn.objectives import get_objective, get_regularizer
from dsunlearn.run_layout import RunDir
from dsunlearn.rundir import check_output_dir, prepare_output_dir, release_output_dir
from dsunlearn.suites.tofu.data import EVAL_SPLITS, eval_split_name, load_split
from dsunlearn.suites.tofu.retain_check import check_retain_log
from dsunlearn.tracking import EventLog, check_tracking
from dsunlearn.unlearn_losses import global_count, nll_loss, objective_loss, reduce_stats, regularizer_loss


def retain_regularizer(cfg: RunConfig):
    """(spec, params) of the retain term, or (None, {}) when the run has none."""
    o = cfg.objective
    name = get_objective(o.name).retain_loss if o.retain_loss == "auto" else o.retain_loss
    if name in (None, "none"):
        return None, {}
    spec = get_regularizer(name)
    return spec, spec.resolve({"positions": o.kl_positions} if spec.inputs == "logits" else {})


class UnlearnRun:
    """The state of one run: data, streams, engine, reference, GRU. `step(i)` does optimizer step i."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        d, o = cfg.data, cfg.objective
        self.world, self.rank = dist.world_size(), dist.rank()
        self.spec = get_objective(o.name)
        self.params = self.spec.resolve({"beta": o.beta, "alpha": o.alpha, "delta": o.delta})
        self.reg, self.reg_params = retain_regularizer(cfg)
        # What needs neither tokenizer nor model is read first: a bad DeepSpeed JSON or data file fails in a
        # second, before transformers is imported.
        build_ds_config(cfg.engine, self.world)
        forget_items, retain_items = load_split(d, d.forget_split), load_split(d, d.retain_split)
        micro, self.accum, gb = resolve_batch(cfg.engine, self.world)
        self.fs = BatchStream(len(forget_items), gb, micro, self.world, seed=cfg.run.seed,
                              what=f"the forget split '{d.forget_split}'")  # fmt: skip
        self.rs = BatchStream(len(retain_items), gb, micro, self.world, seed=cfg.run.seed + 1,
                              what=f"the retain split '{d.retain_split}'")  # fmt: skip
        check_before_remote_code(cfg.model.name_or_path, cfg.model.trust_remote_code)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.trust_remote_code)
        evaluates = cfg.eval.at_end or cfg.eval.every_steps
        if evaluates:  # the model path is valid now (its tokenizer loaded): its config.json bounds generation
            name = cfg.model.name_or_path
            check_generation_fits(cfg.eval, model_positions(local_model_dir(name)), f"model.name_or_path '{name}'")
        self.retain_log = check_retain_log(cfg.eval.retain_log, cfg) if evaluates and cfg.eval.retain_log else None
        self.pad = pad_id_of(self.tokenizer)
        self.forget = encode_items(self.tokenizer, forget_items, d, split=d.forget_split)
        self.retain = encode_items(self.tokenizer, retain_items, d, split=d.retain_split)
        self.steps = cfg.engine.max_steps or self.fs.steps_for_epochs(cfg.engine.epochs)
        self.ue = UnlearnEngine(cfg, cfg.model.name_or_path, self.tokenizer, self.steps)
        # theta_o's forget log-probs: the policy before step 0 is the reference (no second model needed).
        self.ref_f = (
            precompute_forget_ref(self.ue.module, self.forget, cfg.eval.batch_size, self.pad)
            if self.spec.needs_reference
            else None
        )
        self.ref_model = None
        if self.reg is not None and self.reg.needs_reference:
            with zero3_init_context(self.ue.ds_config):
                ref = load_causal_lm(cfg.model.name_or_path, cfg.model.dtype, cfg.model.trust_remote_code)
            self.ref_model = ReferenceModel(ref, self.ue.ds_config, self.ue.zero3)
        self.gru = GRU(cfg.geometry.gru_ema) if cfg.geometry.gru else None
        if cfg.eval.at_end or cfg.eval.every_steps:
            self._check_eval_splits()
        # UIPE: this rank's fp32 fragments of theta_o, and which model they came from.
        self.orig = snapshot_fragments(self.ue.engine, self.ue.named)
        self.original_hash = dist.broadcast_object(
            model_hash(local_model_dir(cfg.model.name_or_path)) if dist.is_main() else None
        )

    def _check_eval_splits(self) -> None:
        """Load and encode the four TOFU eval sets now: a missing split or an over-long item must fail before
        training, not after it."""
        d = self.cfg.data
        for role in EVAL_SPLITS:
            split = eval_split_name(role, d.forget_split)
            items = load_split(d, split)[: self.cfg.eval.max_items]
            for field in ("answer", "paraphrased_answer", "perturbed_answer"):
                if all(field in it for it in items):
                    encode_items(self.tokenizer, items, d, field=field, split=split)

    def _micro(self, encoded, stream: BatchStream, step: int, with_ref: bool) -> list[MicroBatch]:
        out = []
        for k in range(self.accum):
            idx = stream.micro_indices(step, k, self.rank)
            b = {key: v.to(self.ue.device) for key, v in pad_batch([encoded[i] for i in idx], self.pad).items()}
            ref = ref_batch(self.ref_f, idx, b["input_ids"].shape[1] - 1, self.ue.device) if with_ref else None
            out.append(MicroBatch(idx, b["input_ids"], b["attention_mask"], b["labels"], ref))
        return out

    def step(self, step: int) -> dict:
        o = self.cfg.objective
        t0 = time.perf_counter()
        f_idx, r_idx = self.fs.global_indices(step), self.rs.global_indices(step)
        geffect = self._geffect(step)
        geometry = self.gru is not None or geffect  # gradients read one by one as shards this step
        fb = self._micro(self.forget, self.fs, step, self.spec.needs_reference)
        rb = self._micro(self.retain, self.rs, step, False) if (self.reg or geometry) else []
        f_count = global_count(self.forget, f_idx, self.spec.unit)
        f_tokens = global_count(self.forget, f_idx, "token")
        r_tokens = global_count(self.retain, r_idx, "token")
        ref_logits = self.ref_model.logits if self.ref_model is not None else None
        # Fast path: gamma and lambda go into the losses; geometry path: unscaled gradients, combined on shards.
        coef_f, coef_r = (1.0, 1.0) if geometry else (o.gamma, o.lambda_)
        obj = objective_loss(self.spec, self.params, coef_f, f_count)
        reg = None
        if self.reg:
            n_micro = self.accum * self.world
            reg = regularizer_loss(self.reg, self.reg_params, coef_r, r_tokens, ref_logits, n_micro)
        rec: dict = {}
        if not geometry:
            stats = self.ue.accumulate([(fb, obj)] + ([(rb, reg)] if reg is not None else []))
            # The stats are the unscaled loss sums (gamma / lambda only scale what is back-propagated).
            f_sum, f_metrics = reduce_stats(stats[0])
            r_sum = reduce_stats(stats[1])[0] if reg is not None else 0.0
        else:
            g_obj, st = self.ue.grad_of(fb, obj)  # grad L_u (no gamma)
            f_sum, f_metrics = reduce_stats(st)
            g_reg, r_sum = None, 0.0
            if reg is not None:
                g_reg, st = self.ue.grad_of(rb, reg)
                r_sum = reduce_stats(st)[0]
            g_rnll = g_reg if (self.reg is not None and self.reg.name == "nll") else None
            if g_rnll is None:
                g_rnll, _ = self.ue.grad_of(rb, nll_loss(1.0, r_tokens))
            if geffect:
                if self.spec.risk_is_negative_loss:  # grad R(D_f) = -grad L_u(D_f): reuse, no third backward
                    g_risk_f = g_obj.clone().scale_(-1.0)
                else:
                    g_risk_f, _ = self.ue.grad_of(fb, nll_loss(1.0, f_tokens))
                rec.update(g_effect(g_obj, g_risk_f, g_rnll).as_dict())
            g = g_obj.scale_(o.gamma)
            if self.gru is not None:
                info = self.gru.project(g, g_rnll)
                rec.update(gru_dot=info.dot, gru_cos=info.cosine, gru_projected=info.projected, gru_coef=info.coef)
            if g_reg is not None:
                g.axpy(o.lambda_, g_reg)
            self.ue.set_grad(g)
        self.ue.step()
        sums = dist.all_reduce_sum(torch.tensor([f_sum, r_sum], dtype=torch.float64))
        loss_f = float(sums[0]) / max(f_count, 1.0)
        loss_r = float(sums[1]) / max(r_tokens, 1.0) if self.reg is not None else None
        for name, v in (("loss_forget", loss_f), ("loss_retain", loss_r)):
            if v is not None and not math.isfinite(v):
                raise DivergedError(f"{name} is {v} at step {step + 1}")
        dt = time.perf_counter() - t0
        n_tok = f_tokens + (r_tokens if rb else 0)
        rec.update(step=step + 1, loss_forget=loss_f, lr=self.ue.lr(), tokens_per_s=n_tok / dt, step_seconds=dt)
        if loss_r is not None:
            rec["loss_retain"] = loss_r
        rec.update({f"obj_{k}": v for k, v in f_metrics.items()})
        return rec

    def _geffect(self, step: int) -> bool:
        every = self.cfg.geometry.geffect_every
        return every > 0 and step % every == 0


def _save_final_delta(run: UnlearnRun, out) -> None:
    """`<out>/delta/rank{r}.safetensors` for UIPE, staged and renamed into place."""
    tmp, final = RunDir(out).delta_staging, RunDir(out).delta
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    save_delta_shard(run.ue.engine, run.ue.named, run.orig, tmp, run.original_hash)
    dist.barrier()
    write_manifest(tmp)  # checksums, verified by every reader (extrapolate, geffect)
    if dist.is_main():
        shutil.rmtree(final, ignore_errors=True)
        atomic_replace_dir(tmp, final)
    dist.barrier()


def evaluate_now(run: UnlearnRun, out, step: int, events: EventLog, final: bool) -> dict:
    """TOFU evaluation of the current weights on all ranks; logged; files written for the final one."""
    from dsunlearn.suites.tofu import metrics
    from dsunlearn.suites.tofu.evaluate import evaluate, write_eval

    cfg = run.cfg
    t0 = time.time()
    log = evaluate(run.ue.module, run.tokenizer, cfg.data, cfg.eval, zero3=run.ue.zero3)
    retain_log = run.retain_log  # read and checked before training (UnlearnRun.__init__)
    if final:
        summary = write_eval(out, log, retain_log)
    else:
        summary = metrics.aggregate(log, retain_log)
    keep = {k: v for k, v in summary.items() if k.islower()}  # snake_case keys (official names duplicate them)
    events.log("eval", step=step, final=final, eval_seconds=round(time.time() - t0, 2), **keep)
    if final:
        events.log_summary(keep)
    return keep


def run_unlearn(cfg: RunConfig, resume: bool = False) -> dict:
    dist.init_distributed()
    check_output_dir(cfg, "unlearn", resume=resume)
    # --resume: LATEST, checksums, pickle scan and every rank's state, before any model is loaded
    state = check_resume_state(Path(cfg.run.output_dir)) if resume else None
    check_tracking(cfg)  # wandb importable and online/offline decided (bounded probe) before the run dir
    t0 = time.time()
    run = UnlearnRun(cfg)  # data, tokenizer, model, engine: any bad input fails here, before anything is written
    # --resume: the checkpoint is read (through the safe loader) before the directory is touched
    start = load_checkpoint(run, Path(cfg.run.output_dir), state) if resume else 0
    out = prepare_output_dir(cfg, "unlearn", resume=resume)
    try:  # the run directory is locked from here until the run ends, however it ends
        return _run_locked(run, cfg, out, t0, resume, start)
    finally:
        release_output_dir(out)


def _run_locked(run: UnlearnRun, cfg: RunConfig, out, t0: float, resume: bool, start: int) -> dict:
    events = EventLog(RunDir(out).events, cfg, job="unlearn")
    events.log("resume" if resume else "start", objective=cfg.objective.name, gru=cfg.geometry.gru,
               steps=run.steps, from_step=start, world=run.world,
               zero_stage=run.ue.engine.zero_optimization_stage())  # fmt: skip
    bar = tqdm(range(start, run.steps), desc=f"unlearn {cfg.objective.name}", disable=not dist.is_main(),
               dynamic_ncols=True, initial=start, total=run.steps)  # fmt: skip
    last: dict = {}
    try:
        _loop(run, cfg, out, events, bar, last)
        return _finish(run, cfg, out, events, t0, last)
    except DivergedError as e:
        from dsunlearn.engine.checkpoint import latest_tag

        tag = latest_tag(out)
        kept = (
            f"the last good checkpoint is {out}/checkpoints/{tag} (dsunlearn extrapolate --checkpoint {tag} reads it)"
            if tag
            else "no checkpoint was saved (set run.save_every to keep some)"
        )
        raise RunError(
            f"{e}: training diverged and stopped; {kept}; rerun with a lower engine.lr (or check the data) "
            "in a new run.output_dir or with --overwrite"
        ) from None
    finally:
        events.close()


def _loop(run: UnlearnRun, cfg: RunConfig, out, events: EventLog, bar, last: dict) -> None:
    for step in bar:
        _maybe_fault("step", step)
        rec = run.step(step)
        last.clear()  # a step's record replaces the last one (G-effect keys exist only on some steps)
        last.update(rec)
        if step % cfg.tracking.log_every == 0 or step == run.steps - 1:
            events.log("unlearn_step", **last)
        bar.set_postfix(loss_f=f"{last['loss_forget']:.3f}")
        if cfg.eval.every_steps and (step + 1) % cfg.eval.every_steps == 0 and step + 1 < run.steps:
            evaluate_now(run, out, step + 1, events, final=False)
        every = cfg.run.save_every
        if every and (step + 1) % every == 0 and step + 1 < run.steps:
            save_checkpoint(run, out, step + 1)
            events.log("checkpoint", step=step + 1)


def _finish(run: UnlearnRun, cfg: RunConfig, out, events: EventLog, t0: float, last: dict) -> dict:
    """Save the model and the final deltas, evaluate, close the log; the run's summary."""
    # A model/ already here is this run's own (the directory is locked and its marker is ours): a --resume after
    # a crash past this point. Replace it: the weights now in the engine are the ones this run ends with.
    if dist.is_main() and RunDir(out).model.is_dir():
        shutil.rmtree(RunDir(out).model)
    dist.barrier()
    save_hf_model(run.ue.module, RunDir(out).model, tokenizer=run.tokenizer, zero3=run.ue.zero3)
    _save_final_delta(run, out)
    summary = evaluate_now(run, out, run.steps, events, final=True) if cfg.eval.at_end else {}
    if cfg.tracking.log_model:
        events.log_model(RunDir(out).model, f"unlearned-{cfg.objective.name}")
    wall = round(time.time() - t0, 1)
    events.log("done", steps=run.steps, wall_seconds=wall)
    return {"output_dir": str(out), "steps": run.steps, "wall_seconds": wall, "last": last, "eval": summary}
