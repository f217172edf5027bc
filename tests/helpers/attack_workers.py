"""Workers for the attack tests (`helpers.spawn.run_distributed`): an unlearning run, then attacks on it."""

from __future__ import annotations

import json
from pathlib import Path


def unlearn_then_attack(overrides: list[str], attacks: list[dict], eval_overrides: list[str]) -> dict:
    """`run_unlearn(tiny_ga + overrides)` unless its model/ exists, then `run_attack` with each AttackSpec
    (given as kwargs) in turn; {name: (before, after, recovery, relearn losses from events.jsonl)}."""
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.attack import run_attack
    from dsunlearn.recipes.attack_spec import AttackSpec
    from dsunlearn.recipes.unlearn import run_unlearn

    cfg = load_config("tiny_ga", overrides)
    run = Path(cfg.run.output_dir)
    if not (run / "model").is_dir():
        run_unlearn(cfg)
    out = {}
    for kw in attacks:
        r = run_attack(run, AttackSpec(**kw), overwrite=True, overrides=eval_overrides)
        events = [json.loads(line) for line in (Path(r.out) / "events.jsonl").read_text().splitlines()]
        losses = [(e["model"], e["step"], e["loss"]) for e in events if e["event"] == "finetune_step"]
        out[kw["name"]] = (r.before, r.after, r.recovery, losses)
    return out


def _command(argv: list[str]) -> int:
    """`dsunlearn ARGV` parsed by the CLI's own parser and run by its command module, in this process group
    (`cli.main` would tear the group down on the way out, and DeepSpeed keeps its groups cached past that)."""
    from dsunlearn.cli import build_parser

    args = build_parser().parse_args(argv)
    return args._run(args)


def cli_run_then_attack(finetune: list[str], unlearn: list[str], run: str, attacks: list[list[str]],
                        probe: dict, hashed: list[str]) -> dict:  # fmt: skip
    """The CLI's commands in this process, as a user types them: `dsunlearn finetune FINETUNE` (the target), `dsunlearn
    unlearn UNLEARN` (the run at `run`), the directories `hashed` hashed, then `dsunlearn attack --run RUN ARGS`
    for each ARGS of `attacks`. `probe` = {bits, group_size, tensor}: the run's model quantized here the way the attack
    quantizes it (`quantize_model`, symmetric), and the suite's summary of that model under the run's config.

    Returns {"rc": exit codes (finetune, unlearn, each attack), "before": per directory of `hashed`, {relative
    path: sha256} before the attacks, "tensor": the quantized `probe["tensor"]`, "quantized": the names `quantize_model`
    replaced, "summary": the quantized model's snake_case summary}."""
    from test_bad_input import snapshot  # the hashes the attack tests compare (tests/integration on sys.path)

    from dsunlearn.eval.saved import load_saved
    from dsunlearn.models.quantize import quantize_model
    from dsunlearn.rundir import run_config
    from dsunlearn.suites import get_suite

    rc = [_command(["finetune", *finetune]), _command(["unlearn", *unlearn])]
    before = [snapshot(Path(d)) for d in hashed]
    rc += [_command(["attack", "--run", run, *args]) for args in attacks]
    cfg = run_config(run)
    suite = get_suite(cfg.data.suite)
    model, tokenizer = load_saved(Path(run) / "model", cfg.model)
    report = quantize_model(model, probe["bits"], probe["group_size"], symmetric=True)
    tensor = model.get_parameter(probe["tensor"]).detach().clone()
    retain_log = suite.check_retain_log(cfg.eval.retain_log, cfg) if cfg.eval.retain_log else None
    log = suite.evaluate(model, tokenizer, cfg.data, cfg.eval)
    summary = {k: v for k, v in suite.summarize(log, retain_log).items() if k.islower()}
    return {"rc": rc, "before": before, "tensor": tensor, "quantized": report.names, "summary": summary}
