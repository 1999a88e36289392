"""Logger groups: ``logger=csv|wandb|mlflow|many`` (or a list) write the same metrics and settings, offline.

Each test trains the tiny model for 2 steps on the small demo copy (one validation at the end) in this
process and reads back what its loggers wrote.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from conftest import make_cfg, small_data

# 2 steps of 4 clips, one validation at the end (FinalValidation), every step logged, no loader workers
SHORT = ["data.batch_size=4", "trainer.max_steps=2", "trainer.log_every_n_steps=1", "data.num_workers=0",
         "~callbacks.progress_bar"]
# what the run sets for its loggers, restored after each run
_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SILENT", "MLFLOW_ALLOW_FILE_STORE")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def train_with(out: Path, demo_root: Path, logger: str, *extra: str) -> tuple[Path, list[str]]:
    """A 2-step run with ``logger=<logger>``, no API key in the environment: (the run folder, its vatt.* log lines)."""
    from vatt.train import train

    saved = {k: os.environ.pop(k, None) for k in _ENV}  # no key: wandb must go offline by itself
    vatt_log, handler = logging.getLogger("vatt"), _Lines()
    level = vatt_log.level
    vatt_log.addHandler(handler)
    vatt_log.setLevel(logging.INFO)
    try:
        train(make_cfg(out, [*small_data(demo_root), f"logger={logger}", *SHORT, *extra]))
    finally:
        vatt_log.removeHandler(handler)
        vatt_log.setLevel(level)
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    return out / "run", handler.lines


def csv_metrics(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    import csv

    with open(run / "csv" / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return list(reader.fieldnames or []), rows


def wandb_record(run: Path) -> bytes:
    """The bytes of the run's offline ``.wandb`` file (wandb 0.31 has no Python reader of it: its protobuf
    records hold metric names and config keys as plain strings)."""
    (folder,) = (run / "wandb").glob("offline-run-*")
    (record,) = folder.glob("run-*.wandb")
    return record.read_bytes()


def mlflow_run(run: Path) -> Path:
    """The one MLflow run of the run's file store (``mlruns/<experiment id>/<run id>/``)."""
    (meta,) = [m for m in (run / "mlruns").glob("*/meta.yaml") if "name: vatt" in m.read_text()]
    (folder,) = [p for p in meta.parent.iterdir() if p.is_dir() and (p / "metrics").is_dir()]
    return folder


def mlflow_metric(folder: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) of one metric: each line of ``metrics/<name>`` is ``timestamp value step``."""
    lines = (folder / "metrics" / name).read_text().split("\n")
    return [(int(s), float(v)) for _, v, s in (line.split() for line in lines if line.strip())]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, demo_root) -> tuple[Path, list[str]]:
    return train_with(tmp_path_factory.mktemp("csv"), demo_root, "csv")


def test_logger_groups_compose_alone_together_and_as_a_list(tmp_path):
    keys = {o: list(make_cfg(tmp_path, [o]).logger or {}) for o in
            ("logger=csv", "logger=wandb", "logger=mlflow", "logger=many", "logger=[tensorboard,csv]", "logger=none")}
    assert keys == {"logger=csv": ["csv"], "logger=wandb": ["wandb"], "logger=mlflow": ["mlflow"],
                    "logger=many": ["tensorboard", "csv", "wandb", "mlflow"],
                    "logger=[tensorboard,csv]": ["tensorboard", "csv"], "logger=none": []}
    assert list(make_cfg(tmp_path, []).logger) == ["tensorboard"]  # the default


def test_csv_logger_writes_the_metrics_and_the_config(csv_run):
    run, _ = csv_run
    columns, rows = csv_metrics(run)
    assert "step" in columns and {"train/loss", "val/t2v_R@10", "val/v2a_R@10", "val/t2v_R@10_best"} <= set(columns)
    losses = [(int(r["step"]), float(r["train/loss"])) for r in rows if r["train/loss"]]
    assert [s for s, _ in losses] == [0, 1] and all(v > 0 for _, v in losses)
    assert [float(r["val/t2v_R@10"]) for r in rows if r["val/t2v_R@10"]] != []
    hparams = (run / "csv" / "hparams.yaml").read_text()
    assert "droptoken" in hparams and "max_steps: 2" in hparams
    assert not (run / "tensorboard").exists()


def test_tensorboard_only_features_say_once_that_they_need_logger_tensorboard(csv_run):
    _, lines = csv_run
    for feature in ("HParams view with metric columns", "embedding views (projector embeddings"):
        said = [line for line in lines if line.startswith(feature)]
        assert len(said) == 1, lines
        assert "needs logger=tensorboard (or logger=many" in said[0] and "this run's loggers: CSVLogger" in said[0]


def test_report_reads_the_scalars_of_a_csv_only_run(csv_run):
    from vatt.report import scalars, summarize

    run, _ = csv_run
    tags = scalars(run)
    assert [s for s, _ in tags["train/loss"]] == [0, 1] and "step" not in tags
    assert len(tags["val/t2v_R@10"]) == 1 and 0.0 <= tags["val/t2v_R@10"][0][1] <= 1.0
    row = summarize(run)
    assert row["val/t2v_R@10_final"] == tags["val/t2v_R@10"][-1][1] and row["val_clips"] == 8


def test_wandb_without_an_api_key_logs_offline_into_the_run_folder(tmp_path, demo_root):
    run, lines = train_with(tmp_path, demo_root, "wandb")
    assert any(line.startswith("wandb: offline (no WANDB_API_KEY)") and "wandb sync" in line for line in lines), lines
    record = wandb_record(run)
    for name in (b"train/loss", b"val/t2v_R@10", b"val/t2v_R@10_best", b"droptoken", b"max_steps"):
        assert name in record, name
    assert "WANDB_MODE" not in os.environ or os.environ["WANDB_MODE"] != "online"


def test_mlflow_logs_metrics_and_params_into_a_local_file_store(tmp_path, demo_root):
    run, lines = train_with(tmp_path, demo_root, "mlflow")
    assert any(line.startswith("mlflow: local file store file:") for line in lines), lines
    folder = mlflow_run(run)
    loss = mlflow_metric(folder, "train/loss")
    assert [s for s, _ in loss] == [0, 1] and all(v > 0 for _, v in loss)
    assert len(mlflow_metric(folder, "val/t2v_R10")) == 1  # MLflow allows no '@' in names
    assert (folder / "params" / "model" / "droptoken").read_text() == "0.5"


def test_many_loggers_get_the_same_metric_names(tmp_path, demo_root):
    from vatt.report import csv_scalars, scalars
    from conftest import hparams_session


    run, lines = train_with(tmp_path, demo_root, "many")
    board, table = scalars(run), csv_scalars(run)  # the TensorBoard events, csv/metrics.csv
    assert board.keys() == table.keys()
    for tag in ("train/loss", "val/t2v_R@10"):
        assert [s for s, _ in board[tag]] == [s for s, _ in table[tag]]
        assert [v for _, v in board[tag]] == pytest.approx([v for _, v in table[tag]])
    _, metric_columns = hparams_session(run)  # the HParams session goes to the TensorBoard logger
    assert "val/t2v_R@10_best" in metric_columns
    record = wandb_record(run)
    assert all(tag.encode() in record for tag in board if not tag.startswith("epoch"))
    mlflow_tags = {str(p.relative_to(mlflow_run(run) / "metrics")) for p in (mlflow_run(run) / "metrics").rglob("*")
                   if p.is_file()}
    assert mlflow_tags == {t.replace("@", "") for t in board}
    assert not any("needs logger=tensorboard" in line for line in lines)
