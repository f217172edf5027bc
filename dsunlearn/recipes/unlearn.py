"""`dsunlearn unlearn`: one readable unlearning loop on a ZeRO-sharded DeepSpeed engine.

Per optimizer step, with a forget and a retain global batch (the same samples whatever the world size), the
step's `StepPlan` (`step_plan.py`) says which gradients it needs and takes one of two ways:
- combined (no geometry this step): gamma L_f (+ lambda L_reg) back-propagated into the same buffers, one
  reduction (`UnlearnRun._backward_combined`).
- sharded (GRU and/or G-effect this step): gradients of the needed losses are read one by one as this rank's
  shard (`ShardedGrad` copies, the last one left in DeepSpeed's buffers: `LiveGrad`); the G-effect reduces one
  [groups, 3, 3] Gram tensor, GRU one Gram matrix of at most 4 x 4; the combined gradient
  g = GRU(gamma grad L_f) + lambda grad L_reg (or GRU(gamma grad L_f + lambda grad L_reg), per
  `geometry.gru_project`) is written into the last gradient's buffer and the optimizer steps
  (`UnlearnRun._backward_sharded`). No rank ever holds the full gradient.
Logs every step to events.jsonl; saves the unlearned model (consolidated safetensors) at the end.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dsunlearn import dist
from dsunlearn.config import RunConfig
from dsunlearn.config_bounds import check_generation_fits
from dsunlearn.data.collate import pad_id_of
from dsunlearn.data.sampler import BatchStream
from dsunlearn.engine.adapter_save import save_adapter, save_merged_model
from dsunlearn.engine.checkpoint import RunState, _maybe_fault, check_resume_state, load_checkpoint, save_checkpoint
from dsunlearn.engine.delta import save_delta_shard, snapshot_fragments
from dsunlearn.engine.ds_setup import build_ds_config, resolve_batch
from dsunlearn.engine.hf_save import save_hf_model
from dsunlearn.engine.reference import ReferenceModel
from dsunlearn.engine.shard import combine_into
from dsunlearn.engine.trainable import layer_selector
from dsunlearn.engine.unlearn_engine import LossFn, MicroBatch, UnlearnEngine
from dsunlearn.errors import ConfigError, DivergedError, RunError
from dsunlearn.fsutil import atomic_replace_dir
from dsunlearn.geometry.geffect import g_effect
from dsunlearn.geometry.gru import GRU
from dsunlearn.manifest import write_manifest
from dsunlearn.models.adapters import AdapterOffReference, uses_adapter
from dsunlearn.models.load import (
    check_before_remote_code,
    load_tokenizer,
    local_model_dir,
    model_positions,
)
from dsunlearn.objectives import FORGET, ObjectiveSpec, RegularizerSpec, get_objective, get_regularizer
from dsunlearn.recipes.forget_inputs import ForgetEncodings, refusals_for
from dsunlearn.recipes.step_plan import FORGET_RISK, OBJECTIVE, REGULARIZER, RETAIN_KL, RETAIN_NLL, StepPlan
from dsunlearn.run_layout import RunDir
from dsunlearn.rundir import check_output_dir, prepare_output_dir, release_output_dir
from dsunlearn.suites import get_suite
from dsunlearn.suites.base import TrainingSet
from dsunlearn.tracking import EventLog, check_tracking
from dsunlearn.uipe.delta_format import model_hash
from dsunlearn.unlearn_losses import (
    HiddenSource,
    global_count,
    mean_parts,
    nll_loss,
    objective_loss,
    reduce_stats,
    regularizer_loss,
)


def forget_objective(cfg: RunConfig) -> tuple[ObjectiveSpec, dict]:
    """(spec, resolved hyper-parameters) of the run's forget objective L_f."""
    o = cfg.objective
    spec = get_objective(o.name)
    return spec, spec.resolve(o.params)


def retain_regularizer(cfg: RunConfig):
    """(spec, params) of the retain term, or (None, {}) when the run has none."""
    o = cfg.objective
    name = get_objective(o.name).retain_loss if o.retain_loss == "auto" else o.retain_loss
    if name in (None, "none"):
        return None, {}
    spec = get_regularizer(name)
    return spec, spec.resolve({"positions": o.kl_positions} if spec.inputs == "logits" else {})


@dataclass(frozen=True)
class UnlearnResult:
    """What one unlearning run did: where it wrote, how long, its last step record and its final evaluation."""

    output_dir: str
    steps: int  # optimizer steps of the whole run (resumed ones included)
    wall_seconds: float  # this process's run, set-up included
    last: dict  # the last step's events.jsonl record ({} when a resume had no step left)
    eval: dict  # the suite's summary of the final model ({} without eval.at_end)


@dataclass
class StepBatch:
    """One optimizer step's micro-batches on this rank, and the global counts its losses are means over."""

    objective: list[MicroBatch]  # what the objective reads (`ForgetEncodings.objective_batch`)
    forget: list[MicroBatch]  # the forget answers, for the G-effect's risk: `objective` when it reads them
    retain: list[MicroBatch]  # [] when the step needs no retain batch
    forget_units: float  # the objective's unit (token or sequence) in the global forget batch
    forget_tokens: float  # answer tokens of the global forget batch (the forget risk's mean)
    retain_tokens: float  # answer tokens of the global retain batch
    retain_sequences: float  # sequences with an answer token in it (a sequence-unit retain term's mean)


@dataclass
class LossSums:
    """This rank's shares of one step's losses (`unlearn_losses.mean_parts`; summed over ranks: the means the step
    minimised, without gamma / lambda, which only scale what is back-propagated)."""

    forget: float
    retain: float  # 0.0 without a retain term
    forget_metrics: dict  # the objective's metrics, mean over this rank's micro-batches


class UnlearnRun:
    """The state of one run: data, streams, engine, reference, GRU. `step(i)` does optimizer step i.

    `state` (engine, GRU, theta_o's fragments and hash) is what a checkpoint saves and loads."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.world, self.rank = dist.world_size(), dist.rank()
        self.spec, self.params = forget_objective(cfg)
        self.regularizer, self.regularizer_params = retain_regularizer(cfg)
        self.suite = get_suite(cfg.data.suite)
        # What needs neither tokenizer nor model is read first: a bad DeepSpeed JSON or data file fails in a
        # second, before transformers is imported.
        forget_set, retain_set = self._read_data()
        refusals = refusals_for(self.spec, forget_set, cfg.data)  # idk_nll / dpo: the refusal answers
        self.tokenizer = self._read_tokenizer()
        self.pad = pad_id_of(self.tokenizer)
        self.forget_inputs = ForgetEncodings.encode(forget_set, self.tokenizer, cfg.data, refusals, cfg.run.seed)
        self.forget = self.forget_inputs.answers
        self.retain = retain_set.encode(self.tokenizer, cfg.data)
        self._build_streams()
        self.steps = cfg.engine.max_steps or self.forget_stream.steps_for_epochs(cfg.engine.epochs)
        # A hidden-state objective (RMU) reads one layer's output and trains only its parameter subset.
        layers = self.spec.trainable_layers(self.params)
        if layers is not None and uses_adapter(cfg.model.adapter):
            raise ConfigError(
                f"objective {cfg.objective.name} trains a subset of the model's own weights "
                "(objective.train_layers / train_params) and model.adapter trains adapters instead: use one, "
                "e.g. model.adapter.type=none"
            )
        self.hidden_layer = int(self.params["layer"]) if layers is not None else None
        trainable = layer_selector(*layers) if layers is not None else None
        engine = UnlearnEngine(cfg, cfg.model.name_or_path, self.tokenizer, self.steps, trainable=trainable,
                               hidden_layer=self.hidden_layer)  # fmt: skip
        # theta_o's forget log-probs: the policy before step 0 is the reference (no second model needed).
        self.forget_inputs.precompute_reference(self.spec, engine.module, cfg.eval.batch_size, self.pad)
        self.ref_model = self._reference_model(engine)
        self.hidden = None
        if engine.hidden is not None:  # u's seed: run.seed itself (a CPU generator of its own, any rank)
            ref_hidden = self.ref_model.hidden if self.ref_model is not None else None
            self.hidden = HiddenSource(engine.hidden.take, ref_hidden, cfg.run.seed)
        g = cfg.geometry
        gru = GRU(g.gru_ema, g.gru_cos_clip, combined=g.gru_project == "combined") if g.gru else None
        if cfg.eval.at_end or cfg.eval.every_steps:
            self._check_eval_splits()
        # UIPE: this rank's fp32 fragments of theta_o, and which model they came from.
        self.state = RunState(
            engine=engine,
            gru=gru,
            original_fragments=snapshot_fragments(engine.deepspeed, engine.named),
            original_hash=dist.broadcast_object(
                model_hash(local_model_dir(cfg.model.name_or_path)) if dist.is_main() else None
            ),
        )

    def _read_data(self) -> tuple[TrainingSet, TrainingSet]:
        """The DeepSpeed JSON checked and the forget and retain sets read: a bad JSON or data file fails in a
        second, before the tokenizer and the model."""
        cfg, d = self.cfg, self.cfg.data
        build_ds_config(cfg.engine, self.world)  # also checks the batch arithmetic (resolve_batch)
        forget_set, retain_set = (self.suite.training_set(d, role) for role in ("forget", "retain"))
        return forget_set, retain_set

    def _build_streams(self) -> None:
        """The batch streams over the encoded sequences (QA items, or documents' windows): the same global
        batches for any world size (`forget_stream`, `retain_stream`, `accum`)."""
        cfg, d = self.cfg, self.cfg.data
        micro, self.accum, gb = resolve_batch(cfg.engine, self.world)
        self.forget_stream = BatchStream(len(self.forget), gb, micro, self.world, seed=cfg.run.seed,
                                         what=f"the forget split '{d.forget_split}'")  # fmt: skip
        self.retain_stream = BatchStream(len(self.retain), gb, micro, self.world, seed=cfg.run.seed + 1,
                                         what=f"the retain split '{d.retain_split}'")  # fmt: skip

    def _read_tokenizer(self):
        """The model's tokenizer (remote code refused unless asked); with evaluation on, the generation length
        checked against the model's positions and the retain log read (`retain_log`), all before the model."""
        cfg, name = self.cfg, self.cfg.model.name_or_path
        check_before_remote_code(name, cfg.model.trust_remote_code)
        tokenizer = load_tokenizer(cfg.model.tokenizer or name, cfg.model.trust_remote_code)
        evaluates = cfg.eval.at_end or cfg.eval.every_steps
        # the model path is valid now: its config.json bounds generation
        if evaluates and self.suite.USES_GENERATION_CAPS:
            check_generation_fits(cfg.eval, model_positions(local_model_dir(name)), f"model.name_or_path '{name}'")
        retain_log = cfg.eval.retain_log if evaluates else None
        self.retain_log = self.suite.check_retain_log(retain_log, cfg) if retain_log else None
        return tokenizer

    @property
    def engine(self) -> UnlearnEngine:
        return self.state.engine

    @property
    def gru(self) -> GRU | None:
        return self.state.gru

    def _reference_model(self, engine: UnlearnEngine) -> ReferenceModel | AdapterOffReference | None:
        """A frozen theta_o for on-the-fly logits, when the retain term (KL), the objective (UNDIAL) or GRU's EMA
        (gru_ema_from kl) needs one (one model serves them all)."""
        g = self.cfg.geometry
        retain_needs = self.regularizer is not None and self.regularizer.needs_reference
        if not (retain_needs or self.spec.needs_reference_logits or (g.gru and g.gru_ema_from == "kl")):
            return None
        if uses_adapter(self.cfg.model.adapter):  # adapters (issue 17): the base is the policy, adapter off
            return AdapterOffReference(engine.module)
        return ReferenceModel.load(self.cfg.model.name_or_path, self.cfg.model, engine.ds_config, engine.zero3,
                                   self.hidden_layer)  # fmt: skip

    def _check_eval_splits(self) -> None:
        """Load and encode the suite's eval sets now: a missing split or an over-long item must fail before
        training, not after it."""
        positions = model_positions(local_model_dir(self.cfg.model.name_or_path))
        self.suite.check_eval_inputs(self.tokenizer, self.cfg.data, self.cfg.eval, positions)

    def _micro(self, build, stream: BatchStream, step: int) -> list[MicroBatch]:
        """This rank's `accum` micro-batches of step `step` from `stream`, `build(item indices)` each."""
        return [build(stream.micro_indices(step, k, self.rank)) for k in range(self.accum)]

    def step_batch(self, step: int, plan: StepPlan) -> StepBatch:
        """The micro-batches and global counts of step `step` (the retain batch only if the plan needs it; the
        forget answers apart from the objective's batch only for the G-effect's risk)."""
        forget_idx, retain_idx = self.forget_stream.global_indices(step), self.retain_stream.global_indices(step)
        f, pad, dev = self.forget_inputs, self.pad, self.engine.device
        objective = self._micro(lambda idx: f.objective_batch(self.spec, idx, pad, dev), self.forget_stream, step)
        if self.spec.answers == FORGET:
            forget = objective
        elif plan.geffect:  # idk_nll / dpo read other answers; the G-effect's risk reads the forget answers
            forget = self._micro(lambda idx: f.answer_batch(idx, pad, dev), self.forget_stream, step)
        else:
            forget = []
        retain = []
        if plan.needs_retain_batches:
            retain = self._micro(lambda idx: MicroBatch.build(self.retain, idx, pad, dev), self.retain_stream, step)
        return StepBatch(
            objective=objective,
            forget=forget,
            retain=retain,
            forget_units=f.units(self.spec, forget_idx),
            forget_tokens=global_count(self.forget, forget_idx, "token"),
            retain_tokens=global_count(self.retain, retain_idx, "token"),
            retain_sequences=global_count(self.retain, retain_idx, "sequence"),
        )

    def step(self, step: int) -> dict:
        """Optimizer step `step` (0-based): back-propagate what the step's plan says, step the optimizer, check
        the losses are finite; returns the step's record for events.jsonl."""
        t0 = time.perf_counter()
        plan = StepPlan.for_step(step, self.cfg, self.spec, self.regularizer)
        batch = self.step_batch(step, plan)
        coef_forget, coef_retain = plan.loss_coefs
        objective = objective_loss(
            self.spec,
            self.params,
            coef_forget,
            batch.forget_units,
            self._ref_logits,
            self.accum * self.world,
            self.hidden,
            self.cfg.objective.loss_mean,
        )
        regularizer = None
        if self.regularizer:
            regularizer = self._retain_loss(self.regularizer, self.regularizer_params, coef_retain, batch)
        rec: dict = {}
        if plan.sharded:
            sums = self._backward_sharded(plan, batch, objective, regularizer, rec)
        else:
            sums = self._backward_combined(batch, objective, regularizer)
        self.engine.step()
        totals = dist.all_reduce_sum(torch.tensor([sums.forget, sums.retain], dtype=torch.float64))
        loss_f = float(totals[0])
        loss_r = float(totals[1]) if self.regularizer is not None else None
        for name, v in (("loss_forget", loss_f), ("loss_retain", loss_r)):
            if v is not None and not math.isfinite(v):
                raise DivergedError(f"{name} is {v} at step {step + 1}")
        dt = time.perf_counter() - t0
        n_tok = batch.forget_tokens + (batch.retain_tokens if batch.retain else 0)
        rec.update(step=step + 1, loss_forget=loss_f, lr=self.engine.lr(), tokens_per_s=n_tok / dt, step_seconds=dt)
        if loss_r is not None:
            rec["loss_retain"] = loss_r
        rec.update({f"obj_{k}": v for k, v in sums.forget_metrics.items()})
        return rec

    def _retain_loss(self, spec: RegularizerSpec, params: dict, coef: float, batch: StepBatch) -> LossFn:
        """coef x a retain-batch loss (the retain term, or the KL GRU's EMA reads) as a global-batch mean."""
        count = self._retain_units(spec, batch)
        n_micro, mean = self.accum * self.world, self.cfg.objective.loss_mean
        return regularizer_loss(spec, params, coef, count, self._ref_logits, n_micro, self.hidden, mean)

    @staticmethod
    def _retain_units(spec: RegularizerSpec, batch: StepBatch) -> float:
        """What a retain term is a global-batch mean over: answer tokens, or sequences (embed_diff)."""
        return batch.retain_sequences if spec.unit == "sequence" else batch.retain_tokens

    @property
    def _ref_logits(self):
        """theta_o's logits on a micro-batch (`ReferenceModel.logits`), or None when no loss needs them."""
        return self.ref_model.logits if self.ref_model is not None else None

    def _backward_combined(self, batch: StepBatch, objective: LossFn, regularizer: LossFn | None) -> LossSums:
        """gamma L_f (+ lambda L_reg) into the same gradient buffers: one reduction, nothing read."""
        parts = [(batch.objective, objective)] + ([(batch.retain, regularizer)] if regularizer is not None else [])
        stats = self.engine.accumulate(parts)
        # The stats are unscaled (gamma / lambda only scale what is back-propagated).
        retain = mean_parts(stats[1]) if regularizer is not None else 0.0
        return LossSums(mean_parts(stats[0]), retain, reduce_stats(stats[0])[1])

    def _backward_sharded(
        self, plan: StepPlan, batch: StepBatch, objective: LossFn, regularizer: LossFn | None, rec: dict
    ) -> LossSums:
        """Each needed gradient read as this rank's shard (unscaled); the G-effect and GRU act on the shards,
        and g = GRU(gamma grad L_f) + lambda grad L_reg (gru_project forget) or GRU(gamma grad L_f + lambda grad
        L_reg) (combined) is written back for the optimizer. Adds the G-effect's and GRU's values to `rec`."""
        backwards = self._sharded_backwards(plan, batch, objective, regularizer)
        grads, sums = {}, {}
        for i, (name, batches, loss_fn) in enumerate(backwards):
            # Every gradient but the last is copied out (the next backward reuses the buffers); the last is read
            # and written in place where DeepSpeed allows it (`LiveGrad`).
            last = i == len(backwards) - 1
            grads[name], stats = (self.engine.live_grad_of if last else self.engine.grad_of)(batches, loss_fn)
            sums[name] = stats
        forget_sum, forget_metrics = mean_parts(sums[OBJECTIVE]), reduce_stats(sums[OBJECTIVE])[1]
        retain_sum = mean_parts(sums[REGULARIZER]) if regularizer is not None else 0.0
        grad_objective, grad_regularizer = grads[OBJECTIVE], grads.get(REGULARIZER)
        grad_retain_nll = grad_regularizer if plan.retain_nll_is_regularizer else grads.get(RETAIN_NLL)
        grad_ema = grad_regularizer if plan.ema_is_regularizer else grads.get(RETAIN_KL)
        if plan.gru and plan.gru_ema_from == "nll":
            grad_ema = grad_retain_nll
        if plan.geffect:  # grad R(D_f) = -grad L_u (risk_is_negative_loss): None, read from grad L_u
            rec.update(g_effect(grad_objective, grads.get(FORGET_RISK), grad_retain_nll).as_dict())
        live = grads[backwards[-1][0]]
        if plan.gru:  # g = GRU(gamma grad L_u) + lambda grad L_reg (or GRU of both), written into `live`
            info = self.gru.update(grad_objective, grad_regularizer, grad_ema, plan.lambda_, plan.gamma, out=live)
            rec.update(gru_dot=info.dot, gru_cos=info.cosine, gru_projected=info.projected, gru_coef=info.coef)
            if self.gru.cos_clip is not None:
                rec["gru_clipped"] = info.clipped
        else:  # the G-effect alone: g = gamma grad L_u + lambda grad L_reg, written into `live`
            terms = [(plan.gamma, grad_objective)]
            if grad_regularizer is not None:
                terms.append((plan.lambda_, grad_regularizer))
            combine_into(live, terms)
        self.engine.set_grad(live)  # a write-back only where `live` is a copy
        return LossSums(forget_sum, retain_sum, forget_metrics)

    def _sharded_backwards(
        self, plan: StepPlan, batch: StepBatch, objective: LossFn, regularizer: LossFn | None
    ) -> list[tuple[str, list[MicroBatch], LossFn]]:
        """The step's backwards on the sharded path, in order: (name, micro-batches, loss). Each gradient is
        computed once and reused wherever it serves (L_reg as GRU's EMA input or the G-effect's retain risk;
        -grad L_u as the forget risk)."""
        out = [(OBJECTIVE, batch.objective, objective)]  # grad L_u (no gamma)
        if regularizer is not None:
            out.append((REGULARIZER, batch.retain, regularizer))
        if plan.needs_retain_nll and not plan.retain_nll_is_regularizer:
            out.append((RETAIN_NLL, batch.retain, self._nll(batch.retain_tokens)))
        if plan.needs_retain_kl and not plan.ema_is_regularizer:  # the KL with objective.kl_positions
            kl = get_regularizer("kl")
            kl_params = kl.resolve({"positions": self.cfg.objective.kl_positions})
            out.append((RETAIN_KL, batch.retain, self._retain_loss(kl, kl_params, 1.0, batch)))
        if plan.geffect and not plan.risk_is_negative_loss:
            out.append((FORGET_RISK, batch.forget, self._nll(batch.forget_tokens)))
        return out

    def _nll(self, count: float) -> LossFn:
        """The answer-token NLL (GRU's retain gradient, the G-effect's risks) under the run's loss_mean."""
        return nll_loss(1.0, count, self.accum * self.world, self.cfg.objective.loss_mean)


def _save_model(run: UnlearnRun, out) -> None:
    """`<out>/model` (consolidated safetensors + tokenizer); for an adapter run (issue 17) `<out>/adapter` in
    peft's format and, with model.adapter.save_merged, the merged model as `<out>/model`."""
    module, layout = run.engine.module, RunDir(out)
    if not uses_adapter(run.cfg.model.adapter):
        save_hf_model(module, layout.model, tokenizer=run.tokenizer)
        return
    if dist.is_main() and layout.adapter.is_dir():  # a --resume after a crash past this point: ours, replaced
        shutil.rmtree(layout.adapter)
    dist.barrier()
    save_adapter(module, layout.adapter)
    if run.cfg.model.adapter.save_merged:
        save_merged_model(module, layout.model, tokenizer=run.tokenizer)


def _save_final_delta(run: UnlearnRun, out) -> None:
    """`<out>/delta/rank{r}.safetensors` for UIPE, staged and renamed into place."""
    tmp, final = RunDir(out).delta_staging, RunDir(out).delta
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    save_delta_shard(run.engine.deepspeed, run.engine.named, run.state.original_fragments, tmp, run.state.original_hash)
    dist.barrier()
    write_manifest(tmp)  # checksums, verified by every reader (extrapolate, geffect)
    if dist.is_main():
        shutil.rmtree(final, ignore_errors=True)
        atomic_replace_dir(tmp, final)
    dist.barrier()


def evaluate_now(run: UnlearnRun, out, step: int, events: EventLog, final: bool) -> dict:
    """The suite's evaluation of the current weights on all ranks; logged; files written for the final one."""
    cfg, suite = run.cfg, run.suite
    t0 = time.time()
    log = suite.evaluate(run.engine.module, run.tokenizer, cfg.data, cfg.eval)
    retain_log = run.retain_log  # read and checked before training (UnlearnRun.__init__)
    if final:
        summary = suite.write_eval(out, log, retain_log)
    else:
        summary = suite.summarize(log, retain_log)
    keep = {k: v for k, v in summary.items() if k.islower()}  # snake_case keys (official names duplicate them)
    events.log("eval", step=step, final=final, eval_seconds=round(time.time() - t0, 2), **keep)
    if final:
        events.log_summary(keep)
    return keep


def run_unlearn(cfg: RunConfig, resume: bool = False) -> UnlearnResult:
    dist.init_distributed()
    check_output_dir(cfg, "unlearn", resume=resume)
    # --resume: LATEST, checksums, pickle scan and every rank's state, before any model is loaded
    checked = check_resume_state(Path(cfg.run.output_dir)) if resume else None
    check_tracking(cfg)  # wandb importable and online/offline decided (bounded probe) before the run dir
    t0 = time.time()
    run = UnlearnRun(cfg)  # data, tokenizer, model, engine: any bad input fails here, before anything is written
    # --resume: the checkpoint is read (through the safe loader) before the directory is touched
    start = load_checkpoint(run.state, Path(cfg.run.output_dir), checked) if resume else 0
    out = prepare_output_dir(cfg, "unlearn", resume=resume)
    try:  # the run directory is locked from here until the run ends, however it ends
        return _run_locked(run, cfg, out, t0, resume, start)
    finally:
        release_output_dir(out)


def _run_locked(run: UnlearnRun, cfg: RunConfig, out, t0: float, resume: bool, start: int) -> UnlearnResult:
    events = EventLog(RunDir(out).events, cfg, job="unlearn")
    events.log("resume" if resume else "start", objective=cfg.objective.name, gru=cfg.geometry.gru,
               steps=run.steps, from_step=start, world=run.world,
               zero_stage=run.engine.deepspeed.zero_optimization_stage())  # fmt: skip
    bar = tqdm(range(start, run.steps), desc=f"unlearn {cfg.objective.name}", disable=not dist.is_main(),
               dynamic_ncols=True, initial=start, total=run.steps)  # fmt: skip
    last: dict = {}
    try:
        _loop(run, cfg, out, events, bar, last)
        return _finish(run, cfg, out, events, t0, last)
    except DivergedError as e:
        tag = RunDir(out).latest_tag()
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
            save_checkpoint(run.state, out, step + 1)
            events.log("checkpoint", step=step + 1)


def _finish(run: UnlearnRun, cfg: RunConfig, out, events: EventLog, t0: float, last: dict) -> UnlearnResult:
    """Save the model and the final deltas, evaluate, close the log; the run's summary."""
    # A model/ already here is this run's own (the directory is locked and its marker is ours): a --resume after
    # a crash past this point. Replace it: the weights now in the engine are the ones this run ends with.
    if dist.is_main() and RunDir(out).model.is_dir():
        shutil.rmtree(RunDir(out).model)
    dist.barrier()
    _save_model(run, out)
    _save_final_delta(run, out)
    summary = evaluate_now(run, out, run.steps, events, final=True) if cfg.eval.at_end else {}
    if cfg.tracking.log_model:
        events.log_model(RunDir(out).model, f"unlearned-{cfg.objective.name}")
    wall = round(time.time() - t0, 1)
    events.log("done", steps=run.steps, wall_seconds=wall)
    return UnlearnResult(str(out), run.steps, wall, last, summary)
