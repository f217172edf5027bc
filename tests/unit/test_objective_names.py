"""open-unlearning's method names as aliases of objective.name: stored canonical (same config.yaml, same run
identity), case-sensitive, and an alias of a method dsunlearn does not have is a one-line error until the
registry has it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from dsunlearn import rundir
from dsunlearn.config import RunConfig, validate
from dsunlearn.config_io import config_hash, dump_config, load_config
from dsunlearn.errors import ConfigError
from dsunlearn.objective_names import OPEN_UNLEARNING, canonical_objective
from dsunlearn.objectives import OBJECTIVES, ObjectiveSpec, wga


@pytest.mark.parametrize(
    ("alias", "name"), [("GradAscent", "ga"), ("GradDiff", "graddiff"), ("NPO", "npo"), ("SimNPO", "simnpo"),
                        ("WGA", "wga"), ("DPO", "dpo")],
)  # fmt: skip
def test_open_unlearning_names_are_stored_as_dsunlearns(alias, name, tmp_path):
    via_alias = load_config("tiny_unlearn", [f"objective.name={alias}"])
    direct = load_config("tiny_unlearn", [f"objective.name={name}"])
    assert via_alias.objective.name == name and via_alias == direct
    assert config_hash(via_alias) == config_hash(direct)
    assert rundir._identity(via_alias) == rundir._identity(direct)  # what --resume compares
    written = yaml.safe_load(dump_config(via_alias, tmp_path / "config.yaml").read_text())
    assert written["objective"]["name"] == name


def test_an_alias_in_a_config_file_takes_that_objectives_hyper_parameters(tmp_path):
    path = tmp_path / "ou.yaml"
    path.write_text("base: tiny_unlearn\nobjective: {name: WGA, alpha: 5, lambda: 0.5}\n")
    o = load_config(str(path)).objective
    assert (o.name, o.params, o.lambda_) == ("wga", {"alpha": 5.0}, 0.5)


@pytest.mark.parametrize(("alias", "name"), [("UNDIAL", "undial"), ("SatImp", "satimp"), ("RMU", "rmu")])
def test_an_alias_of_a_registered_method_is_stored_canonical(alias, name):
    assert load_config(None, [f"objective.name={alias}"]).objective.name == name


@pytest.mark.parametrize("alias", ["CEU", "PDU"])
def test_an_alias_of_a_method_dsunlearn_does_not_have_says_so(alias):
    assert OPEN_UNLEARNING[alias] not in OBJECTIVES
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"objective.name={alias}"])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"objective.name='{alias}' (open-unlearning's {alias}) is not available in dsunlearn yet")
    assert "choose one of: ga, graddiff, npo" in msg and "GradAscent" in msg


def test_registering_the_target_makes_the_alias_work(monkeypatch):
    with pytest.raises(ConfigError, match="not available in dsunlearn yet"):
        canonical_objective("SatImp", registered=("ga", "npo"))
    assert canonical_objective("SatImp", registered=("ga", "satimp")) == "satimp"
    # through the config, with the registry imported (as in a training process)
    monkeypatch.setitem(OBJECTIVES, "satimp", ObjectiveSpec("satimp", wga, needs_reference=False))
    assert load_config(None, ["objective.name=SatImp"]).objective.name == "satimp"


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("gradascent", "(names are case-sensitive: did you mean 'GradAscent'?)"),
        ("Npo", "(names are case-sensitive: did you mean 'npo'?)"),
        ("simnpoo", "(did you mean 'simnpo'?)"),
        ("foo", ""),
    ],
)
def test_names_are_case_sensitive_with_a_hint(given, hint):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"objective.name={given}"])
    msg = str(e.value)
    allowed = "choose one of: ga, graddiff, npo, simnpo, wga, tnpo, wtnpo, satimp, undial, idk_nll, dpo, rmu, or "
    allowed += "open-unlearning's GradAscent, GradDiff"
    assert msg.startswith(f"objective.name='{given}' is not allowed; {allowed}") and msg.endswith(hint), msg


def test_validate_canonicalises_a_config_built_in_code():
    cfg = RunConfig()
    cfg.objective.name = "SimNPO"
    assert validate(cfg).objective.name == "simnpo" and cfg.objective.params == {"beta": 4.5, "delta": 0.0}
    cfg = RunConfig()
    cfg.objective.name = "CEU"
    with pytest.raises(ConfigError, match="not available in dsunlearn yet"):
        validate(cfg)


def test_the_table_is_open_unlearnings_class_names_and_never_shadows_a_name():
    assert set(OPEN_UNLEARNING) >= {"GradAscent", "GradDiff", "NPO", "SimNPO", "DPO", "RMU", "UNDIAL", "WGA", "SatImp"}
    assert not set(OPEN_UNLEARNING) & set(OBJECTIVES)  # an alias never hides one of dsunlearn's names
    assert all(target == target.lower() for target in OPEN_UNLEARNING.values())


def test_aliases_resolve_without_importing_torch():
    code = textwrap.dedent(
        """
        import sys
        from dsunlearn.config_io import load_config
        print(load_config("tiny_unlearn", ["objective.name=SimNPO"]).objective.name, "torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "simnpo False", out.stdout + out.stderr[-2000:]
