"""Shared fixtures: small media files written with PyAV, and a small demo dataset."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path


def _share_the_cores() -> int:
    """Math threads per test process: the machine's cores divided among the suite's xdist workers.

    `make test` runs two workers on two cores; when every process (and every run it starts) uses all
    cores, the threads contend (on the 2-core machine one training test takes 11 s alone, 38 s beside
    a copy of itself, 11 s with one thread each). ``OMP_NUM_THREADS`` is read by torch's OpenMP/MKL
    and numpy's OpenBLAS, so it is set before they are imported; the subprocesses the tests start
    inherit it.
    """
    if "PYTEST_XDIST_WORKER" in os.environ:  # not in xdist's controller, whose environment the workers inherit
        threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # a value the user set wins
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))


THREADS = _share_the_cores()

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)  # in case torch was imported before this file


def write_av(
    path: Path,
    frames: np.ndarray | None,
    fps: int = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    vcodec: str = "libx264",
    acodec: str = "aac",
) -> Path:
    """Write uint8 RGB ``frames [T, H, W, 3]`` and/or mono float ``audio [S]`` to ``path``."""
    with av.open(str(path), "w") as out:
        vs = as_ = None
        if frames is not None:
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height = frames.shape[2], frames.shape[1]
            vs.pix_fmt = "yuv420p"
            vs.options = {"g": str(fps)}
        if audio is not None:
            as_ = out.add_stream(acodec, rate=sample_rate)
            as_.layout = "mono"
        if vs is not None:
            for img in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
        if as_ is not None:
            step = as_.codec_context.frame_size or 1024
            for i in range(0, len(audio), step):
                chunk = audio[i : i + step].astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = i
                for packet in as_.encode(frame):
                    out.mux(packet)
            for packet in as_.encode(None):
                out.mux(packet)
    return path


def flash_and_click(path: Path, flash_time: float = 1.2, duration: float = 3.0, fps: int = 25, sample_rate: int = 16000) -> Path:
    """A black clip, white for 0.1 s from ``flash_time``, with a click (a 5 ms burst) at ``flash_time``."""
    n = int(round(duration * fps))
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    first = int(round(flash_time * fps))
    frames[first : first + int(round(0.1 * fps))] = 255
    audio = np.zeros(int(duration * sample_rate), np.float32)
    at = int(round(flash_time * sample_rate))
    audio[at : at + sample_rate // 200] = 0.8
    return write_av(path, frames, fps, audio, sample_rate)


def _rank_entry(rank: int, fn, args: tuple) -> None:
    import multiprocessing as mp

    # This rank is a fresh interpreter: its own DataLoader workers may fork from it, as in a DDP run
    # launched on Linux; spawned, each worker would re-import torch (~5 s) every epoch.
    mp.set_start_method("fork", force=True)
    fn(rank, *args)


def start_ranks(fn, args: tuple, nprocs: int, timeout: float = 300.0) -> None:
    """``fn(rank, *args)`` in ``nprocs`` spawned processes, joined; killed with a failure after ``timeout`` s.

    Spawned, not forked: a child forked from a pytest(-xdist) worker inherits its threads' locks and
    its OpenMP pool, and a forked rank hung the whole suite in CI. Inside a rank, loader workers fork.
    """
    import time

    import torch.multiprocessing as tmp

    ctx = tmp.start_processes(_rank_entry, args=(fn, args), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{nprocs} ranks of {fn.__name__} did not finish within {timeout:.0f} s (killed)")


def _shard_record(row: dict) -> dict:
    media = b"garbage" * 50 if row.get("corrupt") else Path(row["file"]).read_bytes()
    meta = {"captions": row["captions"], "labels": row.get("labels", {}), "duration": row.get("duration"), "source": "test"}
    return {"id": row["id"], "media": media, "meta": json.dumps(meta)}


def write_shards(manifest: Path, out: Path, corrupt: tuple[str, ...] = (), clips: int | None = None,
                 chunk_bytes: str = "150KB") -> list[str]:
    """Shards of a manifest's clips written by litdata directly (``corrupt``: ids stored as garbage).

    ``clips``: that many samples, the manifest's rows repeated under new ids (``<video>#<k>``).
    """
    from litdata import optimize

    items = [json.loads(line) for line in manifest.read_text().splitlines()]
    n = len(items) if clips is None else clips
    rows = []
    for k in range(n):
        item = items[k % len(items)]
        sid = item["video"] if clips is None else f"{item['video']}#{k}"
        rows.append({**item, "id": sid, "file": str(manifest.parent / item["video"]), "corrupt": sid in corrupt})
    # litdata sets the process's multiprocessing start method (spawn unless told): keep Linux's fork
    optimize(fn=_shard_record, inputs=rows, output_dir=str(out), chunk_bytes=chunk_bytes, num_workers=1, verbose=False,
             start_method="fork")
    return [r["id"] for r in rows]


@pytest.fixture(autouse=True)
def _keep_the_start_method():
    """Undo a test's change of the process-wide multiprocessing start method (``litdata.optimize`` sets it).

    Left at "spawn", every later DataLoader in the same xdist worker starts its workers as new
    interpreters (~5 s of imports each, every epoch): a 6 s training test took 48 s after one such call.
    """
    import multiprocessing as mp

    before = mp.get_start_method(allow_none=True)
    yield
    if mp.get_start_method(allow_none=True) != before:
        mp.set_start_method(before, force=True)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small copy of the demo dataset (16 train / 8 val clips)."""
    from vatt.data.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, num_train=16, num_val=8, workers=2, progress=False)
    return root


# --------------------------------------------------------------------------- runs in subprocesses

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def subprocess_env(tests_importable: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a command a user starts (no make leftovers of the suite, no ``VATT_ROOT``).

    ``tests_importable``: ``tests/`` on ``PYTHONPATH``, for test callbacks such as ``conftest.StepRecorder``.
    """
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "VATT_ROOT")}
    if tests_importable:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}


def make_user_copy(root: Path) -> Path:
    """The repository as a user has it after ``git clone`` and the first ``make``: tracked files + ``.venv``."""
    import os
    import shutil
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    stamp = REPO / ".venv" / ".installed"
    assert stamp.is_file(), "run `make install` (or `make test`) first: the copy shares the installed .venv"
    (root / ".venv").symlink_to(REPO / ".venv")
    # the install is the one the suite runs in: make must not redo it for the copy's files
    for name in ("Makefile", "pyproject.toml"):
        t = stamp.stat().st_mtime - 1
        os.utime(root / name, (t, t))
    return root


class StepRecorder:
    """Callback for runs in a subprocess (``+callbacks.recorder._target_=conftest.StepRecorder``).

    Appends one JSON line per training step to ``path`` (``<path>.rank<N>`` on ranks > 0):
    the step, a fingerprint of its batch (sample ids, sums of video and audio), the
    learning rate and the loss. ``pause`` seconds of sleep per step make a run slow
    enough to be signalled at a chosen step; they change nothing it computes.
    """

    def __new__(cls, path: str, pause: float = 0.0):
        import json
        import time

        from lightning.pytorch.callbacks import Callback

        class _StepRecorder(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.row = {"step": trainer.global_step, "ids": batch["index"].tolist(),
                            "lr": trainer.optimizers[0].param_groups[0]["lr"]}
                for key in ("video", "audio"):
                    if key in batch:
                        self.row[key] = round(float(batch[key].double().abs().sum()), 3)
                if pause:
                    time.sleep(pause)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.row["loss"] = float(outputs["loss"])
                target = path if trainer.global_rank == 0 else f"{path}.rank{trainer.global_rank}"
                with open(target, "a") as f:
                    f.write(json.dumps(self.row) + "\n")

        return _StepRecorder()


def recorded_steps(path: Path) -> dict[int, dict]:
    """What a ``StepRecorder`` wrote, by step."""
    import json

    if not path.exists():
        return {}
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def read_dataset(out: Path) -> dict[str, dict]:
    """A prepared shard folder as ``{id: {"media": bytes, "meta": dict}}`` (duplicate ids fail)."""
    import json

    import litdata

    ds = litdata.StreamingDataset(str(out))
    samples = {}
    for i in range(len(ds)):
        s = ds[i]
        assert set(s) == {"id", "media", "meta"}
        assert isinstance(s["id"], str) and isinstance(s["meta"], str)
        samples[s["id"]] = {"media": bytes(s["media"]), "meta": json.loads(s["meta"])}
    assert len(samples) == len(ds), "duplicate ids in the dataset"
    return samples


def eval_cfg(tmp_path: Path, overrides: list[str]):
    """``configs/eval/eval.yaml`` composed with ``overrides`` (no loader workers, no logger), under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vatt.eval import CONFIG_DIR, CONFIG_ROOT

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return compose("eval", overrides=[f"hydra.searchpath=[file://{CONFIG_ROOT}]", f"paths.root_dir={tmp_path}",
                                          "num_workers=0", "logger=none", *overrides])


def hparams_session(run: Path) -> tuple[dict, list[str]]:
    """The HParams session of a run's events: (hyper-parameters, metric tags)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions = []
    for events in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "hparams" in acc.PluginAssets("hparams") or acc.summary_metadata:
            content = {t: acc.SummaryMetadata(t).plugin_data.content for t in acc.summary_metadata
                       if acc.SummaryMetadata(t).plugin_data.plugin_name == "hparams"}
            if content:
                sessions.append(content)
    assert len(sessions) == 1, "one HParams session per run"
    (content,) = sessions
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


def make_cfg(tmp_path: Path, overrides: list[str]):
    """``configs/train.yaml`` composed with ``overrides``, writing under ``tmp_path`` (``tmp_path/run`` is the run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vatt.runs import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                                           *overrides])


def small_data(demo_root: Path) -> list[str]:
    """The fixture's small demo copy, read as a user's manifest folder."""
    return ["data=manifest", f"data.path={demo_root}"]


# --------------------------------------------------------------------------- loss references (float64, by hand)

TAU = 0.07


def _lse(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def ref_nce(x, y, mask=None, tau=TAU):
    x = torch.nn.functional.normalize(x.double(), dim=-1)
    y = torch.nn.functional.normalize(y.double(), dim=-1)
    n = x.shape[0]
    valid = [i for i in range(n) if mask is None or bool(mask[i])]
    s = (x @ y.T / tau).tolist()
    losses = []
    for i in valid:
        terms = [s[i][j] for j in valid] + [s[j][i] for j in valid]
        losses.append(_lse(terms) - s[i][i])
    return sum(losses) / len(losses)


def ref_mil_nce(v, t, mask=None, tau=TAU):
    v = torch.nn.functional.normalize(v.double(), dim=-1)
    t = torch.nn.functional.normalize(t.double(), dim=-1)
    b, k, _ = t.shape
    m = torch.ones(b, k, dtype=torch.bool) if mask is None else mask
    s = torch.einsum("id,jkd->ijk", v, t) / tau
    losses = []
    for i in range(b):
        if not m[i].any():
            continue
        terms = [s[i, j, kk].item() for j in range(b) for kk in range(k) if m[j, kk]]
        terms += [s[j, i, kk].item() for j in range(b) for kk in range(k) if m[i, kk]]
        pos = [s[i, i, kk].item() for kk in range(k) if m[i, kk]]
        losses.append(_lse(terms) - _lse(pos))
    return sum(losses) / len(losses)


# --------------------------------------------------------------------------- entry points in a subprocess

def run_module(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def only_run(cwd: Path, task: str) -> Path:
    runs = sorted((cwd / "logs" / task / "runs").iterdir())
    return runs[-1]


# --------------------------------------------------------------------------- tiny official layouts

def clip(path: Path, seed: int, seconds: float = 1.5, video: bool = True) -> Path:
    """A small clip whose colour and pitch depend on ``seed`` (so classes differ)."""
    rng = np.random.default_rng(seed)
    frames = None
    if video:
        frames = np.zeros((int(seconds * 10), 48, 64, 3), np.uint8)
        frames[..., seed % 3] = 200
        frames += rng.integers(0, 30, frames.shape, dtype=np.uint8)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * (300 + 200 * (seed % 3)) * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_av(path, frames, 10, wave, 16000, acodec="aac" if video else "pcm_s16le")


def make_ucf101(root: Path) -> Path:
    """3 classes x 4 groups of real clips; split k tests on group k."""
    classes = ["ApplyEyeMakeup", "Archery", "Bowling"]
    (root / "ucfTrainTestlist").mkdir(parents=True)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for k in (1, 2, 3):
        train, test = [], []
        for c, name in enumerate(classes):
            for g in range(1, 5):
                rel = f"{name}/v_{name}_g0{g}_c01.avi"
                if not (root / "UCF-101" / rel).exists():
                    clip(root / "UCF-101" / rel, seed=c + 3 * g)
                (test if g == k else train).append(rel)
        (root / "ucfTrainTestlist" / f"trainlist0{k}.txt").write_text(
            "".join(f"{r} {classes.index(r.split('/')[0]) + 1}\n" for r in train))
        (root / "ucfTrainTestlist" / f"testlist0{k}.txt").write_text("".join(f"{r}\n" for r in test))
    return root


def make_audioset(root: Path) -> Path:
    """AudioSet's layout: 3 classes ("A", "B", "C"), 4 balanced-train and 3 eval clips, multi-label, audio only."""
    header = "# Segments csv\n# num_ytids=4\n# YTID, start_seconds, end_seconds, positive_labels\n"
    root.mkdir(parents=True)
    (root / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/a,"A"\n1,/m/b,"B"\n2,/m/c,"C"\n')
    labels = {"trainAAAAA1": "/m/a", "trainAAAAA2": "/m/b,/m/c", "trainAAAAA3": "/m/a,/m/c", "trainAAAAA4": "/m/b",
              "evalAAAAAA1": "/m/a,/m/b", "evalAAAAAA2": "/m/c", "evalAAAAAA3": "/m/a"}
    for i, ytid in enumerate(labels):
        clip(root / "clips" / f"{ytid}_10.000.wav", seed=i, seconds=1.0, video=False)
    for name, prefix in (("balanced_train_segments.csv", "train"), ("eval_segments.csv", "eval")):
        (root / name).write_text(header + "".join(f'{y}, 10.000, 20.000, "{m}"\n' for y, m in labels.items()
                                                  if y.startswith(prefix)))
    (root / "unbalanced_train_segments.csv").write_text(header)
    return root


def make_esc50(root: Path, media: bool = True) -> Path:
    """ESC-50's layout: 2 classes ("dog", "rain") x 5 folds, one clip each (``media=False``: empty stand-in files)."""
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in enumerate(["dog", "rain"]):
            name = f"{fold}-10{target}-A-{target}.wav"
            rows.append(f"{name},{fold},{target},{category},False,10{target},A")
            if media:
                clip(root / "audio" / name, seed=target + 3 * fold, seconds=1.0, video=False)
            else:
                (root / "audio").mkdir(parents=True, exist_ok=True)
                (root / "audio" / name).touch()
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def make_msrvtt(root: Path) -> Path:
    rows = ["key,vid_key,video_id,sentence"]
    for v in range(4):
        clip(root / "videos" / "all" / f"video70{v:02d}.mp4", seed=v)
        rows.append(f"ret{v},msr70{v:02d},video70{v:02d},a person does thing {v}")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(rows) + "\n")
    return root


def fit_with(cfg, recorder) -> dict[str, float]:
    """``vatt.train.train(cfg)`` with ``recorder`` added to the run's callbacks."""
    import vatt.train as vt

    original = vt._instantiate_all
    vt._instantiate_all = lambda group: original(group) + ([recorder] if group is cfg.get("callbacks") else [])
    try:
        return vt.train(cfg)
    finally:
        vt._instantiate_all = original


# --------------------------------------------------------------------------- exact-resume checks

class BatchRecorder:
    """Callback: a fingerprint of every training batch, keyed by global step."""

    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class _Rec(Callback):
            def __init__(self):
                self.batches: dict[int, tuple] = {}

                self.losses: dict[int, float] = {}
                self.lrs: dict[int, float] = {}
                self.skipped: dict[int, int] = {}

            def skipped_before(self, step: int) -> int:
                return sum(n for s, n in self.skipped.items() if s < step)

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.skipped[trainer.global_step] = int(batch["skipped"].sum()) if "skipped" in batch else 0
                self.batches[trainer.global_step] = (
                    tuple(batch["index"].tolist()),
                    round(float(batch["video"].double().sum()), 3),
                    round(float(batch["audio"].double().abs().sum()), 3),
                )
                self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.losses[trainer.global_step - 1] = float(outputs["loss"])

        return _Rec()


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two checkpoints hold the same step, weights, Adam moments and schedule."""
    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    assert ca["global_step"] == cb["global_step"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.allclose(ca["state_dict"][k], cb["state_dict"][k], rtol=0, atol=1e-6), k
    (oa,), (ob,) = ca["optimizer_states"], cb["optimizer_states"]
    assert oa["state"].keys() == ob["state"].keys() and oa["param_groups"] == ob["param_groups"]
    for i in oa["state"]:
        for moment in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.allclose(oa["state"][i][moment], ob["state"][i][moment], rtol=0, atol=1e-6), (i, moment)
    assert ca["lr_schedulers"] == cb["lr_schedulers"]


def model_input(sample: dict) -> dict:
    """A pretraining sample as the model gets it: the loader's uint8 video and augmentation parameters
    finished (flip, colour, [-1, 1], audio noise) as ``on_after_batch_transfer`` does on the device."""
    from torch.utils.data import default_collate

    from vatt.data.clip import finish_batch

    return {k: v[0] for k, v in finish_batch(default_collate([sample])).items()}
