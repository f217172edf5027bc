"""Bad values and bad bytes, typed at the CLI: unbounded numbers, alias bombs, undecodable or odd data files,
malformed DeepSpeed JSON, W&B without a network, a bad retain log, model code that must not run.

Same contract and pattern as `test_bad_input.py` (whose helpers this reuses): each case runs `python -m
dsunlearn ...` in a subprocess, two at a time, and must end with exactly one `dsunlearn <cmd>: error:` line
(what, where, how to fix), exit 2, no traceback, its output dir absent; and the whole tree the cases read
(data, configs, models, the remote-code "payload") is byte for byte unchanged afterwards. Every case fails
before any training. docs/bad_input.md lists them with their messages (sections 1, 3, 5, 10).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from test_bad_input import (
    assert_refused_in_root,
    assert_root_and_model_unchanged,
    cli_env,
    local_data,
    qa,
    root_cases,
    selected_cases,
    tiny_model,  # noqa: F401  (fixture)
    unlearn_args,
    write_tofu_dir,
)

pytestmark = pytest.mark.slow  # ~50 s on 2 cores: 20 subprocesses, two at a time

# 9 levels of 9 aliases under one key: ~400 bytes that stand for 9^9 (387 million) strings once expanded.
_LEVELS = ["&a [" + ", ".join(["lol"] * 9) + "]"] + [
    f"&{k} [" + ", ".join([f"*{p}"] * 9) + "]" for p, k in zip("abcdefgh", "bcdefghi", strict=True)
]
ALIAS_BOMB = "objective:\n  name: [" + ", ".join(_LEVELS) + "]\n"


class Case(NamedTuple):
    argv: list
    words: tuple  # key words of the message: what, where, how to fix
    env: dict | None = None


def _remote_code_model(m: Path, root: Path, name: str, auto_map: dict) -> Path:
    """A copy of the tiny model whose config.json names its own code (auto_map) of an unknown model type;
    the code, if it ever ran, would write root/<name>.RAN."""
    d = root / name
    shutil.copytree(m, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type=f"{name}_lm", auto_map=auto_map, architectures=["EvilForCausalLM"])
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "evil.py").write_text(f"open({str(root / (name + '.RAN'))!r}, 'w').write('remote code ran')\n")
    return d


def _cases(m: Path, root: Path) -> dict[str, Case]:
    def out(name):
        return root / "out" / name

    def u(name, *extra):
        return unlearn_args(m, out(name), *extra)

    (root / "bomb.yaml").write_text(ALIAS_BOMB)
    good = [qa(i) for i in range(4)]
    text = json.dumps(good, ensure_ascii=False)

    def data_dir(name: str, raw: bytes, file: str = "forget01.json") -> Path:
        d = write_tofu_dir(root / name, forget01=None)
        (d / file).write_bytes(raw)
        return d

    latin1 = [{"question": "Who wrote Café Noir?", "answer": "Renée did."}, *good]
    d = {
        "utf16": data_dir("d_utf16", text.encode("utf-16")),
        "latin1": data_dir(
            "d_latin1",
            ("[\n" + ",\n".join(json.dumps(x, ensure_ascii=False) for x in latin1) + "\n]").encode("latin-1"),
        ),
        "surrogate": data_dir("d_surrogate", b'[{"question": "Who\\ud800?", "answer": "Nobody."}]'),
        "deep": data_dir("d_deep", b"[" * 100_000 + b"]" * 100_000),
        "jsonl": data_dir(
            "d_jsonl",
            ("\n".join(json.dumps(x) for x in good[:2]) + '\n{"question": "Why?",\n').encode(),
            "forget01.jsonl",
        ),
        "bom": data_dir("d_bom", b"\xef\xbb\xbf" + text.encode()),
    }
    (root / "ds_list.json").write_text("[1, 2]")
    (root / "ds_stage.json").write_text('{"zero_optimization": {"stage": 7}}')
    (root / "retain_garbled.json").write_text('{"eval_log_forget.json": {"avg_gt_loss": 3}}')
    not_lm = _remote_code_model(m, root, "remote_not_lm", {"AutoConfig": "evil.EvilConfig"})
    needs_code = _remote_code_model(m, root, "remote_lm", {"AutoModelForCausalLM": "evil.EvilForCausalLM"})
    no_wandb = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    return {
        # 8. unbounded values
        "bound-micro-batch": Case(u("bound-micro-batch", "engine.micro_batch_size=1000000000"),
                                  ("engine.micro_batch_size=1000000000", "out of range", "65536")),
        "bound-seed": Case(u("bound-seed", "run.seed=100000000000000"),
                           ("run.seed=100000000000000", "4294967295", "run.seed=<value>")),
        "yaml-alias-bomb": Case(["unlearn", "--config", root / "bomb.yaml", f"run.output_dir={out('yaml-alias-bomb')}"],
                                ("bomb.yaml", "aliases", "alias bomb", "write the values out")),
        "batch-over-dataset": Case(
            u("batch-over-dataset", *local_data(d["bom"]), "engine.micro_batch_size=8", "engine.global_batch_size=8"),
            ("global batch of 8", "4 items", "forget split 'forget01'", "at most 4"),
        ),  # data saved with a UTF-8 BOM: read fine, then refused for the batch
        "generation-past-context": Case(u("generation-past-context", "eval.at_end=true", "eval.max_new_tokens=1000"),
                                        ("eval.max_new_tokens=1000", "max_position_embeddings=128", "<= 127")),
        "eval-generation-past-context": Case(
            ["eval", "--model", m, "data.synthetic.n_authors=12", "data.synthetic.n_real_authors=2",
             "eval.max_length=100000", "--output-dir", out("eval-generation-past-context")],
            ("eval.max_length=100000", "max_position_embeddings=128", "eval.max_length <= 128"),
        ),
        # 9. one line, not a traceback
        "tiny-num-heads-zero": Case(
            ["finetune", "model.tiny.num_heads=0", f"run.output_dir={out('tiny-num-heads-zero')}"],
            ("model.tiny.num_heads=0", "out of range", "[1, 1024]"),
        ),
        "tiny-heads-not-dividing": Case(
            ["finetune", "model.tiny.num_heads=5", f"run.output_dir={out('tiny-heads-not-dividing')}"],
            ("model.tiny.num_heads=5", "does not divide", "hidden_size=192"),
        ),
        "data-utf16": Case(u("data-utf16", *local_data(d["utf16"])), ("forget01.json", "UTF-16", "save it as UTF-8")),
        "data-latin1": Case(u("data-latin1", *local_data(d["latin1"])),
                            ("forget01.json", "not UTF-8", "0xe9 at line 2", "Latin-1", "save it as UTF-8")),
        "data-lone-surrogate": Case(u("data-lone-surrogate", *local_data(d["surrogate"])),
                                    ("item 0", "'question'", "lone UTF-16 surrogate", "\\ud800", "fix or remove")),
        "data-deep-nesting": Case(u("data-deep-nesting", *local_data(d["deep"])),
                                  ("forget01.json", "nested too deeply", "question/answer")),
        "ds-config-not-object": Case(u("ds-config-not-object", f"engine.ds_config={root / 'ds_list.json'}"),
                                     ("ds_list.json", "JSON list, not an object", "zero_optimization")),
        "ds-config-bad-stage": Case(u("ds-config-bad-stage", f"engine.ds_config={root / 'ds_stage.json'}"),
                                    ("ds_stage.json", "zero_optimization.stage=7", "0, 1, 2 or 3")),
        "wandb-online-no-network": Case(
            u("wandb-online-no-network", "tracking.wandb=true", "tracking.mode=online"),
            ("tracking.mode=online", "127.0.0.1:9", "unreachable", "tracking.mode=offline"), env=no_wandb,
        ),
        "retain-log-missing": Case(u("retain-log-missing", "eval.at_end=true", f"eval.retain_log={root / 'nope.json'}"),
                                   ("eval.retain_log", "nope.json", "no such file", "dsunlearn eval --model")),
        "retain-log-malformed": Case(
            u("retain-log-malformed", "eval.at_end=true", f"eval.retain_log={root / 'retain_garbled.json'}"),
            ("eval.retain_log", "retain_garbled.json", "dsunlearn eval --model"),
        ),
        # 10. clear messages
        "data-jsonl-line": Case(u("data-jsonl-line", *local_data(d["jsonl"])),
                                ("forget01.jsonl", "line 3", "fix or regenerate")),
        "remote-code-not-causal-lm": Case(
            u("remote-code-not-causal-lm", f"model.name_or_path={not_lm}", "model.trust_remote_code=true"),
            ("remote_not_lm", "not a causal language model", "no AutoModelForCausalLM", "before any of its code ran"),
        ),
        "remote-code-not-trusted": Case(
            u("remote-code-not-trusted", f"model.name_or_path={needs_code}"),
            ("remote_lm", "needs its own code", "evil.EvilForCausalLM", "none of that code ran",
             "model.trust_remote_code=true"),
        ),
    }  # fmt: skip


CASE_IDS = [
    "bound-micro-batch", "bound-seed", "yaml-alias-bomb", "batch-over-dataset", "generation-past-context",
    "eval-generation-past-context", "tiny-num-heads-zero", "tiny-heads-not-dividing", "data-utf16", "data-latin1",
    "data-lone-surrogate", "data-deep-nesting", "ds-config-not-object", "ds-config-bad-stage",
    "wandb-online-no-network", "retain-log-missing", "retain-log-malformed", "data-jsonl-line",
    "remote-code-not-causal-lm", "remote-code-not-trusted",
]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(request, tiny_model, tmp_path_factory):  # noqa: F811
    """(root, snapshot of root before, {case id: (Case, Future of the CompletedProcess)}), two at a time."""
    root = tmp_path_factory.mktemp("bad_values")
    cases = _cases(tiny_model, root)
    assert sorted(cases) == sorted(CASE_IDS)
    selected = selected_cases(request)
    yield from root_cases(root, cases, selected, lambda c: cli_env(**(c.env or {})))


@pytest.mark.parametrize("case", CASE_IDS)
def test_refused_in_one_line_before_anything_is_written(case, outcomes):
    assert_refused_in_root(case, outcomes)


def test_inputs_unchanged_and_no_remote_code_ran(tiny_model, outcomes):  # noqa: F811
    """Every file the cases read (and the tiny model) is byte for byte as before; the payload never ran."""
    assert_root_and_model_unchanged(tiny_model, outcomes)  # waits for every case first
    assert not list(outcomes[0].glob("*.RAN")), "model code from a model directory ran"
