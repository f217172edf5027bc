"""The hub loaders (data.source=hub) through the real `datasets.load_dataset`, offline: a dataset repository in
the hub's layout (a README whose YAML header names each config's split files) on local disk stands in for
locuslab/TOFU and muse-bench/MUSE-News, so the config and split names, the old-name fallback and the errors
are the ones a user with the hub meets. Nothing is downloaded (HF_DATASETS_OFFLINE)."""

from __future__ import annotations

import json

import pytest

from dsunlearn.config_io import load_config
from dsunlearn.errors import DataError
from dsunlearn.suites.muse import data as muse_data
from dsunlearn.suites.tofu import data as tofu_data


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def _repo(root, configs: dict[str, dict[str, list[dict]]]):
    """A dataset repository: <config>/<split>.jsonl files and the README header that maps them."""
    header = ["---", "configs:"]
    for config, splits in configs.items():
        header += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            f = root / config / f"{split}.jsonl"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            header += [f"  - split: {split}", f"    path: {config}/{split}.jsonl"]
    (root / "README.md").write_text("\n".join(header + ["---", ""]), encoding="utf-8")
    return root


def test_tofu_hub_split_is_a_config_whose_train_split_is_read(tmp_path):
    items = [{"question": "Who wrote Q?", "answer": "A. Author."}, {"question": "When?", "answer": "In 1999."}]
    repo = _repo(tmp_path / "TOFU", {"forget01": {"train": items}})
    cfg = load_config(None, ["data.source=hub", f"data.hub_name={repo}", "data.forget_split=forget01"]).data
    assert tofu_data.load_split(cfg, "forget01") == items
    with pytest.raises(DataError, match=r"could not load .*config 'forget05' from the hub"):
        tofu_data.load_split(cfg, "forget05")


def test_muse_hub_current_and_old_split_names(tmp_path):
    docs = [{"text": "An article about the fictional harbour of Veltra."}]
    qa = [{"question": "Which harbour?", "answer": "Veltra"}]
    repo = _repo(tmp_path / "MUSE-News", {
        "raw": {"forget": docs, "retain1": docs},
        "knowmem": {"forget_qa": qa, "retain2_qa": qa},  # an older revision's name of retain_qa
    })  # fmt: skip
    cfg = load_config(None, ["data.suite=muse", "data.source=hub", f"data.hub_name={repo}"]).data
    assert muse_data.load(cfg, "raw/forget") == docs
    assert muse_data.load(cfg, "knowmem/forget_qa") == qa
    assert muse_data.load(cfg, "knowmem/retain_qa") == qa  # fell back to retain2_qa
    with pytest.raises(DataError, match=r"config 'privleak' split 'forget' at revision 'main'") as e:
        muse_data.load(cfg, "privleak/forget")
    assert "\n" not in str(e.value)
