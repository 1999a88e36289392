"""Shards through a real S3-compatible server on localhost (moto's standalone server): nothing mocked in the client.

The commands are the ones a user runs against their bucket, with the endpoint in
``AWS_ENDPOINT_URL`` (how boto3, and so litdata, find an S3-compatible store).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server", reason="moto[server] (dev extra) runs the local S3 server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on localhost with an empty bucket ``vatt``; yields the environment that points at it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
        env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="vatt")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _keys(env: dict[str, str], prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="vatt", Prefix=prefix).get("Contents", []))


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env={**base, **env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_shards_round_trip_through_a_local_s3_server_and_train(s3, demo_root, tmp_path, monkeypatch):
    import litdata

    from conftest import read_dataset

    for split in ("train", "val"):
        _run(["-m", "vatt.data.prepare", "manifest", "--manifest", str(demo_root / f"{split}.jsonl"),
              "--out", f"s3://vatt/demo/{split}", "--workers", "2"], tmp_path, s3)
    keys = _keys(s3, "demo/train/")
    assert {"demo/train/index.json", "demo/train/summary.json", "demo/train/skipped.jsonl"} <= set(keys)
    assert any(k.endswith(".bin") for k in keys)
    again = _run(["-m", "vatt.data.prepare", "manifest", "--manifest", str(demo_root / "train.jsonl"),
                  "--out", "s3://vatt/demo/train", "--workers", "2"], tmp_path, s3)
    assert "up to date" in again.stdout  # the summary in the bucket is read back

    # streamed back from the bucket: the same samples as a local preparation
    from vatt.data.prepare import prepare

    prepare("manifest", tmp_path / "local", manifest=demo_root / "train.jsonl", workers=2, progress=False)
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    from vatt.data.objectstore import allow_plain_http

    assert allow_plain_http()  # the http:// endpoint, for litdata's client in this process
    remote = litdata.StreamingDataset("s3://vatt/demo/train", cache_dir=str(tmp_path / "cache"))
    samples = {remote[i]["id"]: bytes(remote[i]["media"]) for i in range(len(remote))}
    local = read_dataset(tmp_path / "local")
    assert samples == {k: v["media"] for k, v in local.items()}

    # training streams from the bucket, as a user points data.path at it
    _run(["-m", "vatt.train", "data=shards", "data.path=s3://vatt/demo/train", "data.val_path=s3://vatt/demo/val",
          "data.batch_size=4", "trainer.max_steps=2", "logger=none"], tmp_path, s3)
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    log = (run / "train.log").read_text()
    assert "val/v2a_R@10" in log and (run / "checkpoints" / "last.ckpt").is_file()


def test_only_a_plain_http_endpoint_changes_litdatas_client(monkeypatch):
    from litdata.streaming import downloader

    from vatt.data.objectstore import allow_plain_http

    monkeypatch.setattr(downloader, "_OBSTORE_CLIENT_OPTIONS", {"timeout": "200s"})
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example.org")
    assert not allow_plain_http() and downloader._OBSTORE_CLIENT_OPTIONS == {"timeout": "200s"}
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert not allow_plain_http()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.5:9000")
    assert allow_plain_http() and downloader._OBSTORE_CLIENT_OPTIONS == {"timeout": "200s", "allow_http": "true"}
