"""WMDP's and RMU's bad inputs, typed at the CLI: the refusals no other test reached through `python -m dsunlearn`.

Same contract and pattern as `test_bad_input.py` (whose helpers this reuses): each case runs in a subprocess,
two at a time, and must end with exactly one `dsunlearn <cmd>: error:` line (what, where, how to fix), exit 2,
no traceback, its output dir absent; the files the cases read are byte for byte unchanged afterwards. And the
one thing WMDP must not refuse: an `eval.max_length` past the model's context, which only generation reads
(WMDP scores choices). docs/bad_input.md, section "WMDP and RMU", lists every case with its message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from test_bad_input import (
    assert_refused_in_root,
    assert_root_and_model_unchanged,
    cli,
    root_cases,
    selected_cases,
    tiny_model,  # noqa: F401  (fixture)
    unlearn_args,
)

pytestmark = pytest.mark.slow  # 23 CLI processes, two at a time, and one 1-step run: ~2 min

WMDP = ["data.suite=wmdp", "data.wmdp.n_hazard=4", "data.wmdp.n_general=4"]
RMU = ["objective.name=rmu", "objective.layer=1"]  # the tiny model has 2 decoder layers
Q = {"question": "Which agent?", "choices": ["w", "x", "y", "z"], "answer": 2}


class Case(NamedTuple):
    argv: list
    words: tuple  # key words of the message: what, where, how to fix


def _texts(n: int, what: str) -> str:
    return "".join(json.dumps({"text": f"Document {i} about {what}, long enough for RMU's filter of 50."}) + "\n"
                   for i in range(n))  # fmt: skip


def _wmdp_dir(path: Path, files: dict[str, str | None]) -> Path:
    """A local WMDP dir in the set layout (good files unless given; None leaves one out)."""
    good = {"bio-forget.jsonl": _texts(4, "a pathogen"), "cyber-forget.jsonl": _texts(4, "an exploit"),
            "wikitext.jsonl": _texts(4, "a river"), "wmdp/bio.json": json.dumps([Q, Q]),
            "mmlu/anatomy.json": json.dumps([dict(Q, subject="anatomy")])}  # fmt: skip
    good.update(files)
    for name, text in good.items():
        if text is not None:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text, encoding="utf-8")
    return path


def _cases(m: Path, root: Path) -> dict[str, Case]:
    def out(name):
        return root / "out" / name

    def u(name, *extra):
        return unlearn_args(m, out(name), *WMDP, *extra)

    def local(d):
        return ["data.source=local", f"data.path={d}", "data.wmdp.subsets=bio", "data.wmdp.mmlu_subjects=anatomy"]

    def ev(name, *extra):
        return ["eval", "--model", m, "--suite", "wmdp", *WMDP[1:], *extra, "--output-dir", out(name)]

    (root / "a_file.txt").write_text("not a directory\n")
    (root / "empty_eval").mkdir()
    d = {
        "missing": _wmdp_dir(root / "w_missing", {"cyber-forget.jsonl": None}),
        "text": _wmdp_dir(root / "w_text", {"bio-forget.jsonl": _texts(1, "x") + '{"title": "no text"}\n'}),
        "empty": _wmdp_dir(root / "w_empty", {"cyber-forget.jsonl": "[]"}),
        "question": _wmdp_dir(root / "w_question", {"wmdp/bio.json": json.dumps([Q, "just a string"])}),
        "choices": _wmdp_dir(root / "w_choices", {"mmlu/anatomy.json": json.dumps([dict(Q, choices=["a", "b"])])}),
    }
    return {
        # the WMDP suite: config and data
        "wmdp-bound-n-hazard": Case(u("wmdp-bound-n-hazard", "data.wmdp.n_hazard=2"),
                                    ("data.wmdp.n_hazard=2", "out of range", "[4, 10000]")),
        "wmdp-windows-unknown": Case(u("wmdp-windows-unknown", "data.wmdp.windows=sentence"),
                                     ("data.wmdp.windows='sentence'", "not allowed", "document, concat")),
        "wmdp-retain-not-text-set": Case(u("wmdp-retain-not-text-set", "data.retain_split=mmlu/anatomy"),
                                         ("'mmlu/anatomy' is not a text set", "choose from", "wikitext")),
        "wmdp-synthetic-lacks-set": Case(u("wmdp-synthetic-lacks-set", "data.forget_split=corpora/cyber-forget"),
                                         ("synthetic WMDP set has no 'corpora/cyber-forget'", "available",
                                          "bio-forget")),
        "wmdp-no-long-text": Case(u("wmdp-no-long-text", "data.wmdp.min_chars=100000"),
                                  ("WMDP split", "no text longer than data.wmdp.min_chars=100000")),
        "wmdp-path-not-dir": Case(u("wmdp-path-not-dir", "data.source=local", f"data.path={root / 'a_file.txt'}"),
                                  ("a_file.txt", "not a directory")),
        "wmdp-set-missing": Case(u("wmdp-set-missing", *local(d["missing"])),
                                 ("WMDP set 'cyber-forget' not found", "w_missing", "cyber-forget.jsonl")),
        "wmdp-text-item-bad": Case(u("wmdp-text-item-bad", *local(d["text"])),
                                   ("WMDP set 'bio-forget' item 1", "bio-forget.jsonl", "string 'text'")),
        "wmdp-set-empty": Case(u("wmdp-set-empty", *local(d["empty"])),
                               ("WMDP set 'cyber-forget'", "is empty", "at least one item")),
        "wmdp-question-not-object": Case(ev("wmdp-question-not-object", *local(d["question"])),
                                         ("WMDP set 'wmdp/bio' item 1", "bio.json", "is a str",
                                          "question, choices, answer")),
        "wmdp-choices-not-four": Case(ev("wmdp-choices-not-four", *local(d["choices"])),
                                      ("WMDP set 'mmlu/anatomy' item 0", "'choices' must be a list of 4 strings")),
        "wmdp-mmlu-subject-not-a-set": Case(ev("wmdp-mmlu-subject-not-a-set", "data.wmdp.mmlu_subjects=anatomy/x"),
                                            ("'mmlu/anatomy/x' is not a WMDP set", "mmlu/<subject>")),
        "wmdp-mmlu-subjects-empty": Case(ev("wmdp-mmlu-subjects-empty", "data.wmdp.mmlu_subjects=,"),
                                         ("data.wmdp.mmlu_subjects=','", "comma-separated list of subjects")),
        "wmdp-mmlu-subject-clash": Case(ev("wmdp-mmlu-subject-clash", "data.wmdp.mmlu_subjects=stem"),
                                        ("subject named 'stem'", "category group mmlu_stem", "rename")),
        "wmdp-synthetic-no-chem": Case(ev("wmdp-synthetic-no-chem", "data.wmdp.subsets=chem"),
                                       ("synthetic WMDP set has no 'wmdp/chem'", "available", "wmdp/bio")),
        "wmdp-refusal-objective": Case(u("wmdp-refusal-objective", "objective.name=dpo"),
                                       ("objective.name=dpo", "data.suite=wmdp", "text documents",
                                        "choose another objective")),
        "wmdp-retain-log-missing": Case(u("wmdp-retain-log-missing", "eval.at_end=true",
                                          f"eval.retain_log={root / 'nope.json'}"),
                                        ("eval.retain_log", "nope.json")),
        "wmdp-from-log-missing": Case(["eval", "--from-log", root / "empty_eval", "--suite", "wmdp"],
                                      ("empty_eval", "WMDP_EVAL.json", "does not exist")),
        # RMU (on WMDP's synthetic documents)
        "rmu-embed-diff-other-objective": Case(u("rmu-embed-diff-other-objective", "objective.name=npo",
                                                 "objective.retain_loss=embed_diff"),
                                               ("objective.retain_loss=embed_diff", "objective.name=npo",
                                                "objective.name=rmu")),
        "rmu-train-params-not-regex": Case(u("rmu-train-params-not-regex", *RMU, "objective.train_params=mlp("),
                                           ("objective.train_params='mlp('", "not a regular expression",
                                            "mlp\\.down_proj\\.weight")),
        "rmu-train-params-match-nothing": Case(u("rmu-train-params-match-nothing", *RMU,
                                                 "objective.train_params=nothing"),
                                               ("objective.train_params", "matches no parameter",
                                                "model.layers.0.", "fix the pattern")),
        "rmu-steering-out-of-range": Case(u("rmu-steering-out-of-range", *RMU, "objective.steering_coeff=0"),
                                          ("objective.steering_coeff=0", "out of range")),
        "rmu-with-adapter": Case(u("rmu-with-adapter", *RMU, "model.adapter.type=lora"),
                                 ("objective rmu", "model.adapter", "model.adapter.type=none")),
    }  # fmt: skip


CASE_IDS = [
    "wmdp-bound-n-hazard", "wmdp-windows-unknown", "wmdp-retain-not-text-set", "wmdp-synthetic-lacks-set",
    "wmdp-no-long-text",
    "wmdp-path-not-dir", "wmdp-set-missing", "wmdp-text-item-bad", "wmdp-set-empty", "wmdp-question-not-object",
    "wmdp-choices-not-four", "wmdp-mmlu-subject-not-a-set", "wmdp-mmlu-subjects-empty", "wmdp-mmlu-subject-clash",
    "wmdp-synthetic-no-chem", "wmdp-refusal-objective", "wmdp-retain-log-missing", "wmdp-from-log-missing",
    "rmu-embed-diff-other-objective", "rmu-train-params-not-regex", "rmu-train-params-match-nothing",
    "rmu-steering-out-of-range", "rmu-with-adapter",
]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(request, tiny_model, tmp_path_factory):  # noqa: F811
    """(root, snapshot of root before, {case id: (Case, Future of the CompletedProcess)}), two at a time."""
    root = tmp_path_factory.mktemp("bad_wmdp")
    cases = _cases(tiny_model, root)
    assert sorted(cases) == sorted(CASE_IDS)
    selected = selected_cases(request)
    yield from root_cases(root, cases, selected)


@pytest.mark.parametrize("case", CASE_IDS)
def test_refused_in_one_line_before_anything_is_written(case, outcomes):
    assert_refused_in_root(case, outcomes)


def test_inputs_unchanged(tiny_model, outcomes):  # noqa: F811
    assert_root_and_model_unchanged(tiny_model, outcomes)


def test_wmdp_is_not_refused_for_a_generation_cap_it_never_uses(tiny_model, tmp_path):  # noqa: F811
    """eval.max_length=100000 without eval.max_new_tokens on the 128-position model: TOFU refuses it
    (test_bad_input_values' generation-past-context cases); a WMDP run with its evaluation on trains and
    evaluates."""
    out = tmp_path / "run"
    caps = ("eval.max_length=100000", "eval.max_new_tokens=null")  # unlearn_args sets max_new_tokens=4: unset it
    r = cli(*unlearn_args(tiny_model, out, *WMDP, "eval.at_end=true", *caps), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    log = json.loads((out / "eval" / "WMDP_EVAL.json").read_text())
    assert len(log["wmdp_bio_acc"]["value_by_index"]) == 2 and "mmlu_stem_acc" in log  # eval.max_items=2; STEM
