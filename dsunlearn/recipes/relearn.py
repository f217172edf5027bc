"""The relearning attack (Hu et al. 2024, "Jogging the memory of unlearned LLMs"; Lynch et al. 2024): a few
fine-tuning steps on a small part of the forget data bring forgotten answers back, held-out ones included,
when unlearning only hid them.

The relearning set is a seeded fraction of the run's forget set (``random.Random(seed).sample``: the same items
on every rank and world size), or another forget split of the suite (`--relearn-split`: what the suite's data
offers under that name, local files in the suite's layout included). The training is `finetune.train_one`,
the fine-tuning loop of the target and retain models (answer-token NLL, global-batch mean, the run's ZeRO
engine, N ranks), for K steps or E epochs at the unlearning run's lr; no second loop. The held-out forget
items (those not relearned) are probed before and after: their mean answer probability is the attack's
generalisation, which the suite's evaluation (over the whole forget set) mixes with memorisation.
"""

from __future__ import annotations

import copy
import dataclasses
import random

from dsunlearn.config import RunConfig
from dsunlearn.recipes.attack_spec import AttackSpec
from dsunlearn.suites import get_suite
from dsunlearn.suites.base import TrainingSet


@dataclasses.dataclass(frozen=True)
class RelearnData:
    """The relearning set (role finetune) and the held-out forget items (None when none are left)."""

    relearn: TrainingSet
    heldout: TrainingSet | None
    what: str  # one line for tables: "12 of 40 items of forget10 (seed 0)"


def relearn_data(cfg: RunConfig, spec: AttackSpec) -> RelearnData:
    """The relearning set of `spec` on the run's data (`cfg.data`); DataError / ConfigError (one line) where a
    split does not exist or is empty."""
    suite = get_suite(cfg.data.suite)
    forget = suite.training_set(cfg.data, "forget")
    if spec.split is not None:
        data = copy.deepcopy(cfg.data)
        data.forget_split = spec.split
        other = suite.training_set(_validated(data, cfg), "forget")
        relearn = TrainingSet("finetune", other.split, other.kind, other.items, other.windows)
        return RelearnData(relearn, forget, f"{len(other.items)} items of the split {other.split}")
    n = len(forget.items)
    k = max(1, round(spec.fraction * n))
    chosen = sorted(random.Random(spec.seed).sample(range(n), k))
    picked = set(chosen)
    rest = [it for i, it in enumerate(forget.items) if i not in picked]
    relearn = TrainingSet("finetune", forget.split, forget.kind, [forget.items[i] for i in chosen], forget.windows)
    heldout = TrainingSet("forget", forget.split, forget.kind, rest, forget.windows) if rest else None
    return RelearnData(relearn, heldout, f"{k} of {n} items of {forget.split} (seed {spec.seed})")


def _validated(data, cfg: RunConfig):
    """`data` (its forget split replaced by --relearn-split), the split checked against the suite's forget sets."""
    from dsunlearn.errors import DataError
    from dsunlearn.suites import SPLITS

    forget = SPLITS[data.suite].forget
    if data.forget_split not in forget:
        raise DataError(
            f"--relearn-split {data.forget_split[:40]!r} is not a forget set of data.suite={data.suite}; choose "
            f"one of: {', '.join(forget)} (or --relearn-fraction for a share of the run's own forget set)"
        )
    return data


def relearn_config(cfg: RunConfig, spec: AttackSpec) -> RunConfig:
    """The run's config for relearning: its engine (ZeRO stage, optimizer, batch) at `spec.lr` or the run's lr,
    `spec.steps` steps (else `spec.epochs` epochs), the suite's evaluation at the end, no checkpoints."""
    c = copy.deepcopy(cfg)
    c.engine.max_steps = spec.steps or 0
    c.engine.epochs = spec.epochs
    if spec.lr is not None:
        c.engine.lr = spec.lr
    c.eval.at_end = True
    c.eval.every_steps = 0
    return c


def relearn_model(cfg: RunConfig, model_dir: str, data: RelearnData, out_model, events, tag: str):
    """Fine-tune `model_dir` on the relearning set (`relearn_config(...)` as `cfg`), save it to `out_model`;
    (probabilities before, after: {"relearn", "heldout"}, the suite's log after). Collective."""
    from dsunlearn.models.load import load_tokenizer
    from dsunlearn.recipes.finetune import train_one

    tokenizer = load_tokenizer(cfg.model.tokenizer or model_dir, cfg.model.trust_remote_code)
    enc = data.relearn.encode(tokenizer, cfg.data)
    probes = {"relearn": enc}
    if data.heldout is not None:
        probes["heldout"] = data.heldout.encode(tokenizer, cfg.data)
    return train_one(cfg, model_dir, tokenizer, enc, out_model, events, tag, probes)
