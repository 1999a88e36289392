"""Sweeps you can compare: HParams with metric columns in every run's events, and ``make report`` on a sweep."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import hparams_session
from vatt.report import job_folders, markdown, report


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, demo_root) -> Path:
    """A 2-job DropToken sweep of the tiny model, 6 steps each with a validation, as a user starts it."""
    cwd = tmp_path_factory.mktemp("sweep")
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "vatt.train", "--multirun", "data=manifest", f"data.path={demo_root}", "data.batch_size=4",
         "model.droptoken=0.0,0.5", "trainer.max_steps=6", "trainer.log_every_n_steps=1"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder,) = (cwd / "logs" / "train" / "multiruns").iterdir()
    return folder


@pytest.mark.slow
def test_every_run_logs_its_settings_with_metric_columns_for_the_hparams_view(sweep):
    jobs = job_folders(sweep)
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    rates = []
    for job in jobs:
        values, metrics = hparams_session(job)
        rates.append(values["model.droptoken"])
        assert values["model"] == "vatt_tiny" and values["model.name"] == "tiny" and values["experiment"] == "demo"
        assert values["data.batch_size"] == 4 and values["model.loss.mil_nce_weight"] == 1.0
        assert {"val/t2v_R@10", "val/v2a_R@10", "train/loss", "val/t2v_R@10_best"} <= set(metrics)
        assert not any(k.startswith(("paths.", "hydra.")) for k in values)
    assert rates == [0.0, 0.5]


@pytest.mark.slow
def test_report_tabulates_a_sweep_and_draws_its_plots(sweep, capsys):
    from vatt.report import main

    written = main([str(sweep)])
    table = (sweep / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2
    assert "model.droptoken=0.0" in rows[0] and "model.droptoken=0.5" in rows[1]
    assert "data.path" not in table  # where the data is, not a setting
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    gflops = [float(c[3]) for c in cells]
    assert cells[0][2] == cells[1][2] == "2.21"  # the tiny model's parameters (M), both jobs
    from vatt.flops import forward_gflops

    # the tiny preset's own geometry is vatt_tiny's (8 x 64^2 frames, 0.8 s at 16 kHz): the same count as make flops
    assert cells[0][3] == f"{forward_gflops('tiny', 0.0)['total']:.2f}"
    assert cells[1][3] == f"{forward_gflops('tiny', 0.5)['total']:.2f}" and gflops[1] < gflops[0]
    for c in cells:
        assert all(0.0 <= float(x) <= 1.0 for x in c[6:10])  # final and best R@10 of both directions
        assert float(c[7]) >= float(c[6]) and float(c[9]) >= float(c[8])  # best >= final
        assert float(c[4]) > 0  # samples/s
        assert c[5] == "8 (smoke test)"  # 8 validation clips: R@10 is 1 by chance, and the table says so
    assert "smoke test: validated on fewer than 100 clips" in table
    for name in ("curves", "droptoken"):
        width, height = _png_size(written[name])
        assert width >= 400 and height >= 300 and written[name].stat().st_size > 5000
    assert "report.md" in capsys.readouterr().out


def test_report_of_downstream_runs_tabulates_their_metrics(tmp_path):
    for name, top1 in (("0_pretrained=a", 0.9), ("1_pretrained=null", 0.5)):
        job = tmp_path / name
        (job / ".hydra").mkdir(parents=True)
        (job / "metrics.json").write_text(f'{{"test/top1": {top1}, "num_test": 256, "task": "finetune"}}')
    written = report(tmp_path)
    table = written["report"].read_text()
    assert "| job | num_test | test/top1 |" in table
    assert "| 0_pretrained=a | 256 | 0.900 |" in table and "| 1_pretrained=null | 256 | 0.500 |" in table


def test_report_names_a_folder_that_holds_no_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        report(tmp_path)


def test_markdown_marks_missing_values():
    row = {"job": "0_x", "overrides": ["model.droptoken=0.5", "paths.root_dir=/x"], "params_m": 2.2, "gflops": float("nan"),
           "samples_per_s": 10.0, **{f"{t}_{k}": float("nan") for t in ("val/t2v_R@10", "val/v2a_R@10")
                                     for k in ("final", "best")}}
    line = markdown([row]).splitlines()[2]
    assert line.startswith("| 0 | `model.droptoken=0.5` | 2.20 | – | 10.0 | – |")


@pytest.mark.slow
def test_a_validation_writes_the_projector_a_map_and_retrieval_examples(tmp_path, demo_root):
    """Labelled demo clips, the embeddings callback due at every validation."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import make_cfg, small_data
    from vatt.train import train

    cfg = make_cfg(tmp_path, [*small_data(demo_root), "data.batch_size=4", "trainer.max_steps=4",
                              "callbacks.embeddings.every_n_validations=1"])
    train(cfg)
    board = tmp_path / "run" / "tensorboard"
    config = (board / "projector_config.pbtxt").read_text()
    for tag in ("val_video_va", "val_audio_va", "val_video_vt"):
        assert f'tensor_name: "{tag}:' in config
    steps = sorted(p for p in board.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in steps][-1] == "00004"  # the step of the validation
    video = steps[-1] / "val_video_va"
    tensors = [line.split("\t") for line in (video / "tensors.tsv").read_text().splitlines()]
    meta = (video / "metadata.tsv").read_text().splitlines()
    assert len(tensors) == 8 and all(len(t) == 512 for t in tensors)  # 8 val clips, va space of the tiny model
    assert meta[0] == "clip\tcaption\tcolour\tmotion\tshape" and len(meta) == 9
    assert meta[1].startswith("000000.mp4\t")
    images = set()
    for events in board.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        images |= set(acc.Tags()["images"])
    assert {"val/embedding_map", "val/retrieval_examples"} <= images


def test_the_embedding_map_is_coloured_by_the_first_label_else_the_caption():
    from vatt.lightning import EmbeddingViews

    header = ["clip", "caption", "colour", "shape"]
    meta = [["a.mp4", "a red box", "red", "square"], ["b.mp4", "-", "blue", "circle"]]
    assert EmbeddingViews.colour_by(meta, header) == (2, ["red", "blue"])
    assert EmbeddingViews.colour_by([m[:2] for m in meta], header[:2]) == (1, ["a", "-"])
