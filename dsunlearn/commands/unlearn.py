"""`dsunlearn unlearn`: run an unlearning objective (+ retain regulariser, + GRU) on a ZeRO-sharded engine."""

from __future__ import annotations

from dsunlearn.commands.common import add_run_arguments, load_run_config

NAME = "unlearn"
HELP = "unlearn the forget set from model.name_or_path (objective, regulariser, GRU, G-effect)"


add_arguments = add_run_arguments  # --config, key=value overrides, --output-dir, --overwrite, --resume


def run(args) -> int:
    cfg = load_run_config(args, NAME)  # before the recipe: its imports cost seconds, a refusal does not
    from dsunlearn import dist
    from dsunlearn.recipes.unlearn import run_unlearn

    result = run_unlearn(cfg, resume=args.resume)
    if dist.is_main():
        print(
            f"unlearned in {result.steps} steps ({result.wall_seconds} s): final forget loss "
            f"{result.last.get('loss_forget', float('nan')):.4f} -> {result.output_dir}/model"
        )
        ev = result.eval
        if ev and "model_utility" not in ev:  # another suite than TOFU: its headline numbers
            from dsunlearn.suites import get_suite

            heads = get_suite(cfg.data.suite).headline(ev)
            print(", ".join(f"{h.label} {h.value:.4f}" for h in heads if h.value is not None))
        elif ev:
            fq = ev.get("forget_quality")
            print(
                f"model utility {ev['model_utility']:.4f}, forget ROUGE-L {ev['forget_rouge']:.4f}, "
                + (f"forget quality {fq:.3g}" if fq is not None else "forget quality: no eval.retain_log")
            )
    return 0
