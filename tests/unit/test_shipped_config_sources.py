"""Each shipped config that names an objective with hyper-parameters states, in a comment, the value of each of
them and where it comes from (paper or code), and the stated value is the one the config runs with."""

from __future__ import annotations

import re

import pytest
import yaml

from dsunlearn.config_io import SHIPPED_DIR, load_config, shipped_configs
from dsunlearn.objectives import OBJECTIVES

# "# beta 4.5, delta 0.0, gamma 0.125: SimNPO's TOFU forget10 code and open-unlearning"
_VALUE = r"[a-z_0-9]+ (?:-?[\d.]+(?:e-?\d+)?|[a-z]+)"  # a number, or a word for a string hyper-parameter
SOURCE = re.compile(rf"^# ({_VALUE}(?:, {_VALUE})*): (\S.*)$")
# Keys of the objective section that a paper sets per objective although every objective has them.
PER_OBJECTIVE = {"simnpo": ("gamma",)}  # open-unlearning and SimNPO's code scale its forget term by 0.125


def stated(text: str) -> dict[str, float | str]:
    """{key: value} of the source comments of a config file."""
    out = {}
    for line in text.splitlines():
        m = SOURCE.match(line)
        if m:
            for pair in m.group(1).split(", "):
                key, value = pair.split(" ")
                out[key] = value if value.isalpha() else float(value)
    return out


def _named(name: str) -> str | None:
    """The objective the file itself names (not its base), if any."""
    data = yaml.safe_load((SHIPPED_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return (data.get("objective") or {}).get("name")


@pytest.mark.parametrize("name", [n for n in shipped_configs() if _named(n)])
def test_shipped_configs_state_the_source_of_each_hyper_parameter(name):
    objective = _named(name)
    keys = [*OBJECTIVES[objective].hyperparams, *PER_OBJECTIVE.get(objective, ())]
    comments = stated((SHIPPED_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    missing = [k for k in keys if k not in comments]
    assert not missing, f"{name}.yaml: no '# <key> <value>: <source>' comment for {missing}"
    o = load_config(name).objective
    effective = {**o.params, "gamma": o.gamma}
    assert {k: comments[k] for k in keys} == {k: effective[k] for k in keys}, name


def test_the_comment_reader_sees_a_missing_or_wrong_statement():
    assert stated("# beta 0.1: the NPO paper\nobjective: {name: npo}\n") == {"beta": 0.1}
    assert stated("# alpha 1.5, beta 4.0, eps 1e-5: the G-effect code\n") == {"alpha": 1.5, "beta": 4.0, "eps": 1e-5}
    assert stated("# beta 10, positions answer: UNDIAL") == {"beta": 10.0, "positions": "answer"}
    assert stated("# beta: no value\n# Base of the tofu configs: TOFU forget10\n") == {}
