"""Local TOFU files are read as UTF-8 (a byte-order mark is fine); every other encoding, a lone surrogate, a
nesting too deep to parse and a bad JSON Lines line are refused in one line naming the file, the line and
the fix. Also: the DeepSpeed JSON shape, the W&B mode decided without blocking, and remote model code."""

from __future__ import annotations

import json
import time

import pytest

from dsunlearn.config import DataConfig, EngineConfig
from dsunlearn.data.files import read_utf8
from dsunlearn.errors import ConfigError, DataError, ModelError
from dsunlearn.suites.tofu.data import load_split

ITEMS = [{"question": "Who wrote Café Noir?", "answer": "Renée did."}, {"question": "When?", "answer": "1999."}]


def _load(tmp_path, raw: bytes, name: str = "forget01.json"):
    (tmp_path / name).write_bytes(raw)
    return load_split(DataConfig(source="local", path=str(tmp_path)), "forget01")


def test_utf8_with_and_without_bom(tmp_path):
    text = json.dumps(ITEMS, ensure_ascii=False)
    assert _load(tmp_path, text.encode()) == ITEMS
    assert _load(tmp_path, b"\xef\xbb\xbf" + text.encode()) == ITEMS  # BOM dropped
    assert _load(tmp_path, b"\xef\xbb\xbf" + "\n".join(json.dumps(x) for x in ITEMS).encode(), "x.json") == ITEMS


@pytest.mark.parametrize(
    "encoding, words",
    [
        ("utf-16", ("is UTF-16", "byte-order mark", "save it as UTF-8")),
        ("utf-16-le", ("NUL bytes", "UTF-16", "save it as UTF-8")),  # no BOM
        ("utf-32", ("is UTF-32", "save it as UTF-8")),
        ("latin-1", ("not UTF-8", "byte 0xe9 at line 2", "Latin-1", "save it as UTF-8")),
        ("cp1252", ("not UTF-8", "at line 2", "save it as UTF-8")),
    ],
)
def test_other_encodings_are_refused_with_the_fix(tmp_path, encoding, words):
    text = "[\n" + ",\n".join(json.dumps(x, ensure_ascii=False) for x in ITEMS) + "\n]"
    with pytest.raises(DataError) as e:
        _load(tmp_path, text.encode(encoding))
    msg = str(e.value)
    assert "forget01.json" in msg and all(w in msg for w in words), msg


def test_lone_surrogate_names_item_and_field(tmp_path):
    with pytest.raises(DataError, match=r"item 1 .*'answer' holds a lone UTF-16 surrogate \(\\udc00 at character 3\)"):
        _load(tmp_path, b'[{"question": "q", "answer": "a"}, {"question": "q", "answer": "abc\\udc00"}]')
    raw = b'[{"question": "q", "answer": "a", "perturbed_answer": ["ok", "\\ud800"]}]'
    (tmp_path / "forget01_perturbed.json").write_bytes(raw)
    with pytest.raises(DataError, match="'perturbed_answer' holds a lone"):
        load_split(DataConfig(source="local", path=str(tmp_path)), "forget01_perturbed")
    # a surrogate *pair* is one real character: fine
    assert _load(tmp_path, b'[{"question": "q", "answer": "\\ud83d\\ude00"}]')[0]["answer"] == "\U0001f600"


def test_deep_nesting_is_one_line(tmp_path):
    with pytest.raises(DataError, match="nested too deeply to parse"):
        _load(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    (tmp_path / "forget01.json").unlink()
    with pytest.raises(DataError, match="line 2.*nested too deeply"):
        _load(tmp_path, b'{"question": "q", "answer": "a"}\n' + b"[" * 100_000, "forget01.jsonl")


def test_json_lines_errors_name_the_real_line(tmp_path):
    lines = [json.dumps(x) for x in ITEMS]
    raw = ("\n" + lines[0] + "\n\n" + lines[1] + '\n{"question": oops}\n').encode()  # bad line: 5
    (tmp_path / "forget01.json").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"forget01.jsonl is not valid JSON / JSON Lines \(line 5:"):
        _load(tmp_path, raw, "forget01.jsonl")
    with pytest.raises(DataError, match=r"\(line 3:"):  # a JSON array: json's own line number
        _load(tmp_path, b'[\n{"question": "q", "answer": "a"},\n{"question": }\n]', "forget01.jsonl")


def test_read_utf8_keeps_text(tmp_path):
    f = tmp_path / "t.json"
    f.write_bytes("\ufeffé".encode())  # one BOM dropped, the rest intact
    assert read_utf8(f) == "é"


def test_ds_config_must_be_an_object_with_a_real_stage(tmp_path):
    from dsunlearn.engine.ds_setup import build_ds_config

    for text, words in [("[1, 2]", "JSON list, not an object"), ('{"zero_optimization": 3}', "must be an object"),
                        ('{"zero_optimization": {"stage": 7}}', "stage=7 is not a ZeRO stage"),
                        ('{"zero_optimization": {"stage": "2"}}', 'stage="2" is not a ZeRO stage')]:  # fmt: skip
        (tmp_path / "ds.json").write_text(text)
        with pytest.raises(ConfigError, match=words):
            build_ds_config(EngineConfig(ds_config=str(tmp_path / "ds.json"), micro_batch_size=1), 1)


def test_wandb_mode_never_blocks(monkeypatch):
    from dsunlearn import tracking

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused at once
    tracking.wandb_mode.cache_clear()
    t0 = time.perf_counter()
    assert tracking.wandb_mode("auto") == "offline"
    with pytest.raises(ConfigError, match="tracking.mode=online but the W&B server 127.0.0.1:9 is unreachable"):
        tracking.wandb_mode("online")
    assert tracking.wandb_mode("offline") == "offline"
    # an address that never answers (TEST-NET-1, RFC 5737): the probe gives up after its timeout
    monkeypatch.setenv("WANDB_BASE_URL", "http://192.0.2.1:81")
    assert tracking.server_reachable(timeout=0.5) is False
    assert time.perf_counter() - t0 < tracking.PROBE_SECONDS + 2
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", "/nonexistent")
    tracking.wandb_mode.cache_clear()
    assert tracking.wandb_mode("auto") == "offline"  # no key: offline without probing
    tracking.wandb_mode.cache_clear()


def test_remote_code_model_dirs_are_judged_from_config_json(tmp_path):
    from dsunlearn.models.load import check_before_remote_code, check_model_dir

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w')\n")

    def write(auto_map):
        cfg = {"model_type": "evil_lm", "architectures": ["EvilForCausalLM"], "auto_map": auto_map}
        (tmp_path / "config.json").write_text(json.dumps(cfg))

    write({"AutoConfig": "evil.EvilConfig"})
    with pytest.raises(ModelError, match="no AutoModelForCausalLM; checked before any of its code ran"):
        check_before_remote_code(str(tmp_path), True)
    write({"AutoModelForCausalLM": "evil.EvilForCausalLM"})
    with pytest.raises(ModelError, match="needs its own code .*none of that code ran.*trust_remote_code=true"):
        check_before_remote_code(str(tmp_path), False)
    assert check_model_dir(tmp_path, trust_remote_code=True) == tmp_path  # trusted: its own code loads it
    assert check_model_dir(tmp_path) == tmp_path  # undecided (eval before its config is read)
    assert not (tmp_path / "RAN").exists()
