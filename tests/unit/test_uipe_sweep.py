"""UIPE's alpha sweep (recipes/uipe_sweep.py): the selection rule read from each suite's headline roles, against
hand-worked rows and an independent sort-based reference; TOFU's rule as it was before suites had roles; rows,
table and plot with every suite's keys; missing and non-finite numbers; the retain log each suite needs."""

from __future__ import annotations

import json
import random

import pytest

from dsunlearn.config_io import dump_config, load_config
from dsunlearn.errors import DataError, RunError
from dsunlearn.eval import metric_log
from dsunlearn.plots import plot_uipe_curve
from dsunlearn.recipes.uipe_sweep import (
    SweepResult,
    select_alpha,
    selection_numbers,
    sweep_retain_log,
    sweep_row,
)
from dsunlearn.suites import NAMES, get_suite
from dsunlearn.suites.base import FORGET, UTILITY, Headline
from dsunlearn.suites.muse import privleak

TOFU, MUSE = get_suite("tofu"), get_suite("muse")


def _tofu(alpha, fq, mu, rouge=0.1, prob=0.2):
    summary = {"forget_quality": fq, "model_utility": mu, "forget_rouge": rouge, "forget_prob": prob, "x": 1.0}
    return sweep_row(alpha, summary, TOFU, f"m{alpha:g}")


def _muse(alpha, verb, know_f, know_r, leak=None):
    summary = {"verbmem_f": verb, "knowmem_f": know_f, "knowmem_r": know_r, "mia_loss_auc": 0.5}
    if leak is not None:
        summary["privleak"] = leak
    return sweep_row(alpha, summary, MUSE, f"m{alpha:g}")


def _legacy_tofu_rule(rows, rho):
    """TOFU's rule as `select_alpha(rows, rho)` read it before suites declared roles (the pre-generalisation
    code, restated): best forget quality among model utility >= rho x MU(alpha=0), ties to the smaller alpha."""
    mu0 = next(r["model_utility"] for r in rows if r["alpha"] == 0.0)
    ok = [r for r in rows if r["model_utility"] >= rho * mu0]
    return sorted(ok, key=lambda r: (-r["forget_quality"], r["alpha"]))[0]["alpha"]


def test_every_suite_declares_a_sweep_rule():
    for name in NAMES:
        forget, utility = selection_numbers(get_suite(name).HEADLINE)
        assert forget and utility.higher_is_better and utility.role == UTILITY
    assert [h.key for h in selection_numbers(TOFU.HEADLINE)[0]] == ["forget_quality"]
    assert selection_numbers(TOFU.HEADLINE)[1].key == "model_utility"
    forget, utility = selection_numbers(MUSE.HEADLINE)
    assert [(h.key, h.higher_is_better) for h in forget] == [("verbmem_f", False), ("knowmem_f", False)]
    assert utility.key == "knowmem_r"


def test_a_declaration_without_a_rule_is_refused():
    f = Headline("a", "A", True, role=FORGET)
    for bad in [(f,), (Headline("u", "U", True, role=UTILITY),), (f, Headline("u", "U", False, role=UTILITY)),
                (f, Headline("u", "U", True, role=UTILITY), Headline("v", "V", True, role=UTILITY))]:  # fmt: skip
        with pytest.raises(ValueError, match="UIPE's sweep"):
            selection_numbers(bad)
    with pytest.raises(ValueError, match="role"):
        Headline("a", "A", True, role="retain")


def test_tofu_hand_worked():
    # rho = 0.9, MU(0) = 0.7 -> floor 0.63: alpha 1 (0.62) and 2 (0.3) are out; 0.25 and 0.5 tie at FQ 0.77,
    # the smaller alpha wins; alpha 2's FQ 0.99 would win without the floor.
    rows = [_tofu(0.0, 0.4, 0.7), _tofu(0.25, 0.77, 0.68), _tofu(0.5, 0.77, 0.65), _tofu(1.0, 0.8, 0.62),
            _tofu(2.0, 0.99, 0.3)]  # fmt: skip
    alpha, why = select_alpha(rows, 0.9, TOFU.HEADLINE)
    assert alpha == 0.25 == _legacy_tofu_rule(rows, 0.9)
    assert why == "alpha=0.25: highest Forget Quality 0.77 among alphas with Model Utility >= 0.9 x 0.7000 (alpha=0)"
    assert select_alpha(rows, 0.0, TOFU.HEADLINE)[0] == 2.0  # no floor: the best forget quality
    assert select_alpha(rows, 1.0, TOFU.HEADLINE)[0] == 0.0  # nothing keeps all of the utility


def test_tofu_floor_is_inclusive_and_negative_alphas_take_part():
    # 0.25 = 0.5 x 0.5 exactly (binary fractions): kept; a tie at alpha -1 and 1 goes to -1
    rows = [_tofu(-1.0, 0.5, 0.25), _tofu(0.0, 0.1, 0.5), _tofu(1.0, 0.5, 0.25), _tofu(2.0, 0.9, 0.2499)]
    assert select_alpha(rows, 0.5, TOFU.HEADLINE)[0] == -1.0 == _legacy_tofu_rule(rows, 0.5)


def test_tofu_selection_is_the_rule_it_always_was():
    rng = random.Random(0)
    for _ in range(300):
        alphas = sorted({0.0, *(rng.choice([-1.0, -0.5, 0.25, 0.5, 1.0, 2.0, 4.0]) for _ in range(rng.randint(1, 6)))})
        # values from small sets: ties in forget quality and utilities on the floor happen often
        fqs, mus = [0.0, 1e-8, 0.1, 0.4, 0.4, 1.0], [0.0, 0.45, 0.5, 0.6]
        rows = [_tofu(a, rng.choice(fqs), rng.choice(mus)) for a in alphas]
        rho = rng.choice([0.0, 0.5, 0.75, 0.9, 1.0])
        assert select_alpha(rows, rho, TOFU.HEADLINE)[0] == _legacy_tofu_rule(rows, rho)


def _muse_reference(rows, rho):
    """Independent of the code: sort the kept rows by (verbmem_f, knowmem_f, alpha), ascending."""
    floor = rho * next(r["knowmem_r"] for r in rows if r["alpha"] == 0.0)
    return sorted((r for r in rows if r["knowmem_r"] >= floor), key=lambda r: (r["verbmem_f"], r["knowmem_f"],
                                                                                r["alpha"]))[0]["alpha"]  # fmt: skip


def test_muse_hand_worked_lower_is_better_then_knowmem_then_smaller_alpha():
    # rho = 0.9, KnowMem_r(0) = 40 -> floor 36: alpha 2 (20) is out though it forgets most. VerbMem 10 ties
    # alphas 1, 1.25 and 1.5; KnowMem forget 30 ties 1.25 and 1.5; the smaller alpha, 1.25, wins.
    rows = [_muse(0.0, 60.0, 50.0, 40.0, -80.0), _muse(0.5, 30.0, 45.0, 38.0), _muse(1.0, 10.0, 35.0, 37.0),
            _muse(1.25, 10.0, 30.0, 37.0), _muse(1.5, 10.0, 30.0, 36.0), _muse(2.0, 0.0, 10.0, 20.0)]  # fmt: skip
    alpha, why = select_alpha(rows, 0.9, MUSE.HEADLINE)
    assert alpha == 1.25 == _muse_reference(rows, 0.9)
    assert why == (
        "alpha=1.25: lowest VerbMem forget 10.0000 (ties: lowest KnowMem forget, here 30.0000) among alphas with "
        "KnowMem retain >= 0.9 x 40.0000 (alpha=0)"
    )
    # VerbMem decides before KnowMem: alpha 0.5's KnowMem forget 5 does not beat VerbMem 10
    rows[1] = _muse(0.5, 30.0, 5.0, 38.0)
    assert select_alpha(rows, 0.9, MUSE.HEADLINE)[0] == 1.25
    assert select_alpha(rows, 0.0, MUSE.HEADLINE)[0] == 2.0


def test_muse_selection_matches_the_reference():
    rng = random.Random(1)
    for _ in range(300):
        alphas = sorted({0.0, *(rng.choice([-0.5, 0.25, 0.5, 1.0, 2.0]) for _ in range(rng.randint(1, 5)))})
        rows = [_muse(a, rng.choice([0.0, 5.0, 10.0]), rng.choice([0.0, 12.5, 30.0]), rng.choice([20.0, 36.0, 40.0]))
                for a in alphas]  # fmt: skip
        rho = rng.choice([0.0, 0.5, 0.9, 1.0])
        assert select_alpha(rows, rho, MUSE.HEADLINE)[0] == _muse_reference(rows, rho)


def test_rows_carry_the_suite_keys_tofu_as_before():
    assert list(_tofu(0.5, 0.3, 0.6)) == ["alpha", "forget_quality", "model_utility", "forget_rouge", "forget_prob",
                                          "model"]  # fmt: skip
    row = _muse(0.5, 1.0, 2.0, 3.0)
    assert row == {"alpha": 0.5, "verbmem_f": 1.0, "knowmem_f": 2.0, "knowmem_r": 3.0, "privleak": None,
                   "model": "m0.5"}  # fmt: skip


def test_a_missing_or_non_finite_selection_number_stops_the_sweep_in_one_line():
    with pytest.raises(RunError) as e:
        sweep_row(0.5, {"model_utility": 0.6, "forget_rouge": 0.1, "forget_prob": 0.2}, TOFU, "m")
    msg = str(e.value)
    assert "\n" not in msg and "alpha=0.5" in msg and "forget_quality" in msg and "--retain-log" in msg
    with pytest.raises(RunError, match="has no knowmem_r .KnowMem retain.*evaluation settings"):
        sweep_row(0.0, {"verbmem_f": 1.0, "knowmem_f": 2.0}, MUSE, "m")
    with pytest.raises(RunError, match="VerbMem forget .verbmem_f. of 'm' is nan, not a finite number"):
        sweep_row(2.0, {"verbmem_f": float("nan"), "knowmem_f": 2.0, "knowmem_r": 3.0}, MUSE, "m")
    # a detail is only reported: missing, it is None (a MUSE run without PrivLeak's reference)
    assert sweep_row(0.0, {"verbmem_f": 1.0, "knowmem_f": 2.0, "knowmem_r": 3.0}, MUSE, "m")["privleak"] is None


def test_tables_name_each_suites_columns():
    rows = [_tofu(0.0, 0.405, 0.7003, 0.1072, 0.5), _tofu(0.25, 0.00676, 0.62345, 0.2, 0.25)]
    assert SweepResult(0.9, 0.0, "r", rows).table() == (
        "| alpha | Forget Quality | Model Utility | Forget ROUGE-L | Forget Prob |\n|---|---|---|---|---|\n"
        "| 0 **(selected)** | 0.405 | 0.7003 | 0.1072 | 0.5000 |\n| 0.25 | 0.00676 | 0.6234 | 0.2000 | 0.2500 |\n"
    )
    rows = [_muse(0.0, 60.0, 50.0, 40.0, -80.0), _muse(1.0, 12.34567, 30.0, 37.0)]
    assert SweepResult(0.9, 1.0, "r", rows, suite="muse").table() == (
        "| alpha | VerbMem forget | KnowMem forget | KnowMem retain | PrivLeak (%) |\n|---|---|---|---|---|\n"
        "| 0 | 60.0000 | 50.0000 | 40.0000 | -80.0000 |\n| 1 **(selected)** | 12.3457 | 30.0000 | 37.0000 | - |\n"
    )


@pytest.mark.parametrize("suite", [TOFU, MUSE], ids=lambda s: s.NAME)
def test_the_plot_draws_each_suites_numbers(suite, tmp_path):
    rows = ([_tofu(0.0, 0.4, 0.7), _tofu(1.0, 0.0, 0.6)] if suite is TOFU  # FQ 0 on a log axis: clamped
            else [_muse(0.0, 60.0, 50.0, 40.0), _muse(1.0, 10.0, 30.0, 37.0)])  # fmt: skip
    forget, utility = selection_numbers(suite.HEADLINE)
    png = plot_uipe_curve(rows, 1.0, 0.9, tmp_path / "sweep.png", forget, utility)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run(tmp_path, *overrides):
    dump_config(load_config(None, list(overrides)), tmp_path / "config.yaml")
    return tmp_path


def test_tofu_needs_the_retain_log_before_anything_is_extrapolated(tmp_path):
    with pytest.raises(RunError) as e:
        sweep_retain_log(_run(tmp_path), None)
    msg = str(e.value)
    assert "\n" not in msg and "Forget Quality (forget_quality)" in msg and "--retain-log" in msg
    with pytest.raises(DataError, match="--retain-log: .*nope.json"):  # checked by the suite, named as given
        sweep_retain_log(tmp_path, str(tmp_path / "nope.json"))


def test_muse_sweeps_without_a_retain_log_and_checks_one_given(tmp_path):
    run = _run(tmp_path, "data.suite=muse")
    assert sweep_retain_log(run, None) is None  # VerbMem / KnowMem need no reference
    ref = {"privleak": privleak.privleak([2.0, 3.0], [3.0, 2.0], (0.5, "x"))}
    metric_log.save(tmp_path / "MUSE_EVAL.json", ref)
    got = sweep_retain_log(run, str(tmp_path / "MUSE_EVAL.json"))
    assert got["privleak"]["auc"] == json.loads((tmp_path / "MUSE_EVAL.json").read_text())["privleak"]["auc"]
    metric_log.save(tmp_path / "bare.json", {"forget_verbmem_ROUGE": metric_log.scalar(0.1)})  # no MIA part
    with pytest.raises(DataError, match="--retain-log=.*no 'privleak' or 'mia_min_k' entry"):
        sweep_retain_log(run, str(tmp_path / "bare.json"))
