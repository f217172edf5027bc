"""`dsunlearn eval` end to end: evaluate a saved model in a subprocess, aggregate its log again in another (round
trip), forget quality against itself, and one-line exit-2 errors for broken inputs (those through
`dsunlearn.cli.main` in this process: the same code path, without paying the imports once per case)."""

import json
import os
import subprocess
import sys

import pytest

from dsunlearn.config import TinyModelConfig

SMALL = [
    "data.synthetic.n_authors=8",
    "data.synthetic.n_world_facts=6",
    "data.synthetic.n_real_authors=2",
    "eval.max_items=6",
    "eval.batch_size=4",
    "eval.max_new_tokens=4",
]


def _cli(*args):
    # One thread: the tiny model gains nothing from more, and the test box is shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "dsunlearn", "eval", *map(str, args)], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip


def _main(capsys, *args):
    """`dsunlearn eval ARGS` in this process -> (exit code, stdout, stderr)."""
    from dsunlearn.cli import main

    code = main(["eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(capsys, words, *args):
    code, out, err = _main(capsys, *args)
    assert code == 2, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dsunlearn eval: error") and words in lines[0], err


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_tokenizer):
    """(run dir, in-process summary) of `dsunlearn eval` on a saved tiny model."""
    from dsunlearn.engine.hf_save import save_hf_model
    from dsunlearn.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("eval_cli")
    model = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
                             tiny_tokenizer, seed=0)  # fmt: skip
    save_hf_model(model, root / "run" / "full" / "model", tokenizer=tiny_tokenizer)
    r = _cli(
        "--model", root / "run" / "full" / "model", "--config", "tiny_finetune", *SMALL, "--output-dir", root / "out"
    )
    assert r.returncode == 0, r.stderr
    assert "model_utility" in r.stdout and "forget_quality" in r.stdout
    return root, json.loads((root / "out" / "eval" / "summary.json").read_text())


def test_eval_writes_log_and_summary(evaluated):
    from dsunlearn.suites.tofu import log as tofu_log
    from dsunlearn.suites.tofu import metrics, mia_log

    root, summary = evaluated
    log = mia_log.load_log(root / "out" / "eval" / "eval_log_aggregated.json")  # with TOFU_EVAL.json next to it
    assert all(len(log[s]["avg_gt_loss"]) == 6 for s in tofu_log.SPLITS)
    assert metrics.aggregate(log) == summary and "forget_quality" not in summary
    mia = log[mia_log.MIA_FILE]
    assert len(mia["mia_min_k"]["holdout"]["value_by_index"]) == 6 and mia["privleak"]["reference"] == "default"


def test_from_log_round_trip_and_forget_quality(evaluated, capsys):
    root, summary = evaluated
    path = root / "out" / "eval" / "eval_log_aggregated.json"
    r = _cli("--from-log", path, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == summary  # the same numbers, to the last digit
    code, out, _ = _main(capsys, "--from-log", root / "out" / "eval", "--retain-log", path, "--json")  # a dir too
    assert code == 0
    both = json.loads(out)
    assert both["forget_quality"] == 1.0 and both["model_utility"] == summary["model_utility"]
    code, table, _ = _main(capsys, "--from-log", path, "--retain-log", path)
    assert code == 0 and table.splitlines()[1].split()[:2] == ["forget_quality", "1.0000"]


def test_eval_recipe_result_is_what_the_command_wrote(evaluated, tmp_path):
    """The job behind the command, called directly: typed inputs in, an EvalResult out (the summary it wrote)."""
    from dsunlearn.recipes.evaluate import EvalInputs, EvalResult, evaluate_model, summarize_log

    root, summary = evaluated
    inputs = EvalInputs(root / "run" / "full" / "model", "tiny_finetune", tuple(SMALL), output_dir=tmp_path / "o")
    result = evaluate_model(inputs)
    assert isinstance(result, EvalResult) and result.suite == "tofu" and result.world_size == 1
    assert result.eval_dir == tmp_path / "o" / "eval" and result.seconds > 0
    assert result.summary == json.loads((result.eval_dir / "summary.json").read_text())
    assert summarize_log(str(result.eval_dir / "eval_log_aggregated.json")) == result.summary
    # The command ran in a one-thread subprocess: the same numbers up to float summation order.
    assert result.summary.keys() == summary.keys()
    assert result.summary == pytest.approx(summary, rel=1e-5)


def test_refuses_to_overwrite_existing_eval_dir(evaluated, capsys):
    root, _ = evaluated
    model = root / "run" / "full" / "model"
    _one_line_error(capsys, "--overwrite", "--model", model, "--config", "tiny_finetune", "--output-dir", root / "out")


def test_broken_logs_and_paths_exit_2(evaluated, tmp_path, capsys):
    root, _ = evaluated
    path = root / "out" / "eval" / "eval_log_aggregated.json"
    good = json.loads(path.read_text())
    missing = json.loads(json.dumps(good))
    del missing["eval_log.json"]["rougeL_recall"]
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    _one_line_error(capsys, "rougeL_recall", "--from-log", tmp_path / "missing.json")

    short = json.loads(json.dumps(good))
    short["eval_log_forget.json"] = {k: dict(list(v.items())[:3]) for k, v in short["eval_log_forget.json"].items()}
    (tmp_path / "short.json").write_text(json.dumps(short))
    _one_line_error(capsys, "item counts differ", "--from-log", path, "--retain-log", tmp_path / "short.json")
    # With --model the retain log is checked before anything is evaluated or written.
    model = root / "run" / "full" / "model"
    _one_line_error(capsys, "forget items", "--model", model, "--config", "tiny_finetune", *SMALL,
                    "--retain-log", tmp_path / "short.json", "--output-dir", tmp_path / "o")  # fmt: skip
    assert not (tmp_path / "o").exists()

    _one_line_error(capsys, "does not exist", "--model", tmp_path / "nope", "--output-dir", tmp_path / "o")
    _one_line_error(capsys, "no such file", "--from-log", tmp_path / "nope.json")
    _one_line_error(capsys, "--from-log only aggregates", "--from-log", path, "--config", "tiny_finetune")


def test_suite_flag_selects_wmdp_for_a_saved_model(evaluated, capsys):
    """`dsunlearn eval --model DIR --suite wmdp`: the WMDP log and summary (every question of the synthetic
    sets scored), printed as WMDP's table; --from-log --suite wmdp reads it back to the same numbers. WMDP never
    generates, so an eval.max_length past the model's 128 positions is not refused (TOFU's is: test_bad_input_values);
    astronomy is lm_eval's STEM (mmlu_stem_acc), the synthetic geography in no category."""
    root, _ = evaluated
    code, out, err = _main(capsys, "--model", root / "run" / "full" / "model", "--suite", "wmdp",
                           "data.wmdp.n_hazard=4", "data.wmdp.n_general=4", "eval.max_length=100000",
                           "--output-dir", root / "wmdp")  # fmt: skip
    assert code == 0, err
    summary = json.loads((root / "wmdp" / "eval" / "summary.json").read_text())
    assert set(summary) == {"wmdp_acc", "wmdp_bio_acc", "wmdp_cyber_acc", "mmlu_acc", "mmlu_geography_acc",
                            "mmlu_astronomy_acc", "mmlu_stem_acc"}  # fmt: skip
    assert summary["mmlu_stem_acc"] == summary["mmlu_astronomy_acc"]
    log = json.loads((root / "wmdp" / "eval" / "WMDP_EVAL.json").read_text())
    assert len(log["wmdp_bio_acc"]["value_by_index"]) == 4 and "wmdp_acc" in out
    code, again, err = _main(capsys, "--from-log", root / "wmdp" / "eval", "--suite", "wmdp", "--json")
    assert code == 0 and json.loads(again) == summary, err
