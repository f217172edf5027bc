"""Config: YAML + dotted overrides, one-line errors naming the key, resolved dump that round-trips."""

import pytest
import yaml

from dsunlearn.config_io import config_hash, dump_config, load_config, parse_overrides, shipped_configs
from dsunlearn.errors import ConfigError


def test_defaults_validate_and_resolve_retain_split():
    cfg = load_config()
    assert cfg.data.forget_split == "forget10" and cfg.data.retain_split == "retain90"
    assert load_config(None, ["data.forget_split=forget01"]).data.retain_split == "retain99"


def test_overrides_types_and_lambda_alias():
    cfg = load_config(None, ["objective.beta=0.2", "engine.lr=1e-5", "objective.lambda=0.5", "geometry.gru=true"])
    assert cfg.objective.params["beta"] == 0.2 and cfg.engine.lr == 1e-5 and cfg.objective.lambda_ == 0.5
    assert cfg.geometry.gru is True
    assert isinstance(load_config(None, ["engine.lr=1"]).engine.lr, float)  # int accepted for a float
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


@pytest.mark.parametrize(
    "override, words",
    [
        (["objective.bta=1"], ["unknown config key 'objective.bta'", "did you mean 'beta'"]),
        (["enigne.lr=1"], ["unknown config key 'enigne'", "engine"]),
        (["engine.lr=-1"], ["engine.lr", "> 0"]),
        (["engine.lr=0"], ["engine.lr", "> 0"]),
        (["engine.lr=.nan"], ["engine.lr", "finite"]),
        (["engine.lr=.inf"], ["engine.lr", "finite"]),
        (["objective.gamma=-0.5"], ["objective.gamma", ">= 0"]),
        (["objective.beta=0"], ["objective.beta", "> 0"]),
        (["objective.alpha=.nan"], ["objective.alpha", "finite"]),
        (["objective.name=foo"], ["objective.name='foo'", "ga, graddiff, npo"]),
        (["engine.zero_stage=two"], ["engine.zero_stage", "expected int"]),
        (["engine.zero_stage=5"], ["engine.zero_stage=5", "0, 1, 2, 3"]),
        (["geometry.gru=maybe"], ["geometry.gru", "expected bool"]),
        (["engine.micro_batch_size=0"], ["engine.micro_batch_size", ">= 1"]),
        (["geometry.gru_ema=1.5"], ["geometry.gru_ema", "(0, 1]"]),
        (["geometry.gru_project=all"], ["geometry.gru_project='all'", "forget, combined"]),
        (["geometry.gru_ema_from=retain"], ["geometry.gru_ema_from='retain'", "nll, kl"]),
        (["geometry.gru_cos_clip=0.5"], ["geometry.gru_cos_clip=0.5", "[-1, 0)", "null"]),
        (["geometry.gru_cos_clip=0"], ["geometry.gru_cos_clip=0.0", "[-1, 0)"]),
        (["geometry.gru_cos_clip=-1.5"], ["geometry.gru_cos_clip=-1.5", "[-1, 0)"]),
        (["data.source=local"], ["data.path"]),
        (["data.suite=harmbench"], ["data.suite='harmbench'", "choose one of: tofu, muse, wmdp"]),
        (["data.suite=wmdp", "data.forget_split=forget10"], ["data.forget_split='forget10'", "cyber-forget"]),
        (
            ["data.suite=muse", "data.forget_split=forget10"],
            ["data.forget_split='forget10'", "data.suite=muse", "forget"],
        ),
        (["noequals"], ["not key=value"]),
    ],
)
def test_bad_values_raise_one_line_config_error(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(lst))
    sec = tmp_path / "sec.yaml"
    sec.write_text("engine: 3\n")
    with pytest.raises(ConfigError, match="'engine' must be a mapping"):
        load_config(str(sec))


def test_dump_round_trips_and_hash(tmp_path):
    cfg = load_config("tiny_finetune", ["objective.lambda=0.25", "engine.lr=3e-4"])
    path = dump_config(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["objective"]["lambda"] == 0.25 and "lambda_" not in data["objective"]
    again = load_config(str(path))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config("tiny_finetune", ["engine.lr=1e-4"])) != config_hash(cfg)


# The keys of a TOFU config as dsunlearn wrote it before the GRU variant keys, the suites' sections and every key
# since (frozen here on purpose: a key added later that is not left out of the identity at its default fails
# the test below, instead of silently refusing the --resume of every older run).
OLD_KEYS = {
    "model": ["dtype", "name_or_path", "tiny", "tokenizer", "trust_remote_code"],
    "data": ["date_string", "forget_split", "hub_name", "idk_file", "max_length", "path", "prompt_format",
             "retain_split", "source", "synthetic", "system_prompt", "tofu_official", "train_utility_sets",
             "truncation"],
    "objective": ["beta", "gamma", "kl_positions", "lambda", "name", "retain_loss"],
    "engine": ["ds_config", "epochs", "global_batch_size", "grad_accum_steps", "grad_clip", "lr", "max_steps",
               "micro_batch_size", "optimizer", "precision", "scheduler", "warmup_ratio", "weight_decay",
               "zero_stage"],
    "geometry": ["geffect_every", "gru", "gru_ema"],
    "eval": ["at_end", "batch_size", "every_steps", "max_items", "max_length", "max_new_tokens", "mia", "mia_k",
             "retain_log"],
    "tracking": ["entity", "log_every", "log_model", "mode", "project", "wandb"],
    "run": ["finetune_targets", "save_every", "seed"],
}  # fmt: skip
LATER = ["geometry.gru_project=combined", "geometry.gru_ema_from=kl", "geometry.gru_cos_clip=-0.5",
         "eval.length_batches=true", "model.adapter.type=lora"]  # fmt: skip
OTHER_SUITES = ["data.wmdp.acc_norm=true", "data.muse.privleak_k=0.3"]  # sections a TOFU run never reads


def test_later_keys_at_their_defaults_keep_the_identity_of_runs_from_before_them():
    """--resume compares the config hash of `rundir._identity`. A TOFU run started before the keys added since
    (GRU's variants, eval.length_batches, model.adapter, the MUSE and WMDP sections) hashed its config without
    them: at their defaults (that behaviour) they are left out, any other value makes a different run."""
    import hashlib

    from dsunlearn import rundir
    from dsunlearn.config_io import config_to_dict

    cfg = load_config("tiny_npo_gru")
    now = config_to_dict(cfg)
    before = {section: {k: now[section][k] for k in keys} for section, keys in OLD_KEYS.items()}
    old_hash = hashlib.sha256(yaml.safe_dump(before, sort_keys=True).encode()).hexdigest()[:16]
    assert rundir._identity(cfg) == old_hash
    hashes = {rundir._identity(load_config("tiny_npo_gru", [v])) for v in LATER}
    assert len(hashes) == len(LATER) and old_hash not in hashes
    assert {rundir._identity(load_config("tiny_npo_gru", [v])) for v in OTHER_SUITES} == {old_hash}
    # ... but the suite's own section is part of its runs' identity
    muse = load_config("tiny_muse_unlearn")
    assert rundir._identity(muse) != rundir._identity(load_config("tiny_muse_unlearn", ["data.muse.privleak_k=0.3"]))
    assert rundir._identity(muse) == rundir._identity(load_config("tiny_muse_unlearn", ["data.wmdp.acc_norm=true"]))


def test_every_shipped_config_loads():
    names = shipped_configs()
    assert "tiny_finetune" in names
    for name in names:
        load_config(name)
