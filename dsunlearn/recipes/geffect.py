"""Offline G-effect of a finished unlearning run: one value per saved checkpoint on a FIXED probe set.

As the paper's code does offline (Wang et al., ICLR 2025, arXiv 2502.19301), at every saved weight state
theta_t (step 0 = the original model, each `checkpoints/stepNNNNNN/delta`, the final `delta/`) and on the same
probe set (the first N items of the run's forget split and of its retain split, averaged as ONE global batch):

    e_u = < grad R(D_f), grad L_u(D_f) >,    e_r = < grad R(D_r), grad L_u(D_f) >

R = mean answer-token NLL, L_u = the run's forget objective with its hyper-parameters (no gamma, no retain term,
no GRU: the same L_u as the online G-effect of `unlearn.py`); the reference log-probs of npo/tnpo/wtnpo/dpo and
the reference logits of undial come from the ORIGINAL model; idk_nll / dpo read each probe item's refusal answer,
the one the run gave it (R stays the NLL of the forget answers). Totals, per layer group, cosines, and optionally
per instance for the first K forget probe items: e_i = < grad R(s_i), grad L_u(s_i) > (one sample = the whole
batch).

`ema` (the G-effect code's way, `--ema C`): instead of one mean over the probe, the probe is cut into chunks of
the run's micro batch (`engine.micro_batch_size` items, probe order; forget chunk k paired with retain chunk k),
each chunk's three gradients (means over that chunk) go into exponential moving averages,
G_1 = g_1, G_k = (1 - C) G_{k-1} + C g_k (the authors' code: C = 0.4, ".6 * old + .4 * new"), and e_u, e_r are
the inner products of the averaged gradients (the losses are averaged alike). The chunks are global (each one's
gradient is reduced over ranks), so 1 and N processes agree here too.

Distribution: the weights of a checkpoint are rebuilt by `extrapolate(alpha=0)` (bit for bit) on rank 0 into a
temporary dir, then every rank loads an `UnlearnEngine` (the run's ZeRO config; its optimizer is never
stepped) and `grad_of` runs the probe's fixed micro-batches dealt round-robin to ranks. The chunks do not
depend on the world size, so 1 and N processes agree to float-summation order. Ranks without a chunk in a
round back-propagate a real micro-batch's loss times 0 (collectives stay in lockstep, gradient exactly 0).
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from dsunlearn import dist
from dsunlearn.data.collate import Encoded, pad_id_of
from dsunlearn.data.sharding import round_robin_rounds
from dsunlearn.engine.reference import ReferenceModel
from dsunlearn.engine.shard import ShardedGrad
from dsunlearn.engine.trainable import layer_selector
from dsunlearn.engine.unlearn_engine import LossFn, MicroBatch, UnlearnEngine
from dsunlearn.errors import RunError
from dsunlearn.fsutil import atomic_write_json
from dsunlearn.geometry.geffect import g_effect
from dsunlearn.objectives import FORGET
from dsunlearn.recipes.forget_inputs import ForgetEncodings, refusals_for
from dsunlearn.run_layout import RunDir, tag_of
from dsunlearn.suites import get_suite
from dsunlearn.tracking import read_events
from dsunlearn.unlearn_losses import HiddenSource, global_count, nll_loss, objective_loss


def default_output(run_dir) -> Path:
    """Where the offline G-effect goes unless --output says: `<run>/geffect/geffect.json` (PNG beside)."""
    return RunDir(run_dir).geffect / "geffect.json"


def find_states(run_dir: Path) -> list[tuple[int, Path | None]]:
    """[(step, delta dir)] in step order: (0, None) = the original model, then every complete checkpoint's
    delta and the final `delta/` (its step from events.jsonl). RunError if the run saved none."""
    RunDir(run_dir).require_config()
    states: dict[int, Path] = {}
    for tag in RunDir(run_dir).saved_tags():  # this run's own tags, directories inside checkpoints/ (no links)
        delta = RunDir(run_dir).checkpoint_delta(tag)
        if delta.is_dir() and not delta.is_symlink():
            states[int(tag[4:])] = delta
    if RunDir(run_dir).delta.is_dir() and not RunDir(run_dir).delta.is_symlink():
        states[_final_step(run_dir, max(states, default=0))] = RunDir(run_dir).delta
    if not states:
        raise RunError(
            f"'{run_dir}' has no saved weights to analyse (no checkpoints/step*/delta, no delta/); "
            "run `dsunlearn unlearn` to the end, or with run.save_every=N"
        )
    return [(0, None)] + sorted(states.items())


def _final_step(run_dir: Path, after: int) -> int:
    """Steps of the run that wrote `delta/`: the last start/resume/done event's `steps` (an int in
    (after, 10**9], `after` = the newest checkpoint's step). events.jsonl is untrusted text (`read_events`
    skips unreadable lines), and a missing or impossible count is a one-line RunError."""
    steps = None
    events = RunDir(run_dir).events
    try:
        records = read_events(events) if events.is_file() else []
    except OSError:
        records = []
    for ev in records:
        if ev.get("event") in ("start", "resume", "done"):
            if isinstance(ev.get("steps"), int) and not isinstance(ev["steps"], bool):
                steps = ev["steps"]
    if steps is None:
        raise RunError(f"'{run_dir}/events.jsonl' does not say how many steps the run made (no start/done event)")
    if not after < steps <= 10**9:
        raise RunError(
            f"'{run_dir}/events.jsonl' says the run made {steps} steps, which cannot be: its newest checkpoint is at "
            f"step {after}; the file was damaged or edited: restore it or analyse the checkpoints only"
        )
    return steps


def probe_set(cfg, tokenizer, n: int, spec) -> tuple[ForgetEncodings, list[Encoded]]:
    """The first n items of the run's forget split (with the refusal answers the run gave them, if `spec` reads
    those) and of its retain split, encoded as the run encoded them."""
    d = cfg.data
    forget_set, retain_set = (get_suite(d.suite).training_set(d, role) for role in ("forget", "retain"))
    refusals = refusals_for(spec, forget_set, d)
    forget = ForgetEncodings.encode(forget_set, tokenizer, d, refusals, cfg.run.seed).head(n)
    return forget, retain_set.encode(tokenizer, d)[:n]


def _micro_batches(build, idx: list[int], micro: int) -> list[MicroBatch]:
    """This rank's micro-batches over items `idx`, `build(item indices)` each: fixed chunks of `micro` dealt
    round-robin (world-size independent). A round without a chunk gets a stand-in (the first chunk) whose loss
    is multiplied by 0."""
    out = []
    for rows in round_robin_rounds(len(idx), micro, dist.rank(), dist.world_size()):
        mb = build([idx[j] for j in (rows if rows is not None else range(min(micro, len(idx))))])
        out.append(mb if rows is not None else replace(mb, indices=[]))  # no indices = a stand-in (_only_real)
    return out


def _chunks(idx: list[int], size: int) -> list[list[int]]:
    """`idx` cut into consecutive chunks of `size` (the last may be shorter)."""
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def _only_real(fn: LossFn) -> LossFn:
    def wrapped(mb: MicroBatch, logits: torch.Tensor):
        loss, st = fn(mb, logits)
        if not mb.indices:
            return loss * 0.0, {"loss_sum": 0.0, "metrics": {}, "mean_part": 0.0}
        return loss, st

    return wrapped


class _Probe:
    """Losses and micro-batches of one probe (sub)set: the forget items `f_idx` and retain items `r_idx`
    (`forget` a `ForgetEncodings`: the objective reads what its spec says, the forget risk the forget answers).
    `ref_logits`: the original model's logits (undial); `hidden`: the hooked layer (rmu)."""

    def __init__(
        self, spec, params, forget: ForgetEncodings, retain, f_idx, r_idx, micro, pad, device, ref_logits=None,
        hidden=None,
    ):  # fmt: skip
        self.spec, self.params, self.ref_logits, self.hidden = spec, params, ref_logits, hidden
        self.forget_units = forget.units(spec, f_idx)
        self.forget_tokens = global_count(forget.answers, f_idx, "token")
        self.retain_tokens = global_count(retain, r_idx, "token") if r_idx else 0.0
        self.objective_batches = _micro_batches(lambda i: forget.objective_batch(spec, i, pad, device), f_idx, micro)
        self.forget_batches = self.objective_batches  # what the risk reads: the forget answers
        if spec.answers != FORGET:  # idk_nll / dpo: the objective reads the refusals (too)
            self.forget_batches = _micro_batches(lambda i: forget.answer_batch(i, pad, device), f_idx, micro)
        self.retain_batches = []
        if r_idx:
            self.retain_batches = _micro_batches(lambda i: MicroBatch.build(retain, i, pad, device), r_idx, micro)
        self.forget_chunks = math.ceil(len(f_idx) / micro)  # real forget micro-batches over all ranks

    def grads(self, engine: UnlearnEngine) -> tuple[ShardedGrad, ShardedGrad, ShardedGrad | None, list[float]]:
        """(grad L_u(D_f), grad R(D_f), grad R(D_r) or None, [loss sums of the three on this rank])."""
        loss = objective_loss(
            self.spec, self.params, 1.0, self.forget_units, self.ref_logits, self.forget_chunks, self.hidden
        )
        objective = _only_real(loss)
        grad_objective, stats = engine.grad_of(self.objective_batches, objective)
        sums = [sum(s["loss_sum"] for s in stats)]
        if self.spec.risk_is_negative_loss:  # grad R(D_f) = -grad L_u(D_f): reuse, no second backward
            grad_forget_risk = grad_objective.clone().scale_(-1.0)
            sums.append(-sums[0])
        else:
            grad_forget_risk, stats = engine.grad_of(self.forget_batches, _only_real(nll_loss(1.0, self.forget_tokens)))
            sums.append(sum(s["loss_sum"] for s in stats))
        grad_retain_risk = None
        if self.retain_batches:
            retain_nll = _only_real(nll_loss(1.0, self.retain_tokens))
            grad_retain_risk, stats = engine.grad_of(self.retain_batches, retain_nll)
            sums.append(sum(s["loss_sum"] for s in stats))
        return grad_objective, grad_forget_risk, grad_retain_risk, sums


def _probe_means(engine: UnlearnEngine, probe: _Probe) -> tuple[list[ShardedGrad | None], list[float]]:
    """([grad L_u, grad R(D_f), grad R(D_r) or None] of `probe`, [L_u, R(D_f), R(D_r)] as its means)."""
    grad_objective, grad_forget_risk, grad_retain_risk, sums = probe.grads(engine)
    totals = dist.all_reduce_sum(torch.tensor(sums + [0.0] * (3 - len(sums)), dtype=torch.float64))
    units = (probe.forget_units, probe.forget_tokens, probe.retain_tokens)
    return [grad_objective, grad_forget_risk, grad_retain_risk], [
        float(t) / max(u, 1.0) for t, u in zip(totals, units, strict=True)
    ]


def _ema_means(engine: UnlearnEngine, chunks: list[_Probe], new: float):
    """`_probe_means` of each chunk in turn, folded into EMAs: G_1 = g_1, G_k = (1 - new) G_{k-1} + new g_k
    (gradients and losses alike: the G-effect code's ".6 * old + .4 * new" is new = 0.4)."""
    grads, losses = None, None
    for chunk in chunks:
        g, v = _probe_means(engine, chunk)
        if grads is None:
            grads, losses = g, v
            continue
        for acc, x in zip(grads, g, strict=True):
            if acc is not None and x is not None:
                acc.scale_(1.0 - new).axpy(new, x)
        losses = [(1.0 - new) * a + new * b for a, b in zip(losses, v, strict=True)]
        del g
    return grads, losses


def geffect_at(
    engine: UnlearnEngine, probe: _Probe | list[_Probe], singles: list[_Probe], ema: float | None = None
) -> tuple[dict, list[str]]:
    """(record of one weight state, in the online record's names (`GEffect.as_dict`) plus the risks' norms,
    the losses and the per-instance list; the layer-group names of the per-group lists). With `ema` (the new
    chunk's weight), `probe` is the list of chunk probes and the gradients are their EMAs (`_ema_means`)."""
    if ema is None:
        (grad_objective, grad_forget_risk, grad_retain_risk), losses = _probe_means(engine, probe)
    else:
        (grad_objective, grad_forget_risk, grad_retain_risk), losses = _ema_means(engine, probe, ema)
    ge = g_effect(grad_objective, grad_forget_risk, grad_retain_risk)
    rec = {
        **ge.as_dict(),
        "grad_norm_risk_forget": math.sqrt(float(ge.norms_sq[1])),
        "grad_norm_risk_retain": math.sqrt(float(ge.norms_sq[2])),
        "loss_objective": losses[0],
        "risk_forget": losses[1],
        "risk_retain": losses[2],
    }
    del grad_objective, grad_forget_risk, grad_retain_risk
    per = []
    for i, one in enumerate(singles):
        g_obj, g_risk, _, _ = one.grads(engine)  # of the one sample
        ip = ShardedGrad.inner_products([(g_risk, g_obj), (g_obj, g_obj), (g_risk, g_risk)]).sum(dim=1)
        den = float(ip[1] * ip[2]) ** 0.5
        per.append({"index": i, "geffect_u": float(ip[0]), "geffect_cos_u": float(ip[0]) / den if den > 0 else 0.0,
                    "grad_norm_objective": float(ip[1]) ** 0.5})  # fmt: skip
    rec["per_instance"] = per
    return rec, list(ge.groups)


def _on_main(fn, *args):
    """Run fn on rank 0; every rank raises the same RunError if it failed (no rank left waiting)."""
    err = None
    if dist.is_main():
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            err = str(e) if isinstance(e, RunError) else f"{type(e).__name__}: {e}"
    err = dist.broadcast_object(err)
    if err is not None:
        raise RunError(err)


GEFFECT_KIND = "dsunlearn-geffect"


def _is_geffect_output(path: Path) -> bool:
    """Whether `path` is a G-effect JSON this command wrote (then it, and its PNG, may be replaced)."""
    try:
        if path.stat().st_size > 1 << 26:
            return False
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(d, dict) and (d.get("kind") == GEFFECT_KIND or {"run", "original", "steps"} <= set(d))


def check_output_file(out: Path, run_dir: Path, orig_dir: Path, delta: Path) -> None:
    """`--output` (and the PNG beside it) replaces only an earlier G-effect output, never another file; not
    through a symlink inside the run; not inside an input."""
    from dsunlearn.path_guard import check_new_file, check_no_links, check_outputs, check_writable

    check_writable(out.parent, "--output")
    check_no_links(run_dir, out.parent, "--output")
    check_outputs({"--output": out}, {"--original": orig_dir, "the run's delta shards": delta})
    check_new_file(out, "--output", _is_geffect_output)
    ours = out.is_file() and _is_geffect_output(out)
    check_new_file(out.with_suffix(".png"), "--output's PNG", lambda _: ours)


def run_geffect(
    run_dir, probe_size: int = 32, per_instance: int = 0, output=None, original=None, ema: float | None = None
) -> dict:
    """Compute the offline G-effect of every saved state of `run_dir`; write the JSON (+ PNG) on rank 0.

    Collective under a launcher (every rank calls it). Returns the record written to `output`
    (default `<run>/geffect/geffect.json`). `ema`: the new chunk's weight in (0, 1] of the G-effect code's
    moving average over probe chunks (module docstring); None: one mean over the probe.
    """
    from dsunlearn.models.load import load_tokenizer, local_model_dir
    from dsunlearn.recipes.unlearn import forget_objective
    from dsunlearn.rundir import run_config
    from dsunlearn.uipe.delta_format import model_hash, read_delta_meta
    from dsunlearn.uipe.extrapolate import extrapolate

    run_dir = Path(run_dir)
    if probe_size < 1 or per_instance < 0:
        raise RunError(f"--probe-size must be >= 1 and --per-instance >= 0 (got {probe_size}, {per_instance})")
    if ema is not None and not (isinstance(ema, float) and 0.0 < ema <= 1.0):
        raise RunError(f"--ema {ema} is not a weight in (0, 1]: the new chunk's share (the G-effect code's: 0.4)")
    states = find_states(run_dir)
    dist.init_distributed()
    cfg = run_config(run_dir)
    orig_dir = Path(original) if original else local_model_dir(cfg.model.name_or_path)
    out = Path(output) if output else default_output(run_dir)
    check_output_file(out, run_dir, orig_dir, states[1][1])
    want = read_delta_meta(states[1][1])[0]["original_hash"]
    got = dist.broadcast_object(model_hash(orig_dir) if dist.is_main() else None)
    if got != want:
        raise RunError(f"original model '{orig_dir}' is not the one the run started from; pass it with --original")
    # Any world size: the probe is dealt in fixed chunks of the run's micro batch; no accumulation in DeepSpeed.
    cfg.engine.grad_accum_steps, cfg.engine.global_batch_size = 1, 0
    micro = cfg.engine.micro_batch_size
    spec, params = forget_objective(cfg)
    tokenizer = load_tokenizer(cfg.model.tokenizer or str(orig_dir), cfg.model.trust_remote_code)
    pad = pad_id_of(tokenizer)
    forget, retain = probe_set(cfg, tokenizer, probe_size, spec)
    if per_instance > len(forget):
        raise RunError(f"--per-instance {per_instance} exceeds the probe's {len(forget)} forget items")
    tmp_root = None
    if dist.is_main():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_root = tempfile.mkdtemp(prefix=".geffect-weights-", dir=out.parent)
    tmp_root = Path(dist.broadcast_object(tmp_root))
    torch.manual_seed(cfg.run.seed)
    ref_model, records, groups = None, [], None
    try:
        for step, delta in states:
            path = orig_dir
            if delta is not None:
                path = tmp_root / tag_of(step)
                _on_main(extrapolate, orig_dir, delta, 0.0, path)  # the tokenizer is loaded once, above
                dist.barrier()
            layers = spec.trainable_layers(params)  # rmu: the subset it trained, its hooked layer
            engine = UnlearnEngine(cfg, str(path), tokenizer, total_steps=1,
                                   trainable=layer_selector(*layers) if layers is not None else None,
                                   hidden_layer=int(params["layer"]) if layers is not None else None)  # fmt: skip
            hidden = HiddenSource(engine.hidden.take, None, cfg.run.seed) if engine.hidden is not None else None
            engine.module.eval()  # no dropout: the gradient of the risk itself, deterministic
            if delta is None:  # step 0, the first state: the engine holds theta_o
                forget.precompute_reference(spec, engine.module, cfg.eval.batch_size, pad)
            if ref_model is None and spec.needs_reference_logits:  # theta_o beside every state's engine
                ref_model = ReferenceModel.load(str(orig_dir), cfg.model, engine.ds_config, engine.zero3)
            dev = engine.device
            all_f, all_r = list(range(len(forget))), list(range(len(retain)))
            ref_logits = ref_model.logits if ref_model is not None else None
            probe = _Probe(spec, params, forget, retain, all_f, all_r, micro, pad, dev, ref_logits, hidden)
            if ema is not None:  # chunk k of the forget probe with chunk k of the retain probe
                probe = [_Probe(spec, params, forget, retain, f, r, micro, pad, dev, ref_logits, hidden)
                         for f, r in zip(_chunks(all_f, micro), _chunks(all_r, micro), strict=False)]  # fmt: skip
            singles = [_Probe(spec, params, forget, retain, [i], [], micro, pad, dev, ref_logits, hidden)
                       for i in range(per_instance)]  # fmt: skip
            rec = {"step": step, "source": "original" if delta is None else str(delta.relative_to(run_dir))}
            values, groups = geffect_at(engine, probe, singles, ema)
            records.append({**rec, **values})
            engine.deepspeed.destroy()  # free this engine before the next one is built
            del engine, probe, singles
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            dist.barrier()
            if dist.is_main() and delta is not None:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        dist.barrier()
        if dist.is_main():
            shutil.rmtree(tmp_root, ignore_errors=True)
    result = {
        "kind": GEFFECT_KIND,
        "run": str(run_dir),
        "original": str(orig_dir),
        "objective": spec.name,
        "params": params,
        "world_size": dist.world_size(),
        "probe": {
            "forget_split": cfg.data.forget_split,
            "retain_split": cfg.data.retain_split,
            "n_forget": len(forget),
            "n_retain": len(retain),
            "forget_tokens": global_count(forget.answers, list(range(len(forget))), "token"),
            "retain_tokens": global_count(retain, list(range(len(retain))), "token"),
            "per_instance": per_instance,
            # "mean": one mean over the probe; or the G-effect code's EMA over chunks of `micro_batch` items
            "average": "mean"
            if ema is None
            else {
                "ema_new_weight": ema,
                "micro_batch": micro,
                "chunks": min(len(_chunks(all_f, micro)), len(_chunks(all_r, micro))),
            },
        },
        "groups": groups,
        "steps": [r["step"] for r in records],
        "checkpoints": records,
    }
    if dist.is_main():
        from dsunlearn.plots import plot_geffect

        atomic_write_json(out, result)
        png = out.with_suffix(".png")
        tmp_png = plot_geffect(result, png.with_name(f".{png.stem}.tmp.png"))
        os.replace(tmp_png, png)  # a reader never sees half a PNG either
    dist.barrier()
    return result


def format_table(result: dict) -> str:
    """A short text table: one row per step."""
    head = f"{'step':>6}  {'e_u':>11}  {'e_r':>11}  {'cos_u':>7}  {'cos_r':>7}  {'|grad L_u|':>10}  {'R(D_f)':>8}"
    rows = [head]
    for r in result["checkpoints"]:
        rows.append(
            f"{r['step']:>6}  {r['geffect_u']:>11.4g}  {r['geffect_r']:>11.4g}  {r['geffect_cos_u']:>7.3f}  "
            f"{r['geffect_cos_r']:>7.3f}  {r['grad_norm_objective']:>10.4g}  {r['risk_forget']:>8.4f}"
        )
    for r in result["checkpoints"]:
        if r["per_instance"]:
            vals = ", ".join(f"{p['geffect_u']:.3g}" for p in r["per_instance"])
            rows.append(f"step {r['step']}: per-instance e_u = [{vals}]")
    return "\n".join(rows)
