"""`read_events`: the one reader of events.jsonl, also for files that are untrusted or cut by a crash."""

from __future__ import annotations

from dsunlearn.tracking import EventLog, read_events


def test_written_events_read_back_in_order(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.log("start", steps=3)
    log.log("unlearn_step", step=1, loss_forget=float("nan"))
    log.log("done", steps=3)
    log.close()
    assert [e["event"] for e in read_events(tmp_path / "events.jsonl")] == ["start", "unlearn_step", "done"]
    (step,) = read_events(tmp_path / "events.jsonl", "unlearn_step")
    assert step["step"] == 1 and step["loss_forget"] == "nan"  # non-finite floats kept visible as strings


def test_damaged_lines_are_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event": "start", "steps": 4}\n[1, 2]\n\xff\xfe garbage\n\n{"event": "done", "st')
    assert read_events(path) == [{"event": "start", "steps": 4}]  # a list is no record; the cut line is dropped


def test_at_most_max_bytes_are_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "a"}\n{"event": "b"}\n')
    assert [e["event"] for e in read_events(path, max_bytes=16)] == ["a"]
