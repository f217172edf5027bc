"""Hyper-parameters declared once, in each objective's signature: the registry's defaults, the config's keys,
types and bounds, the written config.yaml and the docs' tables all follow it; a new objective needs no other edit."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
import yaml

from dsunlearn.config_io import config_to_dict, dump_config, load_config
from dsunlearn.errors import ConfigError
from dsunlearn.hyperparams import Beta
from dsunlearn.objectives import OBJECTIVES, LossTerms, ObjectiveSpec, Range, hyperparameter_types, hyperparameters

ROOT = Path(__file__).resolve().parents[2]


def _signature_defaults(fn) -> dict:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def test_defaults_are_the_keyword_only_parameters_of_the_signature():
    for name, spec in OBJECTIVES.items():
        assert dict(spec.defaults) == _signature_defaults(spec.fn), name
        for hp in spec.hyperparams.values():  # a number has a Range, a string its Literal's choices (or any string)
            number = hp.type in (int, float) and hp.range is not None
            assert number or (hp.type is str and (hp.choices is None or hp.default in hp.choices)), name
    assert load_config(None, ["objective.name=simnpo"]).objective.params == {"beta": 4.5, "delta": 0.0}
    assert load_config(None, ["objective.name=ga"]).objective.params == {}


def _toy(
    logp: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    *,
    strength: Annotated[float, Range(0.5, 8.0, "a toy's bound")] = 2.0,
    beta: Beta = 0.3,
) -> LossTerms:
    raise NotImplementedError


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "toy", ObjectiveSpec("toy", _toy, needs_reference=False))


def test_a_new_objective_with_a_new_parameter_needs_no_schema_edit(toy, tmp_path):
    cfg = load_config(None, ["objective.name=toy", "objective.strength=3"])
    assert cfg.objective.params == {"strength": 3.0, "beta": 0.3}  # int given, float kept; beta's default
    assert load_config(None, ["objective.name=toy"]).objective.params == {"strength": 2.0, "beta": 0.3}
    with pytest.raises(ConfigError, match=r"objective\.strength=9\.0 is out of range: must be in \[0\.5, 8\]"):
        load_config(None, ["objective.name=toy", "objective.strength=9"])
    with pytest.raises(ConfigError, match=r"objective\.strength=0\.0 .* > 0"):  # lo > 0: the sign first
        load_config(None, ["objective.name=toy", "objective.strength=0"])
    with pytest.raises(ConfigError, match=r"objective\.strength: not a hyper-parameter of 'npo' \(allowed: beta\)"):
        load_config(None, ["objective.strength=3"])
    data = yaml.safe_load(dump_config(cfg, tmp_path / "config.yaml").read_text())
    assert data["objective"]["strength"] == 3.0 and data["objective"]["beta"] == 0.3
    assert load_config(str(tmp_path / "config.yaml")) == cfg


def test_a_key_the_objective_does_not_take_is_refused_naming_the_allowed_keys():
    for overrides, words in [
        (["objective.alpha=0.5"], "objective.alpha: not a hyper-parameter of 'npo' (allowed: beta)"),
        (["objective.name=wtnpo", "objective.delta=1"], "not a hyper-parameter of 'wtnpo' (allowed: alpha, beta, eps)"),
        (["objective.name=ga", "objective.beta=0.2"], "objective.beta: not a hyper-parameter of 'ga' (allowed: none)"),
        (
            ["objective.bta=1"],
            "allowed here: name, gamma, lambda, retain_loss, kl_positions, loss_mean, alpha, beta, beta1, beta2, "
            "delta, eps, layer, positions, steering_coeff, train_layers, train_params",
        ),  # fmt: skip
        (["objective.params.beta=1"], "unknown config key 'objective.params'"),  # one spelling: objective.beta
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    # a value is checked for sign and range before whether the objective takes it (the order config errors had)
    with pytest.raises(ConfigError, match=r"objective\.beta=0\.0 is out of range: must be a finite number > 0"):
        load_config(None, ["objective.name=ga", "objective.beta=0"])
    # null is "the default", also for another objective's key (run configs written before the change hold them)
    assert load_config(None, ["objective.name=ga", "objective.beta=null"]).objective.params == {}


def test_the_config_shows_the_effective_hyper_parameters(tmp_path):
    shown = config_to_dict(load_config("tiny_wtnpo", ["objective.beta=2.5"]))["objective"]
    assert list(shown) == ["name", "gamma", "lambda", "retain_loss", "kl_positions", "loss_mean", "alpha", "beta",
                           "eps"]  # fmt: skip
    assert (shown["alpha"], shown["beta"], shown["eps"]) == (1.5, 2.5, 1e-5)
    old = tmp_path / "old.yaml"  # a config.yaml as written before: every objective's keys, null = default
    old.write_text("objective: {name: npo, beta: null, alpha: null, delta: null}\n")
    assert load_config(str(old)).objective.params == {"beta": 0.1}


def test_malformed_signatures_are_refused_when_registered():
    def positional(logp, mask, ref_logp=None, beta: float = 0.1): ...

    def unbounded(logp, mask, ref_logp=None, *, beta: float = 0.1): ...

    def no_default(logp, mask, ref_logp=None, *, beta: Beta): ...

    for fn, words in [(positional, "keyword-only"), (unbounded, "Range"), (no_default, "a default")]:
        with pytest.raises(TypeError, match=words):
            ObjectiveSpec(fn.__name__, fn, needs_reference=False)
    declared = hyperparameters(_toy)
    assert list(declared) == ["strength", "beta"]  # signature order
    assert declared["strength"].range == Range(0.5, 8.0, "a toy's bound") and declared["beta"].range.lo == 1e-6


def test_one_name_has_one_type_across_objectives(monkeypatch):
    want = {
        "alpha": float,
        "beta": float,
        "beta1": float,
        "beta2": float,
        "delta": float,
        "eps": float,
        "layer": int,
        "positions": str,
        "steering_coeff": float,
        "train_layers": int,
        "train_params": str,
    }
    assert hyperparameter_types() == want

    def clash(logp, mask, ref_logp=None, *, beta: Annotated[int, Range(1, 2, "x")] = 1): ...

    monkeypatch.setitem(OBJECTIVES, "clash", ObjectiveSpec("clash", clash, needs_reference=False))
    with pytest.raises(TypeError, match="'beta' is float elsewhere, int in 'clash'"):
        hyperparameter_types()


_SYMBOLS = {"α": "alpha", "β": "beta", "δ": "delta", "ε": "eps", "λ": "lambda"}


def _tables(text: str) -> dict[str, dict[str, float | str]]:
    """{config name: {parameter: default}} from a Methods table's Defaults column ("α = 1.5, β = 4, ε = 1e-5",
    "`positions` = `answer`")."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[4].startswith("`") and cells[4].strip("`") in OBJECTIVES:
            pairs = re.findall(r"([αβδελ]|`?\w+`?) = (-?[\d.]+(?:e-?\d+)?|`[^`]+`)", cells[2])
            rows[cells[4].strip("`")] = {
                _SYMBOLS.get(k, k.strip("`")): v.strip("`") if v.startswith("`") else float(v) for k, v in pairs
            }
    return rows


@pytest.mark.parametrize("doc", ["README.md", "docs/objectives_table.md"])
def test_the_methods_tables_match_the_signatures(doc):
    rows = _tables((ROOT / doc).read_text())
    assert set(rows) == set(OBJECTIVES), doc
    for name, spec in OBJECTIVES.items():
        table = {k: v for k, v in rows[name].items() if k != "lambda"}  # lambda: objective.lambda, not the fn's
        assert table == dict(spec.defaults), (doc, name)
    assert rows["graddiff"]["lambda"] == load_config().objective.lambda_


def test_a_string_hyper_parameter_takes_only_its_literals_values():
    cfg = load_config(None, ["objective.name=undial", "objective.positions=all"])
    assert cfg.objective.params == {"beta": 10.0, "positions": "all"}
    with pytest.raises(ConfigError) as e:
        load_config(None, ["objective.name=undial", "objective.positions=prompt"])
    assert str(e.value) == "objective.positions='prompt' is not allowed; choose one of: answer, all"
    with pytest.raises(ConfigError, match=r"objective\.positions=1 has the wrong type: expected str"):
        load_config(None, ["objective.name=undial", "objective.positions=1"])
    # undial's beta is a logit shift (its own bound's reason), not NPO's inverse temperature
    with pytest.raises(ConfigError, match=r"objective\.beta=20000\.0 is out of range: .*logit is lowered"):
        load_config(None, ["objective.name=undial", "objective.beta=2e4"])

    def bad_default(logits, ref_logits, labels, *, positions: Literal["answer", "all"] = "every"): ...

    with pytest.raises(TypeError, match="default 'every'"):
        ObjectiveSpec("bad_default", bad_default, needs_reference=True)
