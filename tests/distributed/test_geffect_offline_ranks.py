"""`dsunlearn geffect` under torchrun with 2 CPU ranks gives the 1-process numbers (same probe chunks; only the
order of the gradient sums differs), per checkpoint, per layer group and per instance."""

from __future__ import annotations

import pytest
from integration.test_geffect_offline import build_npo_run, close, geffect_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_two_processes_match_one(tmp_path_factory, tmp_path):
    shared = build_npo_run(tmp_path_factory.getbasetemp() / "geffect_offline_npo")
    one = shared["result"]
    two = geffect_cli(shared["run"], tmp_path / "two.json", nproc=2)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["steps"] == one["steps"] == [0, 2, 4] and two["groups"] == one["groups"]
    for a, b in zip(one["checkpoints"], two["checkpoints"], strict=True):
        for key in ("geffect_u", "geffect_r", "geffect_cos_u", "geffect_cos_r", "grad_norm_objective", "risk_forget",
                    "risk_retain"):  # fmt: skip
            assert close(a[key], b[key], 1e-5), (a["step"], key, a[key], b[key])
        for key in ("geffect_u_groups", "geffect_r_groups"):
            for x, y in zip(a[key], b[key], strict=True):
                assert abs(x - y) <= 1e-5 * max(abs(a["geffect_u"]), abs(a["geffect_r"])), (a["step"], key, x, y)
        for p, q in zip(a["per_instance"], b["per_instance"], strict=True):
            assert close(p["geffect_u"], q["geffect_u"], 1e-5), (a["step"], p, q)
    assert (tmp_path / "two.png").is_file()
