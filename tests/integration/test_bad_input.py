"""Bad input, typed at the CLI as a user would: one clear line, exit code 2, no traceback, nothing left behind.

Each case runs `python -m dsunlearn ...` in a subprocess and checks:
- exactly one line `dsunlearn <cmd>: error: ...`, the last line of stderr, holding the case's key words
  (what is wrong, where, how to fix it);
- exit code 2 and no traceback (`--debug` shows one: last test);
- no partial output: the output dir does not exist afterwards, and a directory that existed before (another
  run, a user's folder, an input model) is byte for byte unchanged.

The cases fail before any training, so they are cheap; they run two at a time (this machine has 2 cores) in a
pool started by the `outcomes` fixture, one test per case. The real runs (NaN loss, resume, extrapolate,
W&B, the original model never written, 2 ranks) are in `test_bad_input_runs.py`. docs/bad_input.md lists
every case with its message.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers.conftest_model import cli_env as shared_cli_env

SMALL = [
    "data.synthetic.n_authors=12",
    "data.synthetic.n_world_facts=8",
    "data.synthetic.n_real_authors=2",
    "data.max_length=128",
    "eval.batch_size=4",
    "eval.max_items=2",
    "eval.max_new_tokens=4",
]


# ----------------------------------------------------------------------------------------------- helpers


def cli_env(**extra: str) -> dict:
    from dsunlearn.dist import free_port

    # two cases at a time: each its own rendezvous port
    return shared_cli_env(TQDM_DISABLE="1", MASTER_PORT=str(free_port()), **extra)


def cli(*args, cwd: Path | None = None, env: dict | None = None, nproc: int = 1, timeout: int = 600):
    """`python -m dsunlearn ARGS` (or under `torch.distributed.run` with nproc > 1) -> CompletedProcess."""
    from dsunlearn.dist import free_port

    if nproc == 1:
        cmd = [sys.executable, "-m", "dsunlearn", *map(str, args)]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "dsunlearn", *map(str, args),
        ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def error_line(r: subprocess.CompletedProcess, cmd: str) -> str:
    """The one `dsunlearn <cmd>: error:` line of a refused single-process command (asserts the contract)."""
    err = r.stderr
    lines = [ln for ln in err.splitlines() if f"dsunlearn {cmd}: error:" in ln]
    assert r.returncode == 2, f"exit {r.returncode}, want 2\n{err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith(f"dsunlearn {cmd}: error:"), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    rest = [ln for ln in err.splitlines() if ln.strip()]
    assert rest[-1] == lines[0], f"the message continues after its line:\n{err[-3000:]}"
    return lines[0]


def assert_words(line: str, words) -> None:
    missing = [w for w in words if w.lower() not in line.lower()]
    assert not missing, f"{missing} not in: {line}"


def snapshot(path: Path) -> dict | None:
    """{relative path: sha256} of every file under path ({'.': hash} for a file), or None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for f in sorted(path.rglob("*")):
        key = str(f.relative_to(path))
        out[key] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "dir"
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny untrained Llama + tokenizer every case reads, built once per session (shared on disk with
    test_bad_input_runs.py); `snapshot.json` beside it holds its file hashes taken right after it was built."""
    root = tmp_path_factory.getbasetemp() / "bad_input_model"
    model = root / "model"
    if not (root / "snapshot.json").is_file():
        from helpers.tiny_model import make_tiny_model

        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        make_tiny_model(model)
        (root / "snapshot.json").write_text(json.dumps(snapshot(model)))
    return model


def unlearn_args(model: Path, out: Path, *extra: str) -> list[str]:
    """A valid 1-step GA run on small synthetic data, plus `extra` (later overrides win)."""
    return ["unlearn", f"model.name_or_path={model}", "objective.name=ga", "eval.at_end=false",
            "engine.max_steps=1", "engine.micro_batch_size=2", "engine.global_batch_size=2", *SMALL, *extra,
            f"run.output_dir={out}"]  # fmt: skip


def qa(i: int) -> dict:
    return {"question": f"Which book did author number {i} write?", "answer": f"Author {i} wrote book {i}."}


def perturbed(i: int) -> dict:
    return {**qa(i), "paraphrased_answer": f"Book {i} is by author {i}.",
            "perturbed_answer": [f"Author {i} wrote nothing.", f"Author {i} wrote a poem."]}  # fmt: skip


def write_tofu_dir(path: Path, **splits) -> Path:
    """A local TOFU dir (data.source=local, data.forget_split=forget01): good splits unless given."""
    good = {
        "forget01": [qa(i) for i in range(4)],
        "retain99": [qa(i) for i in range(10, 18)],
        "forget01_perturbed": [perturbed(i) for i in range(4)],
        "retain_perturbed": [perturbed(i) for i in range(10, 14)],
        "real_authors_perturbed": [perturbed(i) for i in range(20, 22)],
        "world_facts_perturbed": [perturbed(i) for i in range(30, 32)],
        "holdout01": [qa(i) for i in range(40, 44)],  # membership inference's non-members (eval.mia)
    }
    good.update(splits)
    path.mkdir(parents=True, exist_ok=True)
    for name, rows in good.items():
        if rows is not None:
            (path / f"{name}.json").write_text(json.dumps(rows))
    return path


def local_data(path: Path) -> list[str]:
    return ["data.source=local", f"data.path={path}", "data.forget_split=forget01"]


def long_question_lengths(model: Path) -> tuple[dict, int]:
    """(an item whose question is long, its prompt length in tokens) with the tiny model's tokenizer."""
    from transformers import AutoTokenizer

    from dsunlearn.data.collate import encode_qa

    item = {"question": "Which of the many long and winding books " * 2 + "did author one write?",
            "answer": "Author one wrote a long book about rivers, mountains, cities and the sea."}  # fmt: skip
    tok = AutoTokenizer.from_pretrained(model)
    return item, encode_qa(tok, item["question"], item["answer"], 10**6).n_prompt


def fake_run_dir(path: Path, cfg_overrides: list[str], command: str = "unlearn") -> Path:
    """A finished-looking run dir as `dsunlearn` writes it (run.json with the config hash, config.yaml)."""
    from dsunlearn.config_io import dump_config, load_config
    from dsunlearn.rundir import new_marker

    cfg = load_config(None, cfg_overrides)
    path.mkdir(parents=True)
    dump_config(cfg, path / "config.yaml")
    (path / "run.json").write_text(json.dumps(new_marker(cfg, command)))
    (path / "events.jsonl").write_text('{"event": "done"}\n')
    return path


def tofu_logs(root: Path) -> tuple[Path, Path, Path]:
    """(a 4-item log, the same log without avg_paraphrased_loss in its forget split, a 6-item retain log)."""
    from dsunlearn.suites.tofu import log as T

    def split(n, name):
        recs = [{"avg_gt_loss": 1 + i / 10, "average_perturb_loss": [2.0, 2.5], "avg_paraphrased_loss": 1.2,
                 "rougeL_recall": 0.5} for i in range(n)]  # fmt: skip
        return T.build_split_log(recs, name)

    ok = {s: split(4, s) for s in T.SPLITS}
    bad = json.loads(json.dumps(ok))
    del bad[T.FORGET]["avg_paraphrased_loss"]
    paths = root / "log.json", root / "log_missing_key.json", root / "retain_log_6.json"
    for p, log in zip(paths, (ok, bad, {s: split(6, s) for s in T.SPLITS}), strict=True):
        p.write_text(json.dumps(log))
    return paths


# ------------------------------------------------------------------------------------------------- cases


class Case(NamedTuple):
    argv: list
    words: tuple  # key words of the message: what, where, how to fix
    absent: tuple = ()  # must not exist afterwards
    unchanged: tuple = ()  # existed before: byte for byte the same afterwards
    cwd: Path | None = None


def _cases(m: Path, root: Path) -> dict:
    """Build every case's inputs under root; {case id: Case}. Each case has its own output path."""
    # -------- 1. config
    (root / "not_yaml.yaml").write_text("engine: [1, 2\nobjective: {name: ga}\n")
    (root / "wrong_type.yaml").write_text("engine:\n  max_steps: three\n")
    # -------- 2. objective: refusal answers (idk_nll, dpo)
    (root / "idk_json.txt").write_text('I do not know.\n{"text": "No idea."}\n')
    # -------- 3. data
    data = {
        "file_missing": write_tofu_dir(root / "d_missing", forget01=None),
        "empty_forget": write_tofu_dir(root / "d_empty_forget", forget01=[]),
        "empty_retain": write_tofu_dir(root / "d_empty_retain", retain99=[]),
        "missing_column": write_tofu_dir(root / "d_column", forget01=[qa(0), {"question": "Who?"}, qa(2)]),
        "answer_not_string": write_tofu_dir(root / "d_type", retain99=[{"question": "How old?", "answer": 42}]),
        "perturbed_not_list": write_tofu_dir(
            root / "d_pert", forget01_perturbed=[perturbed(0), {**perturbed(1), "perturbed_answer": "Wrong."}]
        ),
    }
    long_item, n_prompt = long_question_lengths(m)
    long_dir = write_tofu_dir(root / "d_long", forget01=[long_item, qa(1)])
    # -------- 5. models
    bigtok = root / "bigger_tokenizer"
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(m)
    model_cfg = AutoConfig.from_pretrained(m)
    clf_cfg = AutoConfig.from_pretrained(m, num_labels=2)
    LlamaForSequenceClassification(clf_cfg).save_pretrained(root / "classifier")
    tok.save_pretrained(root / "classifier")  # a complete model dir: only its head is wrong
    tok.add_tokens([f"<extra_{i}>" for i in range(64)])
    tok.save_pretrained(bigtok)
    pickle_dir = root / "pickle_only"
    pickle_dir.mkdir()
    for f in m.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, pickle_dir / f.name)
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(m / "model.safetensors")), pickle_dir / "pytorch_model.bin")
    # -------- 6. output dirs
    base = unlearn_args(m, Path("unused"))[1:-1]
    user_dir = root / "user_dir"
    user_dir.mkdir()
    (user_dir / "thesis.tex").write_text("years of work\n")
    ft_run = fake_run_dir(root / "ft_run", ["engine.lr=3e-3"], command="finetune")
    shutil.copytree(m, ft_run / "full" / "model")
    model_copy = root / "model_copy"
    shutil.copytree(m, model_copy)
    ran = {  # one run dir per case
        name: fake_run_dir(root / f"run_{name}", base + [f"run.output_dir={root / f'run_{name}'}", *ov])
        for name, ov in (("exists", []), ("other_config", ["engine.lr=1e-3"]), ("no_ckpt", []))
    }
    # -------- 9. eval logs
    log, log_missing_key, retain_6 = tofu_logs(root)

    def out(name):
        return root / f"out_{name}"

    u = lambda name, *extra: unlearn_args(m, out(name), *extra)  # noqa: E731
    c = {
        # 1. config file and values
        "config-missing": Case(
            ["unlearn", "--config", root / "nope.yaml", f"run.output_dir={out('config-missing')}"],
            ("nope.yaml", "not found", "dsunlearn configs"),
        ),
        "config-not-yaml": Case(
            ["unlearn", "--config", root / "not_yaml.yaml", f"run.output_dir={out('config-not-yaml')}"],
            ("not_yaml.yaml", "not valid YAML", "line"),
        ),
        "config-unknown-key": Case(u("config-unknown-key", "objective.bta=0.1"),
                                   ("unknown config key 'objective.bta'", "did you mean 'beta'")),
        "config-wrong-type": Case(
            ["unlearn", "--config", root / "wrong_type.yaml", f"run.output_dir={out('config-wrong-type')}"],
            ("engine.max_steps='three'", "wrong type", "expected int", "e.g. engine.max_steps="),
        ),
        "config-negative-lr": Case(u("config-negative-lr", "engine.lr=-1e-5"),
                                   ("engine.lr=-1e-05", "out of range", "> 0", "engine.lr=<value>")),
        "config-lr-overflow": Case(u("config-lr-overflow", "engine.lr=1e39"), ("engine.lr=1e+39", "<= 1e30")),
        "config-negative-gamma": Case(u("config-negative-gamma", "objective.gamma=-0.5"),
                                      ("objective.gamma=-0.5", "out of range", ">= 0")),
        "config-beta-zero": Case(u("config-beta-zero", "objective.beta=0"), ("objective.beta=0.0", "> 0")),
        "config-beta-negative": Case(u("config-beta-negative", "objective.beta=-0.1"),
                                     ("objective.beta=-0.1", "> 0")),
        "config-alpha-nan": Case(u("config-alpha-nan", "objective.alpha=.nan"),
                                 ("objective.alpha=nan", "not a finite number", "objective.alpha=0.1")),
        "config-alpha-inf": Case(u("config-alpha-inf", "objective.alpha=inf"),
                                 ("objective.alpha=inf", "not a finite number")),
        # 2. objective, reference model
        "objective-unknown": Case(u("objective-unknown", "objective.name=gradascent"),
                                  ("objective.name='gradascent'", "choose one of", "graddiff", "npo")),
        "objective-idk-file-missing": Case(
            u("objective-idk-file-missing", "objective.name=dpo", f"data.idk_file={root / 'no_idk.txt'}"),
            ("data.idk_file", "no_idk.txt", "does not exist", "one refusal sentence per line"),
        ),
        "objective-idk-file-json": Case(
            u("objective-idk-file-json", "objective.name=idk_nll", f"data.idk_file={root / 'idk_json.txt'}"),
            ("idk_json.txt", "line 2", "JSON record", "one refusal sentence per line"),
        ),
        "objective-idk-on-muse": Case(u("objective-idk-on-muse", "objective.name=dpo", "data.suite=muse"),
                                      ("objective.name=dpo", "data.suite=muse", "text documents", "data.suite=tofu")),
        "reference-npo-from-tiny": Case(
            u("reference-npo-from-tiny", "objective.name=npo", "model.name_or_path=tiny"),
            ("model.name_or_path=tiny", "embedded default", "dsunlearn finetune", "full/model"),
        ),
        "reference-kl-before-finetune": Case(
            ["unlearn", "--config", "tiny_graddiff", "objective.retain_loss=kl",
             f"run.output_dir={out('reference-kl-before-finetune')}"],
            ("runs/tiny_finetune/full/model", "does not exist", "model.name_or_path", "dsunlearn finetune"),
            cwd=root / "fresh_cwd",
        ),
        # 3. data
        "data-file-missing": Case(u("data-file-missing", *local_data(data["file_missing"])),
                                  ("split 'forget01' not found", "forget01.json")),
        "data-empty-forget": Case(u("data-empty-forget", *local_data(data["empty_forget"])),
                                  ("split 'forget01'", "forget01.json", "is empty", "at least one")),
        "data-empty-retain": Case(u("data-empty-retain", *local_data(data["empty_retain"])),
                                  ("split 'retain99'", "retain99.json", "is empty", "at least one")),
        "data-missing-column": Case(u("data-missing-column", *local_data(data["missing_column"])),
                                    ("item 1", "forget01.json", "no 'answer' field", "question, answer")),
        "data-answer-not-string": Case(
            u("data-answer-not-string", *local_data(data["answer_not_string"])),
            ("split 'retain99' item 0", "'answer' must be a string", "got int 42", "text"),
        ),
        "data-perturbed-not-list": Case(
            ["eval", "--model", m, *local_data(data["perturbed_not_list"]), *SMALL,
             "--output-dir", out("data-perturbed-not-list")],
            ("forget01_perturbed", "item 1", "'perturbed_answer' must be a non-empty list", "got str", "JSON list"),
        ),
        "data-too-long-refused": Case(
            u("data-too-long-refused", *local_data(long_dir), f"data.max_length={n_prompt + 4}"),
            ("split 'forget01' item 0", f"longer than data.max_length={n_prompt + 4}", "data.truncation=truncate"),
        ),
        "data-question-alone-too-long": Case(
            u("data-question-alone-too-long", *local_data(long_dir), f"data.max_length={n_prompt - 2}",
              "data.truncation=truncate"),
            ("item 0", "question alone", f"{n_prompt} tokens", "only cuts answers", "raise data.max_length"),
        ),
        # 4. batch arithmetic on one process (two processes: test_bad_input_runs.py)
        "batch-product": Case(
            u("batch-product", "engine.micro_batch_size=3", "engine.global_batch_size=4", "engine.grad_accum_steps=1"),
            ("engine.global_batch_size=4", "micro_batch_size 3", "world size 1", "set engine.micro_batch_size=4"),
        ),
        "batch-derived-accum": Case(
            u("batch-derived-accum", "engine.micro_batch_size=3", "engine.global_batch_size=4",
              "engine.grad_accum_steps=0"),
            ("engine.global_batch_size=4", "not a multiple", "engine.micro_batch_size", "engine.global_batch_size"),
        ),
        "batch-product-finetune": Case(
            ["finetune", f"model.name_or_path={m}", "run.finetune_targets=[full]", "engine.micro_batch_size=3",
             "engine.global_batch_size=4", "engine.grad_accum_steps=1", *SMALL,
             f"run.output_dir={out('batch-product-finetune')}"],
            ("engine.global_batch_size=4", "micro_batch_size 3", "set engine.micro_batch_size=4"),
        ),
        # 5. models
        "model-vocab-mismatch": Case(u("model-vocab-mismatch", f"model.tokenizer={bigtok}"),
                                     (str(bigtok), f"{len(tok)} tokens", f"{model_cfg.vocab_size} rows",
                                      "do not belong together", "model.tokenizer")),
        "model-missing": Case(u("model-missing", f"model.name_or_path={root / 'no_such_model'}"),
                              ("no_such_model", "does not exist", "model.name_or_path")),
        "model-not-causal-lm": Case(u("model-not-causal-lm", f"model.name_or_path={root / 'classifier'}"),
                                    ("LlamaForSequenceClassification", "not a causal language model",
                                     "ForCausalLM")),
        "model-pickle-only": Case(u("model-pickle-only", f"model.name_or_path={pickle_dir}"),
                                  ("only pickle weights", "pytorch_model.bin", "safetensors only",
                                   "save_pretrained")),
        # 6. output directories and resume
        "outdir-holds-a-run": Case(unlearn_args(m, ran["exists"]),
                                   ("already holds a run", "--overwrite", "--resume", "run.output_dir"),
                                   unchanged=(ran["exists"],)),
        "outdir-not-a-run-overwrite": Case(unlearn_args(m, user_dir) + ["--overwrite"],
                                           ("user_dir", "not a dsunlearn run", "never deletes", "run.output_dir"),
                                           unchanged=(user_dir,)),
        "outdir-overwrite-would-delete-model": Case(
            unlearn_args(m, ft_run, f"model.name_or_path={ft_run / 'full' / 'model'}") + ["--overwrite"],
            ("refusing --overwrite", "model.name_or_path", "would delete", "run.output_dir"),
            unchanged=(ft_run,),
        ),
        "outdir-inside-input-model": Case(
            unlearn_args(m, model_copy / "run", f"model.name_or_path={model_copy}"),
            ("inside the input model directory", "only ever read", "run.output_dir"),
            absent=(model_copy / "run",), unchanged=(model_copy,),
        ),
        "resume-other-config": Case(
            unlearn_args(m, ran["other_config"]) + ["--resume"],
            ("cannot --resume", "different config", "engine.lr: 0.001 -> 1e-05", "same config"),
            unchanged=(ran["other_config"],),
        ),
        "resume-without-checkpoint": Case(
            unlearn_args(m, ran["no_ckpt"]) + ["--resume"],
            ("cannot --resume", "no complete checkpoint", "--overwrite"),
            unchanged=(ran["no_ckpt"],),
        ),
        "resume-missing-dir": Case(unlearn_args(m, out("resume-missing-dir")) + ["--resume"],
                                   ("cannot --resume", "does not exist", "without --resume")),
        # 9. eval --from-log
        "eval-log-missing-key": Case(["eval", "--from-log", log_missing_key],
                                     ("log_missing_key.json", "eval_log_forget.json",
                                      "lacks metric 'avg_paraphrased_loss'", "re-run `dsunlearn eval`")),
        "eval-log-count-mismatch": Case(["eval", "--from-log", log, "--retain-log", retain_6],
                                        ("item counts differ", "has 4", "has 6", "same forget split")),
    }  # fmt: skip
    (root / "fresh_cwd").mkdir()
    return {name: case._replace(absent=(*case.absent, out(name))) for name, case in c.items()}


CASE_IDS = [
    "config-missing", "config-not-yaml", "config-unknown-key", "config-wrong-type", "config-negative-lr",
    "config-lr-overflow", "config-negative-gamma", "config-beta-zero", "config-beta-negative", "config-alpha-nan",
    "config-alpha-inf", "objective-unknown", "objective-idk-file-missing", "objective-idk-file-json",
    "objective-idk-on-muse", "reference-npo-from-tiny", "reference-kl-before-finetune",
    "data-file-missing", "data-empty-forget", "data-empty-retain", "data-missing-column", "data-answer-not-string",
    "data-perturbed-not-list", "data-too-long-refused", "data-question-alone-too-long", "batch-product",
    "batch-derived-accum", "batch-product-finetune", "model-vocab-mismatch", "model-missing",
    "model-not-causal-lm", "model-pickle-only", "outdir-holds-a-run", "outdir-not-a-run-overwrite",
    "outdir-overwrite-would-delete-model", "outdir-inside-input-model", "resume-other-config",
    "resume-without-checkpoint", "resume-missing-dir", "eval-log-missing-key", "eval-log-count-mismatch",
]  # fmt: skip


def selected_cases(request) -> list[str]:
    """The `case` ids of this module's tests selected in the session (-k, ::id), in collection order."""
    return [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params
    ]


def root_cases(root: Path, cases: dict, selected: list[str], env_of=lambda c: cli_env()):
    """The generator body of a module's `outcomes` fixture whose cases all run in `root` (two at a time):
    yields (root, snapshot of root before, {case id: (Case, Future of the CompletedProcess)})."""
    before = snapshot(root)
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(cli, *cases[name].argv, cwd=root, env=env_of(cases[name])) for name in selected}
    yield root, before, {name: (cases[name], futures[name]) for name in selected}
    pool.shutdown(cancel_futures=True)


def assert_refused_in_root(case: str, outcomes) -> None:
    """`case` of `root_cases` outcomes: one error line with its words, no `<root>/out/<case>` left behind."""
    root, _, by_case = outcomes
    c, future = by_case[case]
    assert_words(error_line(future.result(), c.argv[0]), c.words)
    assert not (root / "out" / case).exists(), "partial output left behind"


def assert_root_and_model_unchanged(tiny_model: Path, outcomes) -> None:
    """After every case of `root_cases` outcomes: `root` and the shared tiny model byte for byte as before."""
    root, before, by_case = outcomes
    for _, future in by_case.values():
        future.result()
    assert snapshot(root) == before
    assert snapshot(tiny_model) == json.loads((tiny_model.parent / "snapshot.json").read_text())


@pytest.fixture(scope="module")
def outcomes(request, tiny_model, tmp_path_factory):
    """{case id: (Case, snapshots before, Future of the CompletedProcess)} for the cases selected in this
    session, run two at a time as soon as the first test asks for them."""
    root = tmp_path_factory.mktemp("bad_input")
    cases = _cases(tiny_model, root)
    assert sorted(cases) == sorted(CASE_IDS)
    selected = selected_cases(request)
    before = {name: {p: snapshot(p) for p in cases[name].unchanged} for name in selected}
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(cli, *cases[name].argv, cwd=cases[name].cwd or root) for name in selected}
    yield {name: (cases[name], before[name], futures[name]) for name in selected}
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("case", CASE_IDS)
def test_refused_in_one_line_and_nothing_left_behind(case, outcomes):
    c, before, future = outcomes[case]
    r = future.result()
    line = error_line(r, c.argv[0])
    assert_words(line, c.words)
    for p in c.absent:
        assert not Path(p).exists(), f"partial output left behind: {p}"
    for p, snap in before.items():
        assert snap is not None and snapshot(p) == snap, f"{p} changed"


def test_model_never_written_by_refused_cases(tiny_model, outcomes):
    """Every refused case read the shared tiny model: it is the same, file for file, as when it was built."""
    for _, _, future in outcomes.values():
        future.result()
    built = json.loads((tiny_model.parent / "snapshot.json").read_text())
    assert snapshot(tiny_model) == built


def test_debug_shows_the_traceback(tmp_path):
    r = cli("unlearn", "objective.gamma=-0.5", f"run.output_dir={tmp_path / 'out'}", "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert "objective.gamma" in r.stderr and not (tmp_path / "out").exists()
