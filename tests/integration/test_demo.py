"""`dsunlearn demo --quick`: the whole pipeline's code path end to end (tiny data, few steps), its outputs."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quick_demo_writes_summary_report_and_plots(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "dsunlearn", "demo", "--quick", "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())
    assert [row["name"] for row in rows[:2]] == ["finetuned", "retain"]
    keys = {"name", "objective", "gru", "forget_quality", "model_utility", "forget_rouge", "wall_seconds"}
    assert all(set(row) == keys for row in rows)
    assert {(row["objective"], row["gru"]) for row in rows[2:]} == {("npo", False), ("npo", True), ("wga", False),
                                                                   ("wga", True)}  # fmt: skip
    assert rows[1]["forget_quality"] == 1.0  # the retain model against itself
    report = (out / "report.md").read_text()
    for png in ("plots/fq_vs_mu.png", "plots/loss_curves.png", "plots/geffect_npo_gru.png", "runs/wga/uipe/sweep.png"):
        assert (out / png).stat().st_size > 10_000 and png in report
    sweep = json.loads((out / "runs" / "wga" / "uipe" / "sweep.json").read_text())
    assert [row["alpha"] for row in sweep["rows"]] == [0.0, 0.1, 0.25, 0.5, 1.0]
    assert (out / "runs" / "npo_gru" / "geffect" / "geffect.json").is_file()
    attacks = (out / "attacks.md").read_text()  # the robustness section: int4 on every run (no GA in --quick)
    for name in ("npo", "npo_gru", "wga", "wga_gru"):
        assert f"| {name} | int4_g128_sym |" in attacks
        assert (out / "runs" / name / "attacks" / "int4_g128_sym" / "summary.json").is_file()
    assert (out / "plots" / "attacks_int4.png").stat().st_size > 10_000
    assert "demo finished" in r.stdout
    # an existing demo is never replaced silently
    again = subprocess.run([sys.executable, "-m", "dsunlearn", "demo", "--quick", "--output-dir", str(out)],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_quick_muse_demo_writes_its_table_report_and_plot(tmp_path):
    out = tmp_path / "muse_demo"
    r = subprocess.run([sys.executable, "-m", "dsunlearn", "demo", "--suite", "muse", "--quick", "--output-dir",
                        str(out)], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())
    assert [row["name"] for row in rows] == ["target", "retrained", "npo", "npo_gru"]
    keys = {"name", "objective", "gru", "verbmem_f", "knowmem_f", "knowmem_r", "privleak", "wall_seconds"}
    assert all(set(row) == keys for row in rows)
    assert rows[1]["privleak"] == 0.0  # the retrained model against itself
    for row in rows[2:]:  # unlearned runs: PrivLeak against the retrained model's own log
        log = json.loads((out / "runs" / row["name"] / "eval" / "MUSE_EVAL.json").read_text())
        assert log["privleak"]["reference"] == "retain_log (privleak)"
    report = (out / "report.md").read_text()
    assert "| KnowMem_r |" in report and (out / "plots" / "muse.png").stat().st_size > 10_000
    assert "plots/muse.png" in report and "VerbMem_f" in r.stdout


def test_quick_wmdp_demo_writes_its_table_report_and_plot(tmp_path):
    out = tmp_path / "wmdp_demo"
    r = subprocess.run([sys.executable, "-m", "dsunlearn", "demo", "--suite", "wmdp", "--quick", "--output-dir",
                        str(out)], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())
    assert [row["name"] for row in rows] == ["target", "graddiff"]
    keys = {"name", "objective", "gru", "wmdp_acc", "wmdp_bio_acc", "wmdp_cyber_acc", "mmlu_acc", "wall_seconds"}
    assert all(set(row) == keys for row in rows) and all(0.0 <= row["wmdp_acc"] <= 1.0 for row in rows)
    log = json.loads((out / "runs" / "graddiff" / "eval" / "WMDP_EVAL.json").read_text())
    assert len(log["wmdp_bio_acc"]["value_by_index"]) == 8  # --quick: 8 questions per hazardous subset
    report = (out / "report.md").read_text()
    assert "| WMDP acc |" in report and (out / "plots" / "wmdp.png").stat().st_size > 10_000
    assert "plots/wmdp.png" in report and "general / target" in r.stdout
