"""Benchmarks ("suites"): each one's data, evaluation, metrics and headline summary (interface: `base.Suite`).

A suite package (`suites/tofu/`) holds everything specific to one benchmark; recipes reach it only through
``get_suite(cfg.data.suite)``, and the unlearning loop, objectives and engine never import from here. This
module stays import-light (the config schema reads `NAMES`): a suite's modules load on first `get_suite`.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from dsunlearn.suites.base import Suite

# name -> "module:class" of its Suite; the config key `data.suite` accepts exactly these names.
_REGISTRY: dict[str, str] = {
    "tofu": "dsunlearn.suites.tofu.suite:TofuSuite",
    "muse": "dsunlearn.suites.muse.suite:MuseSuite",
    "wmdp": "dsunlearn.suites.wmdp.suite:WmdpSuite",
}
NAMES: tuple[str, ...] = tuple(_REGISTRY)
DEFAULT = "tofu"


class SplitRules(NamedTuple):
    """What `data.forget_split`, `data.retain_split` and `data.hub_name` mean for a suite (read by the config,
    without importing the suite): the allowed forget sets, the `auto` defaults."""

    forget: tuple[str, ...]
    forget_default: str
    retain_default: str  # TOFU's is the forget split's complement (config.retain_split_for)
    hub_name: str  # "{Corpus}": data.muse.corpus capitalised


SPLITS: dict[str, SplitRules] = {
    "tofu": SplitRules(("forget01", "forget05", "forget10"), "forget10", "complement", "locuslab/TOFU"),
    # MUSE-News' scalability / sustainability forget sets are sets of their own configs (suites/muse/data.py)
    "muse": SplitRules(
        ("forget", *(f"{c}/forget_{i}" for c in ("scal", "sust") for i in range(1, 5))),
        "forget",
        "retain1",
        "muse-bench/MUSE-{Corpus}",
    ),  # fmt: skip
    # WMDP's forget corpora (suites/wmdp/data.py); "+" joins two; hub_name is the questions' dataset (cais/wmdp)
    "wmdp": SplitRules(
        (
            "bio-forget+cyber-forget",
            "bio-forget",
            "cyber-forget",
            "corpora/cyber-forget",
            "corpora/cyber-forget+bio-forget",
        ),
        "bio-forget+cyber-forget",
        "wikitext",
        "cais/wmdp",
    ),  # fmt: skip
}


@cache
def get_suite(name: str) -> Suite:
    """The suite called `name` (one shared, stateless instance); ConfigError naming the allowed ones otherwise."""
    if name not in _REGISTRY:
        from dsunlearn.errors import ConfigError

        raise ConfigError(f"data.suite={name!r} is not a known suite; choose one of: {', '.join(NAMES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
