"""Progress of long steps: plain lines when no terminal is attached (logs, CI, pipes)."""

from __future__ import annotations

import logging

import pytest

from vatt.progress import Progress, track


@pytest.fixture
def no_terminal(monkeypatch):
    monkeypatch.setattr("vatt.progress.on_terminal", lambda: False)


def test_plain_lines_at_the_start_every_interval_and_at_the_end(no_terminal, monkeypatch, caplog):
    clock = iter([0.0, 3.0, 11.0, 12.0, 25.0, 30.0])  # start, then one reading per item, then the end
    monkeypatch.setattr("vatt.progress.time.monotonic", lambda: next(clock))
    log = logging.getLogger("test.progress")
    with caplog.at_level("INFO", logger="test.progress"):
        assert list(track(range(4), 4, "clips", log)) == [0, 1, 2, 3]
    assert [r.getMessage() for r in caplog.records] == [
        "clips: 4 to do",
        "clips: 2/4 (50%), 0:00:11 elapsed, ~0:00:11 left",  # 10 s after the start
        "clips: 4/4 (100%), 0:00:30 elapsed, ~0:00:00 left",  # the end, whatever the interval
    ]


def test_unknown_totals_and_disabled_progress(no_terminal, capsys):
    with Progress("items", None, every_s=1e9) as p:
        p.update(3)
    assert capsys.readouterr().err == "items: 3 done, 0:00:00 elapsed\n"
    assert list(track(range(2), 2, "quiet", enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""


def test_demo_generation_reports_its_progress(no_terminal, tmp_path, caplog):
    from vatt.data.demo import generate_demo

    with caplog.at_level("INFO", logger="vatt.data.demo"):
        generate_demo(tmp_path, num_train=3, num_val=1, duration=2.0, workers=1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"demo clips ({tmp_path}): 4 to do" and lines[-1].startswith(f"demo clips ({tmp_path}): 4/4 (100%)")


def test_feature_extraction_reports_its_progress(no_terminal, demo_root, caplog):
    import vatt
    from vatt.data.clip import ClipConfig
    from vatt.data.downstream import list_dataset
    from vatt.data.labeled import LabeledClipDataset
    from vatt.tasks.features import extract

    items = list_dataset("demo", demo_root, label="colour").splits[0].test
    ds = LabeledClipDataset(items, "video", ClipConfig(8, 10, 64, 16000), "single", 6)
    with caplog.at_level("INFO", logger="vatt.tasks.features"):
        extract(vatt.create_model("tiny"), ds, batch_size=4)
    assert [r.getMessage() for r in caplog.records][-1].startswith("features of 8 clips: 2/2 (100%)")
