"""A named set of a suite's offline data (``data.source=synthetic``), as every suite's loader hands it out."""

from __future__ import annotations

import copy
from collections.abc import Mapping

from dsunlearn.errors import DataError

WHERE = "synthetic data"  # where the items came from, in the validators' messages


def synthetic_set(sets: Mapping[str, list[dict]], name: str, missing: str) -> tuple[list[dict], str]:
    """(a deep copy of ``sets[name]``, "synthetic data"): the generated sets are cached once per process, so a
    caller gets items of its own to change. DataError "<missing> '<name>'; available: <the names, sorted>" where
    `sets` has no `name` (`missing`: "the synthetic MUSE corpus has no set")."""
    if name not in sets:
        raise DataError(f"{missing} '{name}'; available: {', '.join(sorted(sets))}")
    return copy.deepcopy(sets[name]), WHERE
