"""Each shipped config that names an objective with hyper-parameters states, in a comment, the value of each of
them and where it comes from (paper or code), and the stated value is the one the config runs with. Each shipped
`*_gru` config states, next to `geometry:`, the GRU variant it runs (docs/methods.md "GRU") and its source."""

from __future__ import annotations

import re

import pytest
import yaml

from dsunlearn.config_io import SHIPPED_DIR, load_config, shipped_configs
from dsunlearn.objectives import OBJECTIVES

# "# beta 4.5, delta 0.0, gamma 0.125: SimNPO's TOFU forget10 code and open-unlearning"
# a number, a word for a string hyper-parameter, or a string in backticks (rmu's train_params, a regex)
_VALUE = r"[a-z_0-9]+ (?:-?[\d.]+(?:e-?\d+)?|[a-z]+|`[^`, ]+`)"
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
                out[key] = value.strip("`") if value.isalpha() or value.startswith("`") else float(value)
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
    assert stated("# layer 7, train_params `mlp\\.down_proj\\.weight`: WMDP") == {
        "layer": 7.0,
        "train_params": r"mlp\.down_proj\.weight",
    }
    assert stated("# beta: no value\n# Base of the tofu configs: TOFU forget10\n") == {}


# "# GRU gru_project combined, gru_ema_from nll, gru_cos_clip null: the GRU code's gd_gru", the line above geometry:
GRU_SOURCE = re.compile(r"^# GRU gru_project (\w+), gru_ema_from (\w+), gru_cos_clip (\S+): (\S.*)$")
GRU_CONFIGS = [n for n in shipped_configs() if n.endswith("_gru")]


def test_there_are_gru_configs():
    assert len(GRU_CONFIGS) >= 40 and "tofu_llama2_7b_graddiff_gru" in GRU_CONFIGS


@pytest.mark.parametrize("name", GRU_CONFIGS)
def test_shipped_gru_configs_state_their_variant_next_to_geometry(name):
    lines = (SHIPPED_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
    found = [(i, m) for i, m in enumerate(map(GRU_SOURCE.match, lines)) if m]
    assert len(found) == 1, f"{name}.yaml: no single '# GRU gru_project .., gru_ema_from .., gru_cos_clip ..: <source>'"
    i, m = found[0]
    below = next(line for line in lines[i + 1 :] if not line.startswith("#"))
    assert below.startswith("geometry:"), f"{name}.yaml: the GRU comment is not next to geometry:"
    project, ema_from, clip, _ = m.groups()
    cfg = load_config(name)
    g = cfg.geometry
    assert g.gru and (g.gru_project, g.gru_ema_from) == (project, ema_from)
    assert g.gru_cos_clip == (None if clip == "null" else float(clip))
    if not name.startswith("tiny_"):  # the GRU code's <objective>_gru: a retain term is rectified with the rest
        assert g.gru_project == ("forget" if cfg.objective.retain_loss == "none" else "combined"), name
    else:  # the demos keep dsunlearn's default
        assert g.gru_project == "forget", name
