"""TOFU evaluation throughput: items per second over the four evaluation sets, batches in item order (the
default) vs ``eval.length_batches`` (cut longest first), interleaved repeat by repeat in one run so that machine
drift falls on both alike; and whether the numbers are the ones a previous evaluation wrote.

Per model directory (an HF dir, e.g. a demo's ``runs/demo/runs/<name>/model``): the suite's evaluation under
the config (default ``tiny_finetune``: the demo's data and eval settings), repeated; reported are the median
seconds, items/s (items of the four sets), the speed-up, and per mode the largest difference of any per-item
number (losses, ROUGE, MIA scores) against the item-order result, plus how many generations differ. With
``--compare-log`` the item-order log is also compared with the ``eval_log_aggregated.json`` / ``TOFU_EVAL.json``
beside the model (``<model>/../eval/``, written when the run ended, by whatever code ran it): ``identical``
means every per-item number and text is bit-for-bit the same.

    python benchmarks/bench_eval.py --models runs/demo/runs/ga/model runs/demo/runs/npo/model --compare-log
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("item_order", "length_batches")


def _numbers(log: dict, prefix: tuple = ()) -> dict:
    """{path: leaf} of every number and string in a (nested) log."""
    out = {}
    for k, v in log.items():
        key = (*prefix, str(k))
        if isinstance(v, dict):
            out.update(_numbers(v, key))
        elif isinstance(v, list):
            out.update(_numbers(dict(enumerate(v)), key))
        else:
            out[key] = v
    return out


def _diff(a: dict, b: dict) -> tuple[float, int]:
    """(largest |a - b| over the numbers, how many strings differ) of two logs with the same keys."""
    na, nb = _numbers(a), _numbers(b)
    if na.keys() != nb.keys():
        raise SystemExit("the two logs have different entries")
    worst, texts = 0.0, 0
    for k, x in na.items():
        y = nb[k]
        if isinstance(x, str) or isinstance(y, str):
            texts += x != y
        elif x is not None and y is not None:
            worst = max(worst, abs(float(x) - float(y)))
    return worst, texts


def _items(log: dict) -> int:
    from dsunlearn.suites.tofu import log as tofu_log

    return sum(len(log[s]["avg_gt_loss"]) for s in tofu_log.SPLITS)


def bench_model(model_dir: Path, cfg, repeats: int, compare_log: bool, modes: tuple[str, ...] = MODES) -> dict:
    from dsunlearn.eval.saved import load_saved
    from dsunlearn.suites.tofu import log as tofu_log
    from dsunlearn.suites.tofu import mia_log
    from dsunlearn.suites.tofu.evaluate import evaluate

    module, tokenizer = load_saved(model_dir, cfg.model)
    # item order alone runs on code from before eval.length_batches existed (a before/after of one machine)
    evals = {m: dataclasses.replace(cfg.eval, length_batches=True) if m == "length_batches" else cfg.eval
             for m in modes}  # fmt: skip
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    logs: dict[str, dict] = {}
    evaluate(module, tokenizer, cfg.data, cfg.eval)  # warm-up: imports, scorer, allocator
    for _ in range(repeats):
        for mode in modes:  # interleaved: drift of the machine falls on both modes alike
            t0 = time.perf_counter()
            log = evaluate(module, tokenizer, cfg.data, evals[mode])
            seconds[mode].append(time.perf_counter() - t0)
            if mode in logs and _diff(logs[mode], log) != (0.0, 0):
                raise SystemExit(f"{model_dir}: {mode} gave different numbers on a repeat")
            logs[mode] = log
    n = _items(logs["item_order"])
    row = {"model": str(model_dir), "items": n}
    for mode in modes:
        med = statistics.median(seconds[mode])
        row[f"{mode}_s"] = round(med, 3)
        row[f"{mode}_items_per_s"] = round(n / med, 1)
    if "length_batches" in modes:
        row["speedup"] = round(row["item_order_s"] / row["length_batches_s"], 3)
        row["length_batches_max_abs_diff"], row["length_batches_texts_differ"] = _diff(
            logs["item_order"], logs["length_batches"]
        )
    if compare_log:
        saved_dir = model_dir.parent / "eval"
        saved = dict(tofu_log.load_log(saved_dir / tofu_log.AGGREGATED_FILE))
        if (saved_dir / mia_log.MIA_FILE).is_file():
            saved[mia_log.MIA_FILE] = json.loads((saved_dir / mia_log.MIA_FILE).read_text())
        mine = logs["item_order"]
        worst, texts = _diff(_comparable(saved, keep=mine), _comparable(mine, keep=saved))
        row["vs_saved_log"] = "identical" if (worst, texts) == (0.0, 0) else f"max diff {worst:.3g}, {texts} texts"
    return row


def _comparable(log: dict, keep: dict | None = None) -> dict:
    """The per-item entries of a TOFU log: the four splits whole, and of the MIA part each entry's per-item
    values (`value_by_index`, of its forget and holdout sets where it has them); aggregates are left out (a
    saved log's PrivLeak and reference attack need the retain log). `keep`: only the entries it has too."""
    from dsunlearn.suites.tofu import mia_log

    out = {}
    for split, entries in log.items():
        if keep is not None and split not in keep:
            continue
        if split != mia_log.MIA_FILE:
            out[split] = entries
            continue
        out[split] = {}
        for name, e in entries.items():
            if keep is not None and name not in keep[split]:
                continue
            parts = {p: e[p]["value_by_index"] for p in ("forget", "holdout") if p in e}
            out[split][name] = parts or e.get("value_by_index")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", required=True, type=Path, help="saved HF model dirs")
    ap.add_argument("--config", default="tiny_finetune", help="config giving the data and eval.* settings")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare-log", action="store_true", help="compare with the log saved beside each model")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_throughput.md")
    only = "only the default path (runs on code from before eval.length_batches: before/after)"
    ap.add_argument("--item-order-only", action="store_true", help=only)
    args = ap.parse_args()

    from dsunlearn import dist
    from dsunlearn.config_io import load_config

    dist.init_distributed()
    cfg = load_config(args.config, ["run.output_dir=/tmp/bench_eval_unused"])
    rows = []
    for m in args.models:
        rows.append(bench_model(m, cfg, args.repeats, args.compare_log, MODES[:1] if args.item_order_only else MODES))
        if dist.is_main():
            print(json.dumps(rows[-1]), flush=True)
    head = "| model | items | item order: items/s | length batches: items/s | speed-up | max abs diff | texts differ |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lb = (f"{r['length_batches_items_per_s']} | {r['speedup']}x | {r['length_batches_max_abs_diff']:.2g} | "
              f"{r['length_batches_texts_differ']}" if "speedup" in r else "- | - | - | -")  # fmt: skip
        lines.append(
            f"| {Path(r['model']).parent.name} | {r['items']} | {r['item_order_items_per_s']} | {lb} |"
            + (f" {r['vs_saved_log']} |" if "vs_saved_log" in r else "")
        )
    if rows and "vs_saved_log" in rows[0]:
        lines[0] += " item order vs the saved log |"
        lines[1] += "---|"
    if dist.is_main():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
