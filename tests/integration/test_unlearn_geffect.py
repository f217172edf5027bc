"""`dsunlearn unlearn` end to end on a fine-tuned tiny model, objective ga, G-effect logged every step.

The model: /tmp/ft_full/full/model when a previous `dsunlearn finetune` left it there with a high forget answer
probability (its data settings are read from /tmp/ft_full/config.yaml), else a small model fine-tuned here.
Checks on events.jsonl: every step has the unlearning / retaining G-effect with per-layer values (embed,
layers.i, norm) that sum to the totals; for GA e_u = -||grad L_u||^2 < 0, and every layer's share is negative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

SHARED_RUN = Path("/tmp/ft_full")
STEPS = 4
SMALL_FINETUNE = [
    "model.tiny.hidden_size=64",
    "model.tiny.num_layers=2",
    "model.tiny.intermediate_size=128",
    "model.tiny.vocab_size=400",
    "run.finetune_targets=[full]",
    "engine.epochs=40",
    "engine.lr=3e-3",
    "engine.micro_batch_size=16",
    "engine.global_batch_size=16",
    "engine.grad_accum_steps=1",
    "eval.at_end=false",
]
SMALL_DATA = ["data.synthetic.n_authors=10", "data.synthetic.n_world_facts=4", "data.synthetic.n_real_authors=2"]


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dsunlearn", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def _shared_model() -> tuple[str, list[str]] | None:
    """(model dir, data overrides) of /tmp/ft_full when it holds a well fine-tuned full model, else None."""
    model, summary, cfg = SHARED_RUN / "full" / "model", SHARED_RUN / "finetune.json", SHARED_RUN / "config.yaml"
    if not ((model / "config.json").is_file() and summary.is_file() and cfg.is_file()):
        return None
    try:
        prob = json.loads(summary.read_text())["models"]["full"]["prob_after"]["forget"]
        data = yaml.safe_load(cfg.read_text())["data"]
    except (KeyError, TypeError, ValueError):
        return None
    if prob < 0.8:
        return None
    syn = data["synthetic"]
    keys = ("seed", "n_authors", "n_world_facts", "n_real_authors", "n_perturbed")
    return str(model), [f"data.forget_split={data['forget_split']}", f"data.max_length={data['max_length']}"] + [
        f"data.synthetic.{k}={syn[k]}" for k in keys if k in syn
    ]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    shared = _shared_model()
    if shared is not None:
        return shared
    out = tmp_path_factory.mktemp("ft") / "run"
    r = _cli("finetune", "--config", "tiny_finetune", *SMALL_FINETUNE, *SMALL_DATA, "--output-dir", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    prob = json.loads((out / "finetune.json").read_text())["models"]["full"]["prob_after"]["forget"]
    assert prob > 0.8, f"fine-tuning left the forget answer probability at {prob:.3f}"
    return str(out / "full" / "model"), SMALL_DATA


def test_unlearn_cli_ga_logs_negative_geffect_per_layer(finetuned, tmp_path):
    model, data = finetuned
    out = tmp_path / "ga"
    r = _cli(
        "unlearn", "--config", "tiny_ga", f"model.name_or_path={model}", *data,
        "objective.name=ga", "objective.retain_loss=none", "geometry.gru=false", "geometry.geffect_every=1",
        f"engine.max_steps={STEPS}", "engine.micro_batch_size=8", "engine.global_batch_size=8",
        "engine.grad_accum_steps=1", "eval.at_end=false", "--output-dir", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    steps = [e for e in events if e["event"] == "unlearn_step"]
    assert [e["step"] for e in steps] == list(range(1, STEPS + 1))
    n_layers = json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]
    want_groups = ["embed"] + [f"layers.{i}" for i in range(n_layers)] + ["norm"]  # lm_head tied to embed
    for e in steps:
        assert e["geffect_groups"] == want_groups
        for kind in ("u", "r"):
            per = e[f"geffect_{kind}_groups"]
            assert len(per) == len(want_groups)
            assert sum(per) == pytest.approx(e[f"geffect_{kind}"], rel=1e-9, abs=1e-12)
        # GA: grad R(D_f) = -grad L_ga, so e_u = -||grad L_u||^2 in total and in every layer group
        assert e["geffect_u"] < 0
        assert e["geffect_u"] == pytest.approx(-(e["grad_norm_objective"] ** 2), rel=1e-9)
        assert all(x < 0 for x in e["geffect_u_groups"]), e["geffect_u_groups"]
        assert e["geffect_cos_u"] == pytest.approx(-1.0, abs=1e-9)
    assert (out / "model" / "config.json").is_file()
    assert events[-1]["event"] == "done"
