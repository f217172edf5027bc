"""`RankState`: this rank's resume state beside DeepSpeed's (`extra_rank{r}.safetensors`) round-trips exactly,
keeps its on-disk form (safetensors tensors `rng` / `gru_ema`, JSON under `dsunlearn_resume`), and a damaged or
foreign file is a one-line RunError."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from dsunlearn.engine.checkpoint import EXTRA_KEY, RankState
from dsunlearn.engine.shard import ShardedGrad, ShardLayout
from dsunlearn.errors import RunError
from dsunlearn.geometry.gru import GRU


def _grad(values: list[float]) -> ShardedGrad:
    n = len(values)
    layout = ShardLayout.build([("model.embed_tokens.weight", n, 0, n)], ["model.embed_tokens.weight"], "cpu")
    return ShardedGrad(torch.tensor(values, dtype=torch.float32), layout)


def test_round_trip_with_gru(tmp_path):
    torch.manual_seed(3)
    gru = GRU(0.7)
    gru.update_ema(_grad([1.0, -2.0, 0.5]))
    state = RankState.capture(gru, step=12)
    path = tmp_path / "extra_rank0.safetensors"
    path.write_bytes(state.to_bytes())
    back = RankState.read(path)
    assert (back.step, back.world_size, back.gru_c) == (12, 1, 0.7)
    assert torch.equal(back.rng, torch.get_rng_state())
    assert torch.equal(back.gru_ema, torch.tensor([0.7, -1.4, 0.35], dtype=torch.float32))
    torch.rand(5)  # the RNG moves on; restore brings it back, and GRU's EMA and c
    fresh = GRU(0.1)
    back.restore(fresh)
    assert torch.equal(torch.get_rng_state(), state.rng)
    assert fresh.state_dict()["c"] == 0.7 and torch.equal(fresh.state_dict()["ema"], state.gru_ema)


def test_round_trip_without_gru_and_file_layout(tmp_path):
    state = RankState.capture(None, step=4)
    path = tmp_path / "extra_rank0.safetensors"
    path.write_bytes(state.to_bytes())
    with safe_open(str(path), framework="pt") as fh:
        assert set(fh.keys()) == {"rng"}
        assert json.loads(fh.metadata()[EXTRA_KEY]) == {"step": 4, "world_size": 1, "gru_c": None}
    back = RankState.read(path)
    assert back.gru_c is None and back.gru_ema is None and torch.equal(back.rng, state.rng)
    back.restore(None)  # no GRU: only the RNG


def test_gru_before_its_first_update_saves_no_ema(tmp_path):
    path = tmp_path / "extra_rank0.safetensors"
    path.write_bytes(RankState.capture(GRU(0.8), step=0).to_bytes())
    back = RankState.read(path)
    assert back.gru_c == 0.8 and back.gru_ema is None


@pytest.mark.parametrize("content", [b"not a safetensors file", b""])
def test_damaged_file_is_a_run_error(tmp_path, content):
    path = tmp_path / "extra_rank0.safetensors"
    path.write_bytes(content)
    with pytest.raises(RunError, match="not a dsunlearn resume state or it is damaged"):
        RankState.read(path)


def test_foreign_safetensors_is_a_run_error(tmp_path):
    from safetensors.torch import save

    path = tmp_path / "extra_rank0.safetensors"
    path.write_bytes(save({"rng": torch.zeros(3, dtype=torch.uint8)}, metadata={EXTRA_KEY: '{"step": "x"}'}))
    with pytest.raises(RunError, match="damaged"):
        RankState.read(path)
