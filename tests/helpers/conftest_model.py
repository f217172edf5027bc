"""Shared fixtures for the checkpoint / resume / UIPE tests: a tiny offline model and run helpers.

Import what you need from a test module (`from helpers.conftest_model import tiny_model, ...`); pytest then finds the
fixtures there. The model is a 2-layer, hidden-32 Llama with a 400-token BPE trained on the synthetic corpus:
built once per session, no download.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Small data and batches: 12 authors -> forget10 is 12 items, 6 optimizer steps at global batch 4.
SMALL_DATA = [
    "data.synthetic.n_authors=12",
    "data.synthetic.n_world_facts=8",
    "data.synthetic.n_real_authors=2",
    "engine.micro_batch_size=2",
    "engine.global_batch_size=4",
    "eval.batch_size=16",
]

# Every parameter partitioned (the default persistence threshold keeps tiny parameters whole on each rank).
ZERO3_PARTITIONED = {
    "zero_optimization": {
        "stage": 3,
        "stage3_param_persistence_threshold": 0,
        "overlap_comm": False,
        "contiguous_gradients": True,
    },
    "bf16": {"enabled": False},
}

# The sharded-unlearning tests' data (tests/distributed: unlearn_sharded, lora, rmu_sharded, bf16_stages):
# 10 synthetic authors, so forget10 = 1 author = 10 items and retain90 = 90 items, sequences of <= 64 tokens.
SHARDED_DATA = [
    "data.forget_split=forget10",
    "data.max_length=64",
    "data.synthetic.n_authors=10",
    "data.synthetic.n_world_facts=4",
    "data.synthetic.n_real_authors=2",
]


def write_zero3_config(path: Path) -> str:
    """ZERO3_PARTITIONED written as a DeepSpeed JSON at `path` (for `engine.ds_config`); the path as a string."""
    import json

    path.write_text(json.dumps(ZERO3_PARTITIONED))
    return str(path)


def build_tiny_model(path: Path) -> Path:
    """The tiny model with its tokenizer trained on the default (40-author) synthetic corpus."""
    from helpers.tiny_model import make_tiny_model

    path.mkdir(parents=True, exist_ok=True)
    return make_tiny_model(path, small_corpus=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Directory of the tiny model (theta_o) and its tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture(scope="session")
def zero3_config(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ds") / "zero3_partitioned.json"
    write_zero3_config(p)
    return p


def cli_env(**extra: str) -> dict:
    """The environment of a user's shell on this CPU box, without secrets, launcher variables or fault hooks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_TOKEN", "DSUNLEARN_TEST"))}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="offline",
    )
    env.update(extra)
    return env


def run_cli(args: list[str], nproc: int = 1, env: dict | None = None, timeout: int = 300):
    """`python -m dsunlearn ...` (nproc 1) or under `torch.distributed.run` (nproc > 1); CompletedProcess."""
    from dsunlearn.dist import free_port

    if nproc == 1:
        cmd = [sys.executable, "-m", "dsunlearn", *args]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "dsunlearn", *args,
        ]  # fmt: skip
    return subprocess.run(cmd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def load_weights(model_dir: Path) -> dict:
    """{name: tensor} of every safetensors file in an HF model directory."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def bits(t):
    """The fp32 bit pattern (so -0.0 != 0.0 and NaNs compare by payload)."""
    import torch

    return t.contiguous().float().view(torch.int32)


def unlearn_runs(runs: list[tuple[list[str], bool]]) -> list[str]:
    """Worker for `helpers.spawn.run_distributed`: `run_unlearn` on the shipped tiny_npo config with each
    (overrides, resume) in turn, in one process group (imports and rendezvous paid once)."""
    from dsunlearn.config_io import load_config
    from dsunlearn.recipes.unlearn import run_unlearn

    return [run_unlearn(load_config("tiny_npo", ov), resume=resume).output_dir for ov, resume in runs]
