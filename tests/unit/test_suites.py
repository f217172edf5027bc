"""Suites: the registry behind `data.suite`, the interface TOFU implements, its typed training sets and headline."""

import dataclasses

import pytest
import yaml

from dsunlearn.config import DataConfig, SyntheticConfig
from dsunlearn.config_io import config_to_dict, dump_config, load_config
from dsunlearn.errors import ConfigError
from dsunlearn.suites import NAMES, get_suite
from dsunlearn.suites.base import QA, SUMMARY_FILE, Headline, Suite, TrainingSet
from dsunlearn.suites.tofu import log as tofu_log
from dsunlearn.suites.tofu.data import eval_split_name, finetune_items, load_split
from dsunlearn.suites.tofu.suite import TofuSuite

DATA = DataConfig(
    synthetic=SyntheticConfig(n_authors=8, n_world_facts=6, n_real_authors=2),
    forget_split="forget10",
    retain_split="retain90",
)


def test_registry_gives_one_stateless_instance_per_name():
    suite = get_suite("tofu")
    assert isinstance(suite, TofuSuite) and isinstance(suite, Suite) and suite.NAME == "tofu"
    assert get_suite("tofu") is suite
    assert "tofu" in NAMES


def test_unknown_suite_refused_in_one_line_with_the_allowed_names():
    with pytest.raises(ConfigError) as e:
        get_suite("harmbench")
    msg = str(e.value)
    assert "\n" not in msg and "data.suite='harmbench'" in msg and ", ".join(NAMES) in msg


def test_config_key_selects_the_suite_and_accepts_exactly_the_registered_names():
    cfg = load_config()
    assert cfg.data.suite == "tofu"
    field = {f.name: f for f in dataclasses.fields(DataConfig)}["suite"]
    assert field.metadata["choices"] == NAMES and field.metadata["help"]
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.suite=nope"])
    msg = str(e.value)
    assert "\n" not in msg and "data.suite='nope'" in msg and ", ".join(NAMES) in msg


def test_written_config_holds_the_suite_and_an_older_one_without_it_reads_as_tofu(tmp_path):
    cfg = load_config("tiny_finetune")
    path = dump_config(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["data"]["suite"] == "tofu" and config_to_dict(cfg)["data"]["suite"] == "tofu"
    del data["data"]["suite"]  # a config.yaml written before suites existed
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data))
    assert load_config(str(tmp_path / "old.yaml")) == cfg


def test_training_sets_are_typed_and_are_the_configured_splits():
    suite = get_suite("tofu")
    forget, retain = (suite.training_set(DATA, role) for role in ("forget", "retain"))
    assert forget == TrainingSet("forget", "forget10", QA, load_split(DATA, "forget10"))
    assert retain == TrainingSet("retain", "retain90", QA, load_split(DATA, "retain90"))
    assert suite.finetune_set(DATA, "full") == TrainingSet("finetune", "full", QA, finetune_items(DATA, "full"))
    with pytest.raises(ValueError, match="kind"):
        TrainingSet("forget", "x", "images", [])
    with pytest.raises(ValueError, match="role"):
        TrainingSet("holdout", "x", QA, [])


def test_corpus_covers_training_and_evaluation_text():
    suite = get_suite("tofu")
    texts = set(suite.corpus(DATA))
    assert all(t for t in texts)
    for split in ["full", eval_split_name("forget", DATA.forget_split), eval_split_name("world_facts", "")]:
        for it in load_split(DATA, split):
            assert it["question"] in texts and it["answer"] in texts
            assert set(it.get("perturbed_answer", [])) <= texts
    assert set(suite.synthetic_data(DATA)) >= {"full", "forget10", "retain90", "forget10_perturbed"}


def test_headline_names_its_numbers_and_which_way_is_better():
    suite = get_suite("tofu")
    assert all(isinstance(h, Headline) and h.value is None for h in suite.HEADLINE)
    fq, mu = suite.headline({"forget_quality": 0.25, "model_utility": 0.5, "forget_rouge": 0.1})
    assert (fq.key, fq.value, fq.higher_is_better) == ("forget_quality", 0.25, True)
    assert (mu.key, mu.value, mu.higher_is_better) == ("model_utility", 0.5, True)
    assert [h.value for h in suite.headline({"model_utility": 0.5})] == [None, 0.5]  # no retain log: no FQ


def test_eval_files_are_what_an_evaluation_writes_or_a_copied_log_holds():
    files = get_suite("tofu").eval_files()
    assert SUMMARY_FILE in files and tofu_log.AGGREGATED_FILE in files and set(tofu_log.SPLITS) <= set(files)
    assert "TOFU_EVAL.json" in files  # the membership-inference part (open-unlearning's file name)
