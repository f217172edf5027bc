"""The objectives' hyper-parameters read from the source (no torch) equal the registry's own, and the reader
gives up (the registry answers) on anything it does not follow."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dsunlearn import objective_catalog as catalog
from dsunlearn.objectives import OBJECTIVES


def test_source_reading_equals_the_registry():
    from_source = catalog._from_source()
    assert list(from_source) == list(OBJECTIVES)  # names, in the registry's order
    for name, spec in OBJECTIVES.items():
        assert dict(from_source[name]) == dict(spec.hyperparams), name
    assert from_source["wtnpo"]["alpha"].default == 1.5 and from_source["npo"]["beta"].range.lo > 0


def test_once_the_registry_is_imported_it_answers(monkeypatch):
    # a registered objective the source does not list (as tests register throw-away ones)
    monkeypatch.setitem(OBJECTIVES, "copy_of_npo", OBJECTIVES["npo"])
    assert "copy_of_npo" in catalog.hyperparameter_table()


def test_config_validation_imports_no_torch():
    code = textwrap.dedent(
        """
        import sys
        from dsunlearn.config_io import load_config
        cfg = load_config("tiny_wtnpo", ["objective.alpha=2.5"])
        print(sorted(cfg.objective.params.items()), "torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    expected = "[('alpha', 2.5), ('beta', 4.0), ('eps', 1e-05)] False"
    assert out.stdout.strip() == expected, out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize(
    "source",
    [
        "def npo(logp, mask, ref_logp, *, beta: Beta = 1 / 10): ...",  # a computed default
        "def npo(logp, mask, ref_logp, *, beta: typing.Annotated[float, R] = 0.1): ...",  # not an alias
        "def npo(logp, mask, *, beta: Beta = 0.1): ...",  # not the data arguments
        "def npo(logp, mask, ref_logp, **hparams): ...",  # hyper-parameters not declared
    ],
)
def test_what_the_reader_does_not_follow_is_left_to_the_registry(tmp_path, monkeypatch, source):
    (tmp_path / "__init__.py").write_text('from .npo import npo\nOBJECTIVES = {"npo": ObjectiveSpec("npo", npo)}\n')
    (tmp_path / "npo.py").write_text(source + "\n")
    monkeypatch.setattr(catalog, "_OBJECTIVES_DIR", tmp_path)
    catalog._from_source.cache_clear()
    try:
        with pytest.raises(catalog._NotFollowed):
            catalog._from_source()
    finally:
        catalog._from_source.cache_clear()
