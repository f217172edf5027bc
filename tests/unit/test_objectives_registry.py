"""The OBJECTIVES / REGULARIZERS registries the engine and the config read."""

import inspect

import pytest
import torch

from dsunlearn.config import ObjectiveConfig
from dsunlearn.errors import ConfigError
from dsunlearn.hyperparams import DATA_ARGS, PAIR_DATA_ARGS
from dsunlearn.objectives import (
    OBJECTIVES,
    PAIR,
    REGULARIZERS,
    LossTerms,
    ObjectiveSpec,
    dpo,
    get_objective,
    get_regularizer,
    npo,
    undial,
)


def test_names_and_reference_requirements():
    names = ["ga", "graddiff", "npo", "simnpo", "wga", "tnpo", "wtnpo", "satimp", "undial", "idk_nll", "dpo", "rmu"]
    assert list(OBJECTIVES) == names  # the order of the error messages and the docs tables
    needs_ref = {name for name, spec in OBJECTIVES.items() if spec.needs_reference}
    assert needs_ref == {"npo", "tnpo", "wtnpo", "undial", "dpo"}
    # what the engine passes first, read from the signature: UNDIAL needs the whole vocabulary distribution
    assert {name for name, spec in OBJECTIVES.items() if spec.inputs == "logits"} == {"undial"}
    assert OBJECTIVES["undial"].needs_reference_logits and not OBJECTIVES["undial"].needs_reference_logprobs
    for name in ("npo", "dpo"):  # dpo: theta_o's log-probs of both answers, precomputed
        assert OBJECTIVES[name].needs_reference_logprobs and not OBJECTIVES[name].needs_reference_logits
    # what each objective's log-probs score: the forget answers, or refusal answers (idk_nll), or both (dpo)
    assert {name: spec.answers for name, spec in OBJECTIVES.items() if spec.answers != "forget"} == {
        "idk_nll": "alternate",
        "dpo": "pair",
    }
    assert REGULARIZERS["kl"].needs_reference and not REGULARIZERS["nll"].needs_reference
    assert REGULARIZERS["kl"].inputs == "logits" and REGULARIZERS["nll"].inputs == "logprobs"
    assert dict(REGULARIZERS["kl"].defaults) == {"positions": "answer"}


def test_defaults_follow_methods_and_the_function_signatures():
    expected = {
        "ga": {},
        "graddiff": {},
        "npo": {"beta": 0.1},
        "simnpo": {"beta": 4.5, "delta": 0.0},
        "wga": {"alpha": 1.0},
        "tnpo": {"beta": 4.0, "eps": 1e-5},
        "wtnpo": {"alpha": 1.5, "beta": 4.0, "eps": 1e-5},
        "satimp": {"beta1": 5.0, "beta2": 1.0},  # open-unlearning's SatImp
        "undial": {"beta": 10.0, "positions": "answer"},  # the paper's beta (and open-unlearning's UNDIAL.yaml)
        "idk_nll": {},
        "dpo": {"beta": 0.1},  # open-unlearning's configs/trainer/DPO.yaml
        # the WMDP paper's Zephyr-7B settings: layer 7, c = 6.5, layers 5-7's down_proj
        "rmu": {"layer": 7, "steering_coeff": 6.5, "train_layers": 3, "train_params": r"mlp\.down_proj\.weight"},
    }
    for name, spec in OBJECTIVES.items():
        assert dict(spec.defaults) == expected[name], name
        params = inspect.signature(spec.fn).parameters
        data_args = PAIR_DATA_ARGS if spec.answers == PAIR else DATA_ARGS[spec.inputs]
        assert tuple(params)[: len(data_args)] == data_args, name
        sig_defaults = {k: p.default for k, p in params.items() if k not in data_args}
        assert sig_defaults == expected[name], name
        assert spec.paper.startswith("https://arxiv.org/abs/"), name


def test_retain_defaults():
    # GradDiff's lambda = 1 is the config's objective.lambda default (the spec's retain_weight was never read).
    assert OBJECTIVES["graddiff"].retain_loss == "nll" and ObjectiveConfig().lambda_ == 1.0
    assert OBJECTIVES["rmu"].retain_loss == "embed_diff"  # open-unlearning's RMU: retain_loss_type EMBED_DIFF
    assert all(spec.retain_loss is None for name, spec in OBJECTIVES.items() if name not in ("graddiff", "rmu"))


def test_every_spec_runs_with_the_uniform_call_and_declares_its_unit():
    g = torch.Generator().manual_seed(0)
    logp = torch.log(torch.rand(2, 5, generator=g, dtype=torch.float64))
    ref = torch.log(torch.rand(2, 5, generator=g, dtype=torch.float64))
    mask = torch.ones(2, 5, dtype=torch.bool)
    logits, ref_logits = (2 * torch.randn(2, 6, 7, generator=g, dtype=torch.float64) for _ in range(2))
    labels = torch.randint(0, 7, (2, 6), generator=g)
    hidden, direction = torch.randn(2, 6, 4, generator=g, dtype=torch.float64), torch.full((4,), 0.5)
    for spec in OBJECTIVES.values():
        if spec.inputs == "hidden":
            out = spec.fn(hidden, direction, labels, **spec.resolve())
        elif spec.inputs == "logits":
            out = spec.fn(logits, ref_logits if spec.needs_reference else None, labels, **spec.resolve())
        else:
            args = (logp, mask, ref if spec.needs_reference else None)
            out = spec.fn(*args, *(args if spec.answers == PAIR else ()), **spec.resolve())
        assert isinstance(out, LossTerms) and out.unit == spec.unit, spec.name


def test_a_spec_declares_the_answers_its_function_takes():
    with pytest.raises(TypeError, match="answers must be one of"):
        ObjectiveSpec("x", npo, True, answers="refusal")
    with pytest.raises(TypeError, match="does not take"):
        ObjectiveSpec("x", npo, True, unit="sequence", answers="pair")
    with pytest.raises(TypeError, match="answers='forget' but its function takes"):
        ObjectiveSpec("x", dpo, True, unit="sequence")
    with pytest.raises(TypeError, match="unit='sequence'"):
        ObjectiveSpec("x", dpo, True, answers="pair")
    # a logits objective's reference runs on the forget batch: it cannot read the refusals instead
    with pytest.raises(TypeError, match="a logits objective reads the forget batch"):
        ObjectiveSpec("x", undial, True, answers="alternate")


def test_unknown_names_raise_config_error_listing_allowed_names():
    assert get_objective("npo") is OBJECTIVES["npo"]
    with pytest.raises(ConfigError) as err:
        get_objective("ceu")
    msg = str(err.value)
    assert "\n" not in msg and "'ceu'" in msg
    assert all(name in msg for name in OBJECTIVES)
    with pytest.raises(ConfigError, match="nll, kl, embed_diff"):
        get_regularizer("l2")
    assert get_regularizer("kl") is REGULARIZERS["kl"]


def test_resolve_merges_overrides_and_rejects_unknown_keys():
    assert get_objective("wtnpo").resolve({"beta": 2.0}) == {"alpha": 1.5, "beta": 2.0, "eps": 1e-5}
    assert dict(get_objective("wtnpo").defaults) == {"alpha": 1.5, "beta": 4.0, "eps": 1e-5}  # defaults untouched
    with pytest.raises(ConfigError, match=r"objective\.gamma: .*'npo'.*allowed: beta"):
        get_objective("npo").resolve({"gamma": 1.0})
    # None means "use the default" (the config's null), also for keys the objective does not take.
    assert get_objective("npo").resolve({"beta": None, "alpha": None, "delta": None}) == {"beta": 0.1}
    with pytest.raises(ConfigError, match="allowed: none"):
        get_objective("ga").resolve({"alpha": 1.0})
    assert get_regularizer("kl").resolve({"positions": "all"}) == {"positions": "all"}
