"""W&B offline: no account, no network, no prompt; the run file holds config, per-step metrics (G-effect per
layer included) and the eval summary; secrets never reach any file dsunlearn writes."""

import glob
import os
import subprocess
import sys

import pytest

from helpers.tiny_model import SMALL_DATA, make_tiny_model
from helpers.wandb_reader import read_run

pytestmark = pytest.mark.slow


def test_unlearn_logs_to_offline_wandb(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    out = tmp_path / "run"
    secret = "sk-test-0123456789abcdef"
    env = {**os.environ, "WANDB_API_KEY": secret, "DS_ACCELERATOR": "cpu"}
    # eval.retain_log=null: there is no retain model here (the shipped config names one)
    cmd = [sys.executable, "-m", "dsunlearn", "unlearn", "--config", "tiny_npo_gru", "--output-dir", str(out),
           f"model.name_or_path={model}", "engine.micro_batch_size=4", "engine.global_batch_size=4",
           "engine.max_steps=3", "geometry.geffect_every=1", "tracking.wandb=true", "tracking.mode=offline",
           "eval.max_items=8", "eval.retain_log=null", *SMALL_DATA]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_file,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    run = read_run(run_file)
    steps = [h for h in run["history"] if "loss_forget" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    assert all("geffect_u/layers.0" in h and "gru_dot" in h for h in steps)
    assert run["config"]["objective"]["name"] == "npo" and run["config"]["geometry"]["gru"] is True
    assert "model_utility" in run["summary"]
    for root, _, files in os.walk(out):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret.encode() not in fh.read(), f"secret leaked into {f}"
    assert secret not in r.stdout + r.stderr
