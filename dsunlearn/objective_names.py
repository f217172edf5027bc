"""Names users already know: open-unlearning's method names accepted for `objective.name` (torch-free).

open-unlearning (locuslab/open-unlearning) selects a method by its trainer class, `trainer=NPO`. Those names
are aliases here: `objective.name=NPO` is `objective.name=npo`. The config stores the canonical name, so the
written config.yaml and the run's identity (its config hash) are the same whichever spelling started the run,
and `--resume` with the other spelling continues it.

Aliases are case-sensitive, as open-unlearning's are (its trainer registry is keyed by the exact class name,
and dsunlearn's own names are lower case): `SimNPO` is an alias, `simNPO` is refused with a "did you mean".

The table maps every open-unlearning method, also those dsunlearn has not implemented; whether an alias works
is decided by the objectives registry at the time: an alias whose target is registered is accepted, one whose
target is not is refused with "not available in dsunlearn yet". Registering an objective under its target name
(`satimp`) is all it takes for the alias (`SatImp`) to work.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from types import MappingProxyType

from dsunlearn.config_bounds import short_repr
from dsunlearn.errors import ConfigError

# open-unlearning's trainer handler name -> dsunlearn's objective name (src/trainer/__init__.py there).
OPEN_UNLEARNING = MappingProxyType(
    {
        "GradAscent": "ga",
        "GradDiff": "graddiff",
        "NPO": "npo",
        "SimNPO": "simnpo",
        "WGA": "wga",
        "DPO": "dpo",
        "RMU": "rmu",
        "UNDIAL": "undial",
        "SatImp": "satimp",
        "CEU": "ceu",
        "PDU": "pdu",
    }
)


def canonical_objective(name: object, registered: Collection[str] | None = None, key: str = "objective.name") -> str:
    """dsunlearn's name of objective `name`: itself if registered, the target of an open-unlearning alias if that
    is registered. `registered`: the registry's names (default: read torch-free, `objective_catalog`).

    Raises a one-line ConfigError naming `key` for an alias whose target dsunlearn does not have yet, or for a
    name that is neither (listing the accepted names, with a close spelling if there is one).
    """
    if registered is None:
        from dsunlearn.objective_catalog import hyperparameter_table

        registered = tuple(hyperparameter_table())
    if isinstance(name, str) and name in registered:
        return name
    target = OPEN_UNLEARNING.get(name) if isinstance(name, str) else None
    if target in registered:
        return target
    aliases = [a for a, t in OPEN_UNLEARNING.items() if t in registered]
    allowed = f"choose one of: {', '.join(registered)}"
    if aliases:
        allowed += f", or open-unlearning's {', '.join(aliases)}"
    if target is not None:
        raise ConfigError(
            f"{key}={short_repr(name)} (open-unlearning's {name}) is not available in dsunlearn yet (it would be "
            f"{key}={target}); {allowed}"
        )
    near = _near(name, [*aliases, *registered]) if isinstance(name, str) else None
    hint = ""
    if near is not None:
        case = "names are case-sensitive: " if near.lower() == name.lower() else ""
        hint = f" ({case}did you mean '{near}'?)"
    raise ConfigError(f"{key}={short_repr(name)} is not allowed; {allowed}{hint}")


def _near(name: str, names: list[str]) -> str | None:
    """The accepted name `name` is closest to, ignoring case (`gradascent` -> `GradAscent`), or None; where two
    differ only in case (`npo`, `NPO`) the later in `names` is suggested."""
    lowered = {n.lower(): n for n in names}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    return lowered[near[0]] if near else None
