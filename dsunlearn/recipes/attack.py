"""`dsunlearn attack`: does the forgetting survive? Quantize or relearn a finished unlearning run's model, then
evaluate it with the run's suite, next to the same attack on the references.

Models (labels of `summary.json` and `table.md`):
- `target`: the model unlearning started from (the run's model.name_or_path), never attacked for relearning
  (it already knows); quantized like the others for `--quantize`;
- `unlearned`: the run's `model/`, before and after the attack;
- `retrained` (with --retain-model DIR): the model never trained on the forget set, attacked alike: what the
  attack gives a model that truly does not know.

Recovery, per number m of the suite's headline (and its sweep details, e.g. TOFU's forget probability):

    recovery(m) = (m_attacked - m_unlearned) / (m_target - m_unlearned)

0: the attack moved nothing, 1: it is back at the target's value (> 1 past it, < 0 further away); None where
the target and the unlearned model agree. Computed on the unattacked target: how much of what unlearning
removed comes back. The run directory is only read: everything goes to `<run>/attacks/<name>/`, written in
`attacks/.<name>.tmp` and moved into place at the end (an interrupted attack leaves no half-written
directory; the next one removes the staging).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any

from dsunlearn import dist
from dsunlearn.fsutil import atomic_replace_dir, atomic_write_json, atomic_write_text
from dsunlearn.recipes.attack_spec import QUANTIZE, AttackSpec, AttackTarget, check_spec, check_target
from dsunlearn.rundir import on_main, run_config
from dsunlearn.suites import get_suite

HELDOUT = "heldout_forget_prob"  # relearn: mean answer probability of the forget items not relearned


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """One attack: `before[label]` / `after[label]` summaries (label in target, unlearned, retrained; `after`
    lacks the target for relearning), `recovery[key]`, the metrics compared (`keys`: (key, label, fmt))."""

    out: str
    spec: dict
    before: dict[str, dict]
    after: dict[str, dict]
    recovery: dict[str, float | None]
    keys: list[tuple[str, str, str]]
    seconds: float
    relearn_set: str | None = None

    def table(self) -> str:
        """Markdown: one row per metric; target, unlearned before -> after, recovery, retrained before -> after."""
        ret = "retrained" in self.before
        head = "| metric | target | " + ("target attacked | " if "target" in self.after else "")
        head += "unlearned | unlearned attacked | recovery |" + (" retrained | retrained attacked |" if ret else "")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]

        def cell(d: dict | None, key: str, fmt: str) -> str:
            v = None if d is None else d.get(key)
            return "-" if v is None else f"{v:{fmt}}"

        for key, label, fmt in self.keys:
            row = [label, cell(self.before.get("target"), key, fmt)]
            if "target" in self.after:
                row.append(cell(self.after["target"], key, fmt))
            row += [cell(self.before["unlearned"], key, fmt), cell(self.after["unlearned"], key, fmt)]
            r = self.recovery.get(key)
            row.append("-" if r is None else f"{r:.2f}")
            if ret:
                row += [cell(self.before["retrained"], key, fmt), cell(self.after.get("retrained"), key, fmt)]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"


def compared_keys(suite, relearn: bool) -> list[tuple[str, str, str]]:
    """(summary key, label, format) of the numbers an attack reports: the suite's headline, its sweep details,
    and for relearning the held-out forget probability."""
    keys = [(h.key, h.label, h.fmt) for h in suite.HEADLINE]
    keys += [(k, label, ".4f") for k, label in suite.SWEEP_DETAILS if k not in {x[0] for x in keys}]
    return keys + ([(HELDOUT, "Held-out forget prob", ".4f")] if relearn else [])


def recovery(before: float | None, after: float | None, target: float | None) -> float | None:
    """(after - before) / (target - before); None where a value is missing or not finite, or target == before."""
    vals = (before, after, target)
    if any(v is None or not math.isfinite(v) for v in vals) or target == before:
        return None
    return (after - before) / (target - before)


def _summary_of(suite, log, retain_log) -> dict:
    return {k: v for k, v in suite.summarize(log, retain_log).items() if k.islower()}


def _evaluate(model_dir: str, cfg, suite, retain_log, quantize: AttackSpec | None, out: Path | None) -> dict:
    """The suite's summary of a saved model (`quantize`: its RTN-quantized copy, in memory); its log written
    to `<out>/eval/` where `out` is given. Collective (one replica per rank)."""
    from dsunlearn.eval.saved import load_saved

    model, tokenizer = load_saved(model_dir, cfg.model)
    if quantize is not None:
        from dsunlearn.models.quantize import quantize_model

        q = quantize
        quantize_model(model, q.bits, q.group_size, q.symmetric, q.include_embeddings)
    log = suite.evaluate(model, tokenizer, cfg.data, cfg.eval)
    del model
    if out is not None:
        return {k: v for k, v in suite.write_eval(out, log, retain_log).items() if k.islower()}
    return _summary_of(suite, log, retain_log)


def run_attack(run_dir: str | Path, spec: AttackSpec, overwrite: bool = False, overrides: list[str] | None = None,
               cache: dict[str, dict] | None = None) -> AttackResult:  # fmt: skip
    """Attack the run at `run_dir` (collective under a launcher); `cache`: {model dir: summary} of unattacked
    models already evaluated with this run's config (the demo shares its target's), filled in here."""
    dist.init_distributed()
    t0 = time.time()
    on_main(lambda: check_spec(spec))
    on_main(lambda: check_target(run_dir, spec, overwrite) and None)
    target = check_target(run_dir, spec, overwrite)
    cfg = run_config(target.run.root, overrides=overrides)
    suite = get_suite(cfg.data.suite)
    retain_log = suite.check_retain_log(cfg.eval.retain_log, cfg) if cfg.eval.retain_log else None
    relearn = spec.kind != QUANTIZE
    data = None
    if relearn:
        from dsunlearn.recipes.relearn import relearn_data

        data = relearn_data(cfg, spec)  # a bad split fails here, before anything is written
    stage = target.staging
    if dist.is_main():
        shutil.rmtree(stage, ignore_errors=True)  # an interrupted attack's staging (ours: a dot-name in attacks/)
        stage.mkdir(parents=True)
    dist.barrier()
    from dsunlearn.tracking import EventLog

    events = EventLog(stage / "events.jsonl", cfg, job="attack")
    events.log("attack_start", kind=spec.kind, name=spec.dir_name, world=dist.world_size())
    try:
        cache = cache if cache is not None else {}
        result = _attack(target, spec, cfg, suite, retain_log, data, events, cache, t0, overrides)
        events.log("attack_done", seconds=result.seconds, **{f"recovery_{k}": v for k, v in result.recovery.items()})
    finally:
        events.close()
    if dist.is_main():
        _publish(target, result, suite)
    dist.barrier()
    return result


def _models(target: AttackTarget, spec: AttackSpec) -> dict[str, str]:
    models = {"target": target.target_model, "unlearned": str(target.model)}
    if spec.retain_model is not None:
        models["retrained"] = spec.retain_model
    return models


def run_summary(run) -> dict | None:
    """The run's final evaluation (`<run>/eval/summary.json`: its snake_case numbers), None where it has none or
    the file is not a flat JSON object of numbers (a run directory is untrusted: nothing else is read)."""
    import json

    f = run.eval / "summary.json"
    try:
        data = json.loads(f.read_text(encoding="utf-8")[: 1 << 20]) if f.is_file() and not f.is_symlink() else None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    keep = {k: v for k, v in data.items() if isinstance(k, str) and k.islower()}
    ok = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in keep.values())
    return {k: (None if v is None else float(v)) for k, v in keep.items()} if ok and keep else None


def _attack(target: AttackTarget, spec, cfg, suite, retain_log, data, events, cache, t0,
            overrides=None) -> AttackResult:  # fmt: skip
    stage, models = target.staging, _models(target, spec)
    before, after, probes = {}, {}, {}
    if not overrides:  # the run's own final evaluation: the same model under the same settings
        own = run_summary(target.run)
        if own is not None:
            cache.setdefault(str(target.model.resolve()), own)
    for label, path in models.items():
        key = str(Path(path).resolve()) if Path(path).exists() else path
        if key not in cache:
            cache[key] = _evaluate(path, cfg, suite, retain_log, None, None)
        before[label] = dict(cache[key])
        events.log("attack_eval", model=label, attacked=False, **before[label])
    if spec.kind == QUANTIZE:
        for label, path in models.items():
            out = stage if label == "unlearned" else stage / "references" / label
            # A reference attacked alike by an earlier attack of this process (the demo's shared target) is
            # reused: its summary only, its log is in that attack's directory.
            key = f"{Path(path).resolve() if Path(path).exists() else path}|{spec.default_name()}"
            if label == "unlearned" or key not in cache:
                after[label] = _evaluate(path, cfg, suite, retain_log, spec, out)
                if label != "unlearned":
                    cache[key] = dict(after[label])
            else:
                after[label] = dict(cache[key])
            events.log("attack_eval", model=label, attacked=True, **after[label])
    else:
        from dsunlearn.recipes.relearn import relearn_config, relearn_model

        rcfg = relearn_config(cfg, spec)
        for label in [x for x in models if x != "target"]:
            out = stage if label == "unlearned" else stage / "references" / label
            p0, p1, log = relearn_model(rcfg, models[label], data, out / "model", events, f"relearn_{label}")
            after[label] = {k: v for k, v in suite.write_eval(out, log, retain_log).items() if k.islower()}
            probes[label] = (p0, p1)
            if dist.is_main() and not spec.save_model:
                shutil.rmtree(out / "model", ignore_errors=True)
            dist.barrier()
            before[label][HELDOUT] = p0.get("heldout")
            after[label][HELDOUT] = p1.get("heldout")
            events.log("attack_eval", model=label, attacked=True, **after[label])
        if "target" in before and data.heldout is not None:
            before["target"][HELDOUT] = _heldout_prob(models["target"], cfg, data)
    keys = compared_keys(suite, spec.kind != QUANTIZE)
    rec = {k: recovery(before["unlearned"].get(k), after["unlearned"].get(k), before["target"].get(k))
           for k, _, _ in keys}  # fmt: skip
    return AttackResult(str(target.out), dataclasses.asdict(spec), before, after, rec, keys,
                        round(time.time() - t0, 1), data.what if data is not None else None)  # fmt: skip


def _heldout_prob(model_dir: str, cfg, data) -> float:
    """The target's mean answer probability on the held-out forget items (what relearning aims back at)."""
    from dsunlearn.data.collate import pad_id_of
    from dsunlearn.eval.nll import answer_nll, mean_answer_probability
    from dsunlearn.eval.saved import load_saved

    model, tokenizer = load_saved(model_dir, cfg.model)
    enc = data.heldout.encode(tokenizer, cfg.data)
    return mean_answer_probability(answer_nll(model, enc, cfg.eval.batch_size, pad_id_of(tokenizer))[0])


def _publish(target: AttackTarget, result: AttackResult, suite) -> None:
    """Rank 0: the record, the table and the plot into the staging directory, then moved into place."""
    from dsunlearn.plots import plot_attack

    stage = target.staging
    record: dict[str, Any] = {"run": str(target.run.root), "suite": suite.NAME, "world_size": dist.world_size(),
                              **dataclasses.asdict(result)}  # fmt: skip
    atomic_write_json(stage / "attack.json", result.spec)
    atomic_write_json(stage / "summary.json", record)
    what = f"Relearning set: {result.relearn_set}.\n\n" if result.relearn_set else ""
    atomic_write_text(stage / "table.md", f"# Attack {Path(result.out).name} on {target.run.root}\n\n{what}"
                      + result.table() + "\nrecovery = (attacked - unlearned) / (target - unlearned).\n")  # fmt: skip
    head = suite.HEADLINE[0]
    bars = {label: (result.before[label].get(head.key), result.after.get(label, {}).get(head.key))
            for label in result.before}  # fmt: skip
    plot_attack(bars, head, Path(result.out).name, stage / "plot.png")
    if target.out.exists():  # --overwrite of an earlier attack (check_target: one `dsunlearn attack` wrote)
        shutil.rmtree(target.out)
    atomic_replace_dir(stage, target.out)
