"""Every numeric config field has a bound; the bounded YAML loader refuses alias bombs, deep nesting and
numbers too long to read, and keeps ordinary anchors working; error messages never print unbounded values."""

from __future__ import annotations

import time

import pytest
import yaml

from dsunlearn import config_bounds as B
from dsunlearn.config import RunConfig
from dsunlearn.config_io import MAX_NODES, load_config, parse_overrides, safe_load_bounded
from dsunlearn.errors import ConfigError


def test_every_numeric_field_has_a_bound_and_the_defaults_are_inside():
    fields = B.numeric_fields(RunConfig())
    assert len(fields) >= 30  # ints and floats of every section, bools excluded
    missing = sorted(set(fields) - set(B.BOUNDS))
    assert not missing, f"numeric config fields without a bound in config_bounds.BOUNDS: {missing}"
    assert not sorted(set(B.BOUNDS) - set(fields)), "bounds of fields that no longer exist"
    load_config()  # the defaults validate


@pytest.mark.parametrize(
    "override, words",
    [
        ("engine.micro_batch_size=1000000000", ("engine.micro_batch_size=1000000000", "[1, 65536]")),
        ("run.seed=100000000000000", ("run.seed=100000000000000", "[0, 4294967295]")),
        ("run.seed=-1", ("run.seed=-1", "[0, 4294967295]")),
        ("data.synthetic.seed=4294967296", ("data.synthetic.seed=4294967296",)),
        ("eval.max_new_tokens=1000000000", ("eval.max_new_tokens=1000000000", "1048576")),
        ("engine.max_steps=1000000000000", ("engine.max_steps=1000000000000", "100000000")),
        ("objective.gamma=1e7", ("objective.gamma=10000000.0", "1e+06")),
        ("objective.beta=1e-9", ("objective.beta=1e-09",)),
        ("data.synthetic.n_perturbed=6", ("data.synthetic.n_perturbed=6", "[1, 5]")),
        ("model.tiny.num_heads=0", ("model.tiny.num_heads=0", "[1, 1024]")),
        ("model.tiny.num_heads=5", ("num_heads=5", "does not divide", "hidden_size=192")),
        ("eval.mia_k=0", ("eval.mia_k=0.0", "(0, 1]")),  # Min-K% of no token is no score
        ("eval.mia_k=1.5", ("eval.mia_k=1.5", "(0, 1]")),
        ("eval.mia_k=-1e-9", ("eval.mia_k=-1e-09", "(0, 1]")),
    ],
)
def test_out_of_bound_values_are_refused_naming_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert all(w in str(e.value) for w in words), str(e.value)


def test_mia_k_takes_any_fraction_up_to_one():
    assert load_config(None, ["eval.mia_k=1"]).eval.mia_k == 1.0
    assert load_config(None, ["eval.mia_k=1e-6"]).eval.mia_k == 1e-6
    assert load_config().eval.mia_k == 0.4 and load_config().eval.mia is True  # open-unlearning's TOFU k


def test_tiny_head_width_must_be_even():
    with pytest.raises(ConfigError, match="= 3 per head, which is odd"):
        load_config(None, ["model.tiny.hidden_size=24", "model.tiny.num_heads=8"])


def test_huge_numbers_and_values_are_never_printed_whole():
    with pytest.raises(ConfigError, match="more than 4300 digits") as e:
        load_config(None, ["run.seed=1" + "0" * 5000])
    assert len(str(e.value)) < 300
    assert B.short_repr(10**5000).startswith("<an integer of about 5000 digits")
    assert B.short_repr(list(range(10**6))) == "<a list of 1000000 items>"
    assert len(B.short_repr("x" * 10**7)) <= 60
    with pytest.raises(ConfigError) as e:  # a long string where an int belongs: the message stays short
        load_config(None, ["engine.max_steps=" + "x" * 100_000])
    assert len(str(e.value)) < 400


def _bomb(levels: int = 9) -> str:
    lv = ["&a [" + ", ".join(["lol"] * 9) + "]"]
    names = "abcdefghijk"[:levels]
    lv += [f"&{k} [" + ", ".join([f"*{p}"] * 9) + "]" for p, k in zip(names, names[1:], strict=False)]
    return "objective:\n  name: [" + ", ".join(lv) + "]\n"


def test_alias_bomb_is_refused_fast_in_a_file_and_an_override(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(_bomb())
    assert len(f.read_bytes()) < 420
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(str(f))
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_overrides(["objective.name=" + _bomb().split("name: ", 1)[1].strip()])
    assert time.perf_counter() - t0 < 2.0


def test_alias_limits_count_and_expanded_size():
    # 4 levels of 9: 6561 leaves, allowed (under MAX_NODES); 6 levels: 531441 leaves, refused
    assert len(safe_load_bounded(_bomb(4), "x")["objective"]["name"][3]) == 9
    with pytest.raises(ConfigError, match=f"more than {MAX_NODES} values"):
        safe_load_bounded(_bomb(6), "x")
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * 200) + "]\n"  # cheap, but more aliases than any config needs
    with pytest.raises(ConfigError, match="more than 100 YAML aliases"):
        safe_load_bounded(many, "x")


def test_ordinary_anchors_still_load(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("engine: &e {lr: 2.0e-4, max_steps: 3}\nrun: {seed: 7}\n")
    cfg = load_config(str(f))
    assert cfg.engine.lr == 2e-4 and cfg.engine.max_steps == 3 and cfg.run.seed == 7
    assert safe_load_bounded("x: &v [1, 2]\ny: *v\n", "t") == yaml.safe_load("x: &v [1, 2]\ny: *v\n")


def test_deep_nesting_and_bom(tmp_path):
    with pytest.raises(ConfigError, match="nested too deeply"):
        safe_load_bounded("[" * 50_000 + "]" * 50_000, "deep.yaml")
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbfrun: {seed: 3}\n")  # UTF-8 with a byte-order mark (Windows editors)
    assert load_config(str(f)).run.seed == 3
    f.write_bytes("run: {seed: 3}\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="not a UTF-8 text file; save it as UTF-8"):
        load_config(str(f))


def test_generation_fits_the_context():
    e = RunConfig().eval
    B.check_generation_fits(e, None, "m")  # no context length known: nothing to check
    e.max_length, e.max_new_tokens = 128, None
    B.check_generation_fits(e, 128, "m")
    e.max_length = 200
    with pytest.raises(ConfigError, match="eval.max_length=200 .*max_position_embeddings=128"):
        B.check_generation_fits(e, 128, "m")
    e.max_new_tokens = 64  # the total cap is over the context, but the new-token cap bounds the generation
    B.check_generation_fits(e, 128, "m")
    e.max_new_tokens = 128
    with pytest.raises(ConfigError, match="eval.max_new_tokens <= 127"):
        B.check_generation_fits(e, 128, "m")
