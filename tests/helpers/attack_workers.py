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
