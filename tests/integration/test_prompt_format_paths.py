"""One prompt format for every path: `dsunlearn finetune` (its training/probe encodings and the TOFU eval it
writes with `eval.at_end`), `dsunlearn unlearn` (UnlearnRun's forget/retain encodings) and the evaluation all
encode the same tokens for one config (here `tofu_phi` + `tofu_official`, on a tokenizer that has a chat
template, so `auto` would give other tokens). One real single-rank DeepSpeed job."""

import json

import pytest

from helpers.spawn import run_distributed

pytestmark = pytest.mark.slow  # one spawn: two tiny fine-tunes, their evaluation, one UnlearnRun: ~30 s

DATA = ["data.synthetic.n_authors=4", "data.synthetic.n_world_facts=4", "data.synthetic.n_real_authors=1",
        "data.max_length=128", "data.prompt_format=tofu_phi", "data.tofu_official=true"]  # fmt: skip
EVAL = ["eval.max_items=4", "eval.batch_size=4", "eval.max_new_tokens=4", "eval.max_length=128"]
TINY = ["model.tiny.hidden_size=16", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=32", "model.tiny.vocab_size=300"]  # fmt: skip
ENGINE = ["engine.max_steps=2", "engine.micro_batch_size=4", "engine.global_batch_size=4", "engine.grad_accum_steps=1"]


def _paths(out):
    import dataclasses
    from pathlib import Path

    from dsunlearn.config_io import load_config
    from dsunlearn.data.collate import encode_items
    from dsunlearn.eval.nll import answer_nll_sums
    from dsunlearn.models.load import load_causal_lm, load_tokenizer
    from dsunlearn.recipes.finetune import _probe_sets, base_tokenizer, run_finetune
    from dsunlearn.recipes.unlearn import UnlearnRun
    from dsunlearn.suites.tofu.data import load_split

    out = Path(out)
    cfg = load_config("tiny_finetune", TINY + DATA + EVAL + ENGINE + [f"run.output_dir={out}"])
    run_finetune(cfg)
    tok = base_tokenizer(cfg)
    assert tok.chat_template  # auto would pick the template: the format must come from the config
    finetune = _probe_sets(cfg, tok)
    ucfg = load_config("tiny_npo", DATA + EVAL + ENGINE + [f"model.name_or_path={out / 'full' / 'model'}",
                       f"run.output_dir={out / 'unlearn'}", "eval.at_end=false"])  # fmt: skip
    run = UnlearnRun(ucfg)
    unlearn = {"forget": run.forget, "retain": run.retain}
    # Evaluation: the log finetune wrote for the full model vs the NLL of the config's encodings of its items.
    items = load_split(cfg.data, "forget10_perturbed")[:4]
    enc = encode_items(load_tokenizer(str(out / "full" / "model")), items, cfg.data)
    sums, counts = answer_nll_sums(load_causal_lm(str(out / "full" / "model")), enc, 4, tok.eos_token_id)
    auto = encode_items(tok, items, dataclasses.replace(cfg.data, prompt_format="auto", tofu_official=False))
    as_lists = {k: [(e.input_ids, e.labels) for e in v] for k, v in finetune.items()}
    return as_lists, {k: [(e.input_ids, e.labels) for e in v] for k, v in unlearn.items()}, sums, counts, \
        [(e.input_ids, e.labels) for e in enc], [(e.input_ids, e.labels) for e in auto]  # fmt: skip


def test_finetune_unlearn_eval_share_the_format(tmp_path):
    from dsunlearn.suites.tofu import log as tofu_log

    out = tmp_path / "ft"
    ((finetune, unlearn, sums, counts, enc, auto),) = run_distributed(_paths, 1, str(out))
    assert finetune == unlearn  # same forget and retain token ids and labels in both trainers
    assert enc != auto  # the configured format really differs from the tokenizer's default here
    full = json.loads((out / "full" / "eval" / "eval_log_aggregated.json").read_text())
    assert list(full) == list(tofu_log.SPLITS)  # TOFU's split order on disk
    forget = full[tofu_log.FORGET]
    assert [forget["num_token_gt"][str(i)] for i in range(4)] == counts
    assert [forget["gt_loss"][str(i)] for i in range(4)] == pytest.approx(sums, abs=1e-4)
    assert all(forget["generated_text"][str(i)][0].endswith("\n") for i in range(4))  # TOFU's phi prompt
    # finetune wrote both models' evaluation; the full model's forget quality is against the retain model's log
    retain_summary = json.loads((out / "retain" / "eval" / "summary.json").read_text())
    full_summary = json.loads((out / "full" / "eval" / "summary.json").read_text())
    assert "forget_quality" not in retain_summary and 0.0 <= full_summary["forget_quality"] <= 1.0
    ft = json.loads((out / "finetune.json").read_text())
    assert ft["models"]["full"]["eval"] == full_summary and ft["models"]["retain"]["eval"] == retain_summary


def test_finetune_missing_eval_split_says_eval_at_end(tiny_tokenizer, tmp_path):
    """With eval.at_end (default) a missing evaluation split is refused before training, naming the way out."""
    from test_bad_input import local_data, write_tofu_dir

    from dsunlearn.config_io import load_config
    from dsunlearn.errors import DataError
    from dsunlearn.recipes.finetune import check_eval_inputs

    cfg = load_config("tiny_finetune", local_data(write_tofu_dir(tmp_path / "data", retain_perturbed=None)))
    with pytest.raises(DataError, match=r"retain_perturbed.*eval\.at_end=false skips it") as err:
        check_eval_inputs(cfg, tiny_tokenizer)
    assert "\n" not in str(err.value)
    check_eval_inputs(load_config("tiny_finetune", local_data(write_tofu_dir(tmp_path / "ok"))), tiny_tokenizer)
