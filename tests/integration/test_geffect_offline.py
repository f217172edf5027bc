"""`dsunlearn geffect` end to end: a tiny npo run (checkpoints at steps 2 and 4), its offline G-effect.

Checked: the states found (0, 2, 4), per-group sums = totals, step 0 against an independent float64 full-gradient
computation on the original model (plain torch autograd, no DeepSpeed), the same numbers on a second run, ga's
identity e_u = -||grad L_u||^2, the PNG, and one-line errors. The run and its first G-effect are built once per
session (`npo_run`) and shared with tests/distributed/test_geffect_offline_ranks.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

UNLEARN = [
    "data.synthetic.n_authors=12",
    "data.synthetic.n_world_facts=8",
    "data.synthetic.n_real_authors=2",
    "engine.micro_batch_size=4",
    "engine.global_batch_size=4",
    "engine.max_steps=4",
    "run.save_every=2",
    "eval.at_end=false",
    "eval.batch_size=16",
]
PROBE, PER_INSTANCE = 8, 2


def cli(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    from dsunlearn.dist import free_port

    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")  # fmt: skip
    env.pop("DSUNLEARN_TEST_KILL", None)
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
                     "--master_port", str(free_port())]  # fmt: skip
    p = subprocess.run([*launcher, "-m", "dsunlearn", *args], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p


def geffect_cli(run: Path, out: Path, nproc: int = 1) -> dict:
    # torchrun's parser refuses `--run` (a prefix of its --run-path): the alias --run-dir passes through.
    flag = "--run" if nproc == 1 else "--run-dir"
    cli(["geffect", flag, str(run), "--probe-size", str(PROBE), "--per-instance", str(PER_INSTANCE),
         "--output", str(out)], nproc)  # fmt: skip
    return json.loads(out.read_text())


def build_npo_run(root: Path) -> dict:
    """Tiny model + `dsunlearn unlearn --config tiny_npo` + `dsunlearn geffect` (1 process), once per session."""
    done = root / "DONE"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        from dsunlearn.config import TinyModelConfig
        from dsunlearn.models.tiny import build_tiny_model, train_tokenizer
        from dsunlearn.suites.tofu import synthetic

        tok = train_tokenizer(list(synthetic.corpus(synthetic.generate(seed=0))), vocab_size=400, max_length=64)
        cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
        model = build_tiny_model(cfg, tok, seed=0)
        model.save_pretrained(str(root / "model"))
        tok.save_pretrained(str(root / "model"))
        cli(["unlearn", "--config", "tiny_npo", "--output-dir", str(root / "run"),
             f"model.name_or_path={root / 'model'}", *UNLEARN])  # fmt: skip
        out = root / "run" / "geffect" / "geffect.json"
        cli(["geffect", "--run", str(root / "run"), "--probe-size", str(PROBE), "--per-instance", str(PER_INSTANCE)])
        assert out.is_file()
        done.write_text("ok")
    return {
        "model": root / "model",
        "run": root / "run",
        "result": json.loads((root / "run" / "geffect" / "geffect.json").read_text()),
    }


@pytest.fixture(scope="session")
def npo_run(tmp_path_factory) -> dict:
    return build_npo_run(tmp_path_factory.getbasetemp() / "geffect_offline_npo")


def float64_reference(model_dir: Path, run_dir: Path, n: int, k: int, ema: float | None = None) -> dict:
    """e_u, e_r per group and per instance at theta_o, from scratch: float64 model, plain autograd, full
    gradients. L_u = NPO (beta from the run config) with l_ref = l_theta (theta = theta_o at step 0).
    `ema`: the G-effect code's average instead of one mean: each gradient over consecutive chunks of the run's
    micro batch, G = g_1, then G = (1 - ema) G + ema g_k, and the inner products of those."""
    from transformers import AutoModelForCausalLM

    from dsunlearn.config_io import load_config
    from dsunlearn.data.collate import encode_items, pad_batch, pad_id_of
    from dsunlearn.engine.groups import group_of
    from dsunlearn.models.load import load_tokenizer
    from dsunlearn.suites.tofu.data import load_split

    cfg = load_config(str(run_dir / "config.yaml"))
    beta = cfg.objective.params["beta"] if cfg.objective.params.get("beta") is not None else 0.1
    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float64).eval()
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    d = cfg.data
    enc = {s: encode_items(tok, load_split(d, s)[:n], d)
           for s in (d.forget_split, d.retain_split)}  # fmt: skip

    def logp(items):
        b = pad_batch(items, pad_id_of(tok))
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        lab = b["labels"][:, 1:]
        mask = lab != -100
        lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1)
        return lp * mask, mask

    def grad(loss):
        return torch.autograd.grad(loss, [p for _, p in named])

    def risk(items):
        lp, mask = logp(items)
        return -lp.sum() / mask.sum()

    def npo(items):
        lp, _ = logp(items)
        seq = lp.sum(-1)
        return (-(2.0 / beta) * torch.nn.functional.logsigmoid(-beta * (seq - seq.detach()))).mean()

    def per_group(a, b):
        out: dict[str, float] = {}
        for (name, _), x, y in zip(named, a, b, strict=True):
            out[group_of(name)] = out.get(group_of(name), 0.0) + float((x * y).sum())
        return out

    forget, retain = enc[d.forget_split], enc[d.retain_split]
    g_u, g_rf, g_rr = grad(npo(forget)), grad(risk(forget)), grad(risk(retain))
    if ema is not None:
        m = cfg.engine.micro_batch_size
        pairs = list(zip([forget[i : i + m] for i in range(0, n, m)], [retain[i : i + m] for i in range(0, n, m)],
                         strict=True))  # fmt: skip
        g_u, g_rf, g_rr = grad(npo(pairs[0][0])), grad(risk(pairs[0][0])), grad(risk(pairs[0][1]))
        for f, r in pairs[1:]:
            new = grad(npo(f)), grad(risk(f)), grad(risk(r))
            g_u, g_rf, g_rr = ([(1 - ema) * a + ema * b for a, b in zip(old, x, strict=True)]
                               for old, x in zip((g_u, g_rf, g_rr), new, strict=True))  # fmt: skip
    per = []
    for item in forget[:k]:
        a, b = grad(risk([item])), grad(npo([item]))
        per.append(sum(float((x * y).sum()) for x, y in zip(a, b, strict=True)))
    return {"e_u": per_group(g_rf, g_u), "e_r": per_group(g_rr, g_u), "per_instance": per,
            "norm_u": sum(float((x * x).sum()) for x in g_u) ** 0.5}  # fmt: skip


def close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-30)


@pytest.mark.slow
def test_states_groups_and_png(npo_run):
    res = npo_run["result"]
    assert res["steps"] == [0, 2, 4]
    assert [r["source"] for r in res["checkpoints"]] == ["original", "checkpoints/step000002/delta", "delta"]
    assert res["groups"] == ["embed", "layers.0", "layers.1", "norm"]  # tied head: counted once, in embed
    assert res["probe"]["n_forget"] == res["probe"]["n_retain"] == PROBE
    for r in res["checkpoints"]:
        assert len(r["geffect_u_groups"]) == len(r["geffect_r_groups"]) == len(res["groups"])
        assert close(sum(r["geffect_u_groups"]), r["geffect_u"], 1e-12)
        assert close(sum(r["geffect_r_groups"]), r["geffect_r"], 1e-12)
        assert r["geffect_u"] < 0  # NPO lowers the forget likelihood
        assert -1.0 <= r["geffect_cos_u"] <= 1.0 and -1.0 <= r["geffect_cos_r"] <= 1.0
        assert [p["index"] for p in r["per_instance"]] == list(range(PER_INSTANCE))
    # Unlearning moves the weights: the forget risk on the probe rises step after step.
    risks = [r["risk_forget"] for r in res["checkpoints"]]
    assert risks[0] < risks[1] < risks[2]
    png = npo_run["run"] / "geffect" / "geffect.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@pytest.mark.slow
def test_step0_matches_float64_reference(npo_run):
    ref = float64_reference(npo_run["model"], npo_run["run"], PROBE, PER_INSTANCE)
    s0 = npo_run["result"]["checkpoints"][0]
    groups = npo_run["result"]["groups"]
    assert sorted(groups) == sorted(ref["e_u"])
    for name, key in (("e_u", "geffect_u"), ("e_r", "geffect_r")):
        assert close(s0[key], sum(ref[name].values()), 1e-5), (name, s0[key], sum(ref[name].values()))
        for g, v in zip(groups, s0[f"{key}_groups"], strict=True):
            assert close(v, ref[name][g], 1e-5), (name, g, v, ref[name][g])
    assert close(s0["grad_norm_objective"], ref["norm_u"], 1e-5)
    for got, want in zip(s0["per_instance"], ref["per_instance"], strict=True):
        assert close(got["geffect_u"], want, 1e-5), (got, want)


@pytest.mark.slow
def test_ema_matches_float64_reference(npo_run, tmp_path):
    """`--ema 0.4` (the G-effect code's ".6 * old + .4 * new" over the probe's micro-batches: 8 items = 2 chunks
    of 4) against the same EMA of float64 chunk gradients, at step 0; and not the plain mean's numbers."""
    out = tmp_path / "ema.json"
    cli(["geffect", "--run", str(npo_run["run"]), "--probe-size", str(PROBE), "--ema", "0.4", "--output", str(out)])
    res = json.loads(out.read_text())
    assert res["probe"]["average"] == {"ema_new_weight": 0.4, "micro_batch": 4, "chunks": 2}
    ref = float64_reference(npo_run["model"], npo_run["run"], PROBE, 0, ema=0.4)
    s0 = res["checkpoints"][0]
    for name, key in (("e_u", "geffect_u"), ("e_r", "geffect_r")):
        assert close(s0[key], sum(ref[name].values()), 1e-5), (name, s0[key], sum(ref[name].values()))
        for g, v in zip(res["groups"], s0[f"{key}_groups"], strict=True):
            assert close(v, ref[name][g], 1e-5), (name, g, v, ref[name][g])
    assert close(s0["grad_norm_objective"], ref["norm_u"], 1e-5)
    plain = npo_run["result"]["checkpoints"][0]
    assert not close(s0["geffect_r"], plain["geffect_r"], 1e-3)  # the average is another one
    assert res["steps"] == [0, 2, 4]


@pytest.mark.slow
def test_same_numbers_twice(npo_run, tmp_path):
    again = geffect_cli(npo_run["run"], tmp_path / "again.json")
    assert again["checkpoints"] == npo_run["result"]["checkpoints"]


@pytest.mark.slow
def test_ga_unlearning_geffect_is_minus_squared_norm(npo_run, tmp_path):
    """GA's loss is -R(D_f), so grad R(D_f) = -grad L_u and e_u = -||grad L_u||^2 (cos_u = -1), also per
    instance. Evaluated on the npo run's saved weights with the objective switched to ga (no second run)."""
    run = tmp_path / "run_ga"
    shutil.copytree(npo_run["run"], run, ignore=shutil.ignore_patterns("geffect"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["objective"].update(name="ga", retain_loss="none", beta=None)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = geffect_cli(run, run / "geffect" / "geffect.json")
    assert res["objective"] == "ga" and res["steps"] == [0, 2, 4]
    for r in res["checkpoints"]:
        assert r["geffect_u"] < 0 and close(r["geffect_u"], -(r["grad_norm_objective"] ** 2), 1e-6)
        assert close(r["geffect_cos_u"], -1.0, 1e-6)
        for p in r["per_instance"]:
            assert p["geffect_u"] < 0 and close(p["geffect_u"], -(p["grad_norm_objective"] ** 2), 1e-6)
    assert (run / "geffect" / "geffect.png").is_file()


def test_errors_are_one_line(tmp_path, capsys):
    from dsunlearn.cli import main

    assert main(["geffect", "--run", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not a dsunlearn run directory" in err
    (tmp_path / "config.yaml").write_text("{}\n")
    (tmp_path / "checkpoints" / ".staging").mkdir(parents=True)
    assert main(["geffect", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no saved weights" in err
    for bad in ("0", "1.5", "nan"):
        assert main(["geffect", "--run", str(tmp_path), "--ema", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--ema" in err, err
