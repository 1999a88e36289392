"""The README's commands, run as a user types them, in a copy of the repository.

Every command line in the README's ``bash`` blocks (and every ``python`` block) is
taken from the README itself, so the two cannot drift: a command this file does not
know how to check fails the suite. Each runs in a temporary copy of the repository
(its tracked files plus the installed ``.venv``), from the copy's root, with only
step limits appended (``trainer.max_steps=N``). Placeholders stand for what only the
user has: ``<run>`` is the newest run folder, ``/path/to/...`` a small dataset in the
official layout generated here. Commands that need GPUs check the message a user
without one gets.

The three acceptance commands of the documented workflow (a 4-rate DropToken sweep,
``last.ckpt`` at the final step, a resume that keeps the run's settings) run here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_user_copy, subprocess_env, write_av
from conftest import make_msrvtt, make_ucf101

# one user copy, used in the README's order: the whole file runs in one xdist worker (make test: --dist loadfile)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GPU = torch.cuda.is_available()


# --------------------------------------------------------------------------- the README's commands


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def readme_commands() -> list[str]:
    """Command lines of the ``bash`` blocks: continuations joined, comments dropped."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def test_the_readme_has_the_documented_workflow():
    commands = readme_commands()
    assert "make train" in commands and "make test" in commands
    assert any(c.startswith("make sweep") for c in commands)
    assert any("ckpt_path=" in c for c in commands)
    assert not [c for c in commands if c.startswith("python ")], "use .venv/bin/python: a fresh shell has no 'vatt'"


# --------------------------------------------------------------------------- a user's copy


def _env() -> dict[str, str]:
    return subprocess_env(tests_importable=False)  # what a user's shell has


@pytest.fixture(scope="module")
def user_copy(tmp_path_factory) -> Path:
    """The repository as a user has it after ``git clone`` and the first ``make``: tracked files + ``.venv``."""
    return make_user_copy(tmp_path_factory.mktemp("user") / "vatt")


def run(cmd: str, cwd: Path, expect_ok: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if expect_ok:
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def runs(root: Path) -> set[Path]:
    return set((root / "logs" / "train" / "runs").glob("*"))


def multiruns(root: Path) -> set[Path]:
    return set((root / "logs" / "train" / "multiruns").glob("*"))


def step_of(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def ckpt_config(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["vatt_config"]


def scalar_tags(run_dir: Path) -> set[str]:
    """The scalar tags a run logged, read as make report reads them (TensorBoard events, else csv/metrics.csv)."""
    from vatt.report import scalars

    return set(scalars(run_dir))


LOGGER_FILES = {"tensorboard": "tensorboard/events.out.tfevents.*", "csv": "csv/metrics.csv",
                "wandb": "wandb/offline-run-*/run-*.wandb", "mlflow": "mlruns/*/*/metrics/train/loss"}


def check_logger_files(cmd: str, run_dir: Path) -> None:
    """``logger=<group>``: each of its loggers wrote its files into the run folder (W&B offline: no API key here)."""
    group = overrides_of(cmd).get("logger")
    if group is None:
        return
    for name in (LOGGER_FILES if group == "many" else [group]):
        assert list(run_dir.glob(LOGGER_FILES[name])), f"logger={group}: no {LOGGER_FILES[name]} in {run_dir}"


def check_run_folder(run_dir: Path, steps: int | None) -> None:
    """A run's folder holds its config, log, events with curves and, unless a smoke run, last.ckpt at ``steps``."""
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    if steps is None:
        return
    tags = scalar_tags(run_dir)
    assert {"train/loss", "val/v2a_R@10"} <= tags, tags
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == steps
    assert "final metrics" in (run_dir / "train.log").read_text()


def overrides_of(cmd: str) -> dict[str, str]:
    import shlex

    return dict(a.split("=", 1) for a in shlex.split(cmd)[2:] if "=" in a and not a.startswith("-"))


def config_value(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


# --------------------------------------------------------------------------- the user's own data


def _clip(path: Path, seconds: float, seed: int, video: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (round(seconds * 10), 48, 64, 3), dtype=np.uint8) if video else None
    wave = (0.3 * np.sin(2 * np.pi * (300 + 50 * seed) * np.arange(round(seconds * 16000)) / 16000)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_av(path, frames, 10, wave, 16000, acodec="aac" if video else "pcm_s16le")


def users_datasets(root: Path, base: Path) -> None:
    """What the README's placeholders stand for: ``data/mine`` and ``/path/to/{howto100m,audioset}``."""
    mine = root / "data" / "mine"
    rows = [
        {"video": f"clips/c{i}.mp4", "captions": [{"start": 0.0, "end": 1.5, "text": f"stir the pot {i}"}]}
        for i in range(3)
    ]
    for i in range(3):
        _clip(mine / "clips" / f"c{i}.mp4", 2.0, i)
    (mine / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # 16 clips each (8 of AudioSet's with video): enough for one batch of 8 of the README's mix per loader worker
    h = base / "howto100m"
    for i in range(16):
        _clip(h / "videos" / f"vid{i}.mp4", 3.0, i)
    (h / "caption.json").write_text(json.dumps(
        {f"vid{i}": {"start": [0.0, 1.5], "end": [1.5, 3.0], "text": ["chop the onion", "fry it"]} for i in range(16)}
    ))
    a = base / "audioset"
    rows = []
    for i in range(16):
        ytid = f"{chr(65 + i) * 11}"
        _clip(a / "clips" / f"{ytid}_{10 * i}.000.{'mp4' if i % 2 else 'wav'}", 2.0, i, video=bool(i % 2))
        rows.append(f'{ytid}, {10 * i}.000, {10 * i + 10}.000, "/m/09x0r"\n')
    (a / "unbalanced_train_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=16\n# YTID, start_seconds, end_seconds, labels\n"
        + "".join(rows))


# --------------------------------------------------------------------------- one check per kind of command

STEPS = 2


def check_needs_gpu(cmd: str, root: Path) -> None:
    if GPU:
        pytest.skip("needs the user's own dataset at paper size")
    proc = run(cmd, root, expect_ok=False)
    assert proc.returncode != 0
    assert "needs CUDA GPUs" in proc.stderr and "trainer=ddp_cpu" in proc.stderr, proc.stderr[-2000:]


def placeholders(cmd: str, root: Path) -> str:
    """The README's stand-ins for what only the user has: the newest run, an export, their datasets."""
    if "<run>" in cmd:
        done = sorted((r for r in runs(root) if (r / "checkpoints" / "last.ckpt").is_file()
                       and "pretrain" in str(ckpt_config(r / "checkpoints" / "last.ckpt")["model"]["_target_"]).lower()),
                      key=lambda r: r.name)
        assert done, "the README uses a pretraining run before any was made"
        cmd = cmd.replace("<run>", done[-1].name)
    base = root.parent / "path_to"
    for name, make in (("ucf101", make_ucf101), ("msrvtt", make_msrvtt)):
        if f"/path/to/{name}" in cmd and not (base / name).is_dir():
            make(base / name)
    return cmd.replace("/path/to/", f"{base}/")


# what Lightning, litdata and PyTorch print on every run unless the project deals with it
NOISE = ("Warning", "warn(", "deprecated", "💡", "Trainer already configured", "Total FLOPs", "log_every_n_steps",
         "max_cache_size is unset", "sync_dist", "Mismatch dtype", "Traceback")


def assert_no_noise(out: str) -> None:
    lines = [ln for ln in out.splitlines() if any(n in ln for n in NOISE)]
    assert not lines, "\n".join(lines)


def check_train(cmd: str, root: Path) -> None:
    before = runs(root)
    smoke = "debug=fdr" in cmd
    finetune = "experiment=finetune_" in cmd
    proc = run(placeholders(cmd, root) if smoke else f"{placeholders(cmd, root)} trainer.max_steps={STEPS}", root)
    (new,) = runs(root) - before
    if cmd == "make train":  # the first run of a newcomer: nothing they cannot act on
        assert_no_noise(proc.stdout + proc.stderr)
    if finetune:  # fit, then test every view: metrics.json
        metrics = json.loads((new / "metrics.json").read_text())
        assert {"test/top1", "num_train", "num_test", "num_skipped"} <= set(metrics)
        assert step_of(new / "checkpoints" / "last.ckpt") == STEPS and "train/loss" in scalar_tags(new)
        return
    check_run_folder(new, None if smoke else STEPS)
    check_logger_files(cmd, new)
    config = (new / ".hydra" / "config.yaml").read_text()
    for key, value in overrides_of(cmd).items():
        if "." in key and value.startswith(("[", "{")):  # a list or dict, as Hydra parses it
            import yaml
            from omegaconf import OmegaConf

            composed = OmegaConf.to_container(OmegaConf.select(OmegaConf.create(config), key))
            assert composed == yaml.safe_load(value), (key, value)
        elif "." in key:
            assert f"{key.rsplit('.', 1)[1]}: {value}" in config, (key, value)
    assert "final metrics" in proc.stdout + proc.stderr


def check_resume(cmd: str, root: Path) -> None:
    done = sorted((r for r in runs(root) if (r / "checkpoints" / "last.ckpt").is_file() and not
                   (r / "metrics.json").is_file()), key=lambda r: r.name)
    assert done, "the README shows a resume before any run that writes a checkpoint"
    run_dir = done[-1]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    step, saved = step_of(ckpt), ckpt_config(ckpt)
    before = runs(root)
    run(f"{cmd.replace('<run>', run_dir.name)} trainer.max_steps={step + STEPS}", root)
    assert runs(root) == before, "a resumed run continues in its own folder"
    assert step_of(ckpt) == step + STEPS
    resumed = ckpt_config(ckpt)
    assert resumed["model"] == saved["model"] and resumed["data"] == saved["data"]
    log = (run_dir / "train.log").read_text()
    assert f"resuming from logs/train/runs/{run_dir.name}/checkpoints/last.ckpt (global step {step})" in log
    assert len(list((run_dir / ".hydra").glob("resume_*/config.yaml"))) >= 1


def check_resume_last(cmd: str, root: Path) -> None:
    """``ckpt_path=last``: the newest demo run continues in its folder from the step its last.ckpt holds."""
    done = [r for r in runs(root) if (r / "checkpoints" / "last.ckpt").is_file()
            and (r / ".hydra" / "hydra.yaml").is_file() and "experiment: demo" in (r / ".hydra" / "hydra.yaml").read_text()]
    assert done, "the README shows ckpt_path=last before any demo run that writes a checkpoint"
    newest = max(done, key=lambda r: (r / "checkpoints" / "last.ckpt").stat().st_mtime)
    ckpt = newest / "checkpoints" / "last.ckpt"
    step = step_of(ckpt)
    before = runs(root)
    run(f"{cmd} trainer.max_steps={step + STEPS}", root)
    assert runs(root) == before, "ckpt_path=last continues the newest run in its own folder"
    assert step_of(ckpt) == step + STEPS
    log = (newest / "train.log").read_text()
    assert f"ckpt_path=last: {ckpt.resolve()} (global step {step})" in log
    assert f"resuming from {ckpt.resolve()} (global step {step})" in log


def check_report(cmd: str, root: Path) -> None:
    """``make report run=logs/train/multiruns/<time>``: the newest sweep gets report.md (a row per job) and plots;
    ``make report run=logs/eval/runs``: every evaluation so far gets its metrics and its protocol columns."""
    if cmd == "make report run=logs/eval/runs":
        proc = run(cmd, root)
        scored = [r for r in evals(root) if (r / "metrics.json").is_file()]
        table = (root / "logs" / "eval" / "runs" / "report.md").read_text()
        assert scored and "| job | task | dataset | splits | items | missing | unreadable | ids |" in table
        for r in scored:
            ids = json.loads((r / "metrics.json").read_text())["protocol"]["ids_sha256"][:12]
            assert any(line.startswith(f"| {r.name} |") and f"| {ids} |" in line for line in table.splitlines())
        assert "report.md" in proc.stdout
        return
    assert "<time>" in cmd
    sweeps = sorted(multiruns(root), key=lambda p: p.name)
    assert sweeps, "the README shows make report before any sweep"
    sweep = sweeps[-1]
    proc = run(cmd.replace("<time>", sweep.name), root)
    jobs = [p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    table = (sweep / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == len(jobs) >= 2
    assert (sweep / "curves.png").stat().st_size > 5000 and (sweep / "droptoken.png").stat().st_size > 5000
    assert "report.md" in proc.stdout


def check_sweep(cmd: str, root: Path) -> None:
    swept = {k: v.split(",") for k, v in overrides_of(cmd).items() if "," in v}
    before = multiruns(root)
    run(f"{cmd} trainer.max_steps=4", root)
    (sweep,) = multiruns(root) - before
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    combos = list(product(*swept.values()))
    assert len(jobs) == len(combos)
    for job, combo in zip(jobs, combos):
        check_run_folder(job, 4)
        cfg = ckpt_config(job / "checkpoints" / "last.ckpt")
        for key, value in zip(swept, combo):
            assert f"{key}={value}" in job.name
            assert str(config_value(cfg, key)) == value


def check_shards(cmd: str, root: Path) -> None:
    run(cmd, root)
    for split, n in (("train", 1024), ("val", 256)):
        summary = json.loads((root / "data" / "shards" / "demo" / split / "summary.json").read_text())
        assert summary["kept"] == n, summary


def check_prepare(cmd: str, root: Path) -> None:
    base = root.parent / "path_to"
    if not (root / "data" / "mine").is_dir():
        users_datasets(root, base)
    run(cmd.replace("/path/to/", f"{base}/"), root)
    out = root / cmd.split("--out ")[1].split()[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] >= 2 and (out / "index.json").is_file(), summary


def check_tensorboard(cmd: str, root: Path) -> None:
    proc = subprocess.Popen(cmd, shell=True, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen("http://localhost:6006", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.time() < deadline, "TensorBoard did not answer on http://localhost:6006"
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def evals(root: Path) -> set[Path]:
    return set((root / "logs" / "eval" / "runs").glob("*"))


def check_eval(cmd: str, root: Path) -> None:
    before = evals(root)
    run(placeholders(cmd, root), root)
    (new,) = evals(root) - before
    metrics = json.loads((new / "metrics.json").read_text())
    assert {"num_train", "num_test", "num_skipped"} <= set(metrics)
    assert ("test/t2v_R@10" if "task=retrieval" in cmd else "test/top1") in metrics
    record = metrics["protocol"]  # what was measured (docs/protocols.md)
    tests = [part["evaluated"] for name, part in record["items"].items() if name.endswith("/test")]
    assert record["items_evaluated"] == sum(tests) and metrics["num_test"] in tests and len(record["ids_sha256"]) == 64
    assert record["comparable_to_paper"] is False and record["reasons"]  # the demo is no paper benchmark
    assert (new / ".hydra" / "config.yaml").is_file() and list((new / "tensorboard").glob("events.*"))


def check_export(cmd: str, root: Path) -> None:
    import vatt

    proc = run(placeholders(cmd, root), root)
    out = root / cmd.split("out=")[1].split()[0]
    if "format=" in cmd:  # the towers for serving, checked against the eager model by the command itself
        meta = json.loads((out / "towers.json").read_text())
        assert all((out / meta["towers"][name]["file"]).is_file() for name in ("video", "audio", "text"))
        worst = proc.stdout.split("random inputs: ")[1].split(", ")
        assert [w.split()[0] for w in worst] == ["video", "audio", "text"]
        assert all(float(w.split()[1]) < 1e-4 for w in worst)
        return
    model = vatt.load_pretrained(out)
    assert model.vocab is not None and len(model.vocab) == model.config.vocab_size


def check_convert(cmd: str, root: Path) -> None:
    """``make convert ckpt=<the committed TF fixture> list=1 | out=<folder> [check=<its outputs(_float64).npz> tol=]``."""
    import vatt

    proc = run(cmd, root)
    if "list=1" in cmd:
        assert "->  video.transformer.blocks.0.attn.qkv.weight" in proc.stdout and "UNUSED" not in proc.stdout
        return
    if "check=" in cmd:  # one line per output, each under the tolerance (float64: far under)
        tol = cmd.split("tol=")[1].split()[0] if "tol=" in cmd else "0.0001"
        assert f"check: every output within {float(tol):g}" in proc.stderr, proc.stderr[-2000:]
        lines = [ln.split() for ln in proc.stderr.splitlines() if "max |difference|" in ln]
        assert [ln[0] for ln in lines] == ["video", "audio", "text", "video_va", "video_vt", "audio_va", "text_vt"]
        if "float64" in cmd:
            assert all(float(ln[3]) < 1e-6 for ln in lines), lines
    out = root / cmd.split("out=")[1].split()[0]
    assert (out / "README.md").is_file() and vatt.load_pretrained(out).config.video_size["dim"] == 64


def check_this_suite(cmd: str, root: Path) -> None:
    pytest.skip("`make test` is this suite")


def kind(cmd: str):
    """The check for a README command; None for a command this file does not know (a failure)."""
    if cmd == "make test":
        return check_this_suite
    if cmd == "make tensorboard":
        return check_tensorboard
    if cmd == "make shards":
        return check_shards
    if cmd.startswith(".venv/bin/python -m vatt.data.prepare "):
        return check_prepare
    if cmd.startswith(("make train", "make sweep")) and re.search(r"trainer=(ddp|fsdp|gpu)\b", cmd):
        return check_needs_gpu
    if cmd.startswith("make sweep "):
        return check_sweep
    if cmd.startswith("make train") and "ckpt_path=last" in cmd:
        return check_resume_last
    if cmd.startswith("make train") and "ckpt_path=" in cmd:
        return check_resume
    if cmd.startswith("make report "):
        return check_report
    if cmd.startswith("make eval "):
        return check_eval
    if cmd.startswith("make export "):
        return check_export
    if cmd.startswith("make convert "):
        return check_convert
    if cmd.startswith("make train"):
        return check_train
    return None


@pytest.mark.parametrize("cmd", readme_commands())
def test_readme_command_works_as_written(cmd, user_copy):
    check = kind(cmd)
    assert check is not None, f"the README shows `{cmd}`, which no test runs: add its check to tests/test_readme.py"
    check(cmd, user_copy)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_example_runs(index, user_copy):
    script = user_copy / f"readme_example_{index}.py"
    script.write_text(_blocks("python")[index])
    run(f".venv/bin/python {script.name}", user_copy)


# --------------------------------------------------------------------------- the documented workflow's acceptance


def test_last_checkpoint_holds_the_final_step(user_copy):
    before = runs(user_copy)
    run("make train debug=limit trainer.max_epochs=3", user_copy)
    (new,) = runs(user_copy) - before
    assert step_of(new / "checkpoints" / "last.ckpt") == 12
    best = [p for p in (new / "checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1  # the best checkpoint by val/t2v_R@10 beside it


def test_resume_keeps_the_runs_settings_and_folder(user_copy):
    before = runs(user_copy)
    run("make train debug=limit model.droptoken=0.25 trainer.max_epochs=1", user_copy)
    (first,) = runs(user_copy) - before
    ckpt = first / "checkpoints" / "last.ckpt"
    assert step_of(ckpt) == 4
    proc = run(f"make train debug=limit trainer.max_epochs=2 ckpt_path={ckpt.relative_to(user_copy)}", user_copy)
    assert runs(user_copy) - before == {first}
    assert step_of(ckpt) == 8 and ckpt_config(ckpt)["model"]["droptoken"] == 0.25
    out = proc.stdout + proc.stderr
    assert "model.droptoken: 0.25 from the checkpoint (the command line alone gives 0.5)" in out
    # a key on the command line wins, and the log says so
    proc = run(f"make train debug=limit trainer.max_epochs=3 model.droptoken=0.5 ckpt_path={ckpt.relative_to(user_copy)}",
               user_copy)
    assert "model.droptoken: 0.5 from the command line (the checkpoint had 0.25)" in proc.stdout + proc.stderr
    assert step_of(ckpt) == 12 and ckpt_config(ckpt)["model"]["droptoken"] == 0.5


def test_a_truncated_checkpoint_is_named_with_the_fix(user_copy):
    done = sorted(r for r in runs(user_copy) if (r / "checkpoints" / "last.ckpt").is_file())
    if not done:  # run on its own (pytest -k): no test above made a run, so make the one this test cuts
        run("make train debug=limit trainer.max_epochs=1", user_copy)
        done = sorted(r for r in runs(user_copy) if (r / "checkpoints" / "last.ckpt").is_file())
    ckpt = done[-1] / "checkpoints" / "last.ckpt"
    bad = ckpt.with_name("cut.ckpt")
    data = ckpt.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    proc = run(f"make train ckpt_path={bad.relative_to(user_copy)}", user_copy, expect_ok=False)
    assert proc.returncode != 0
    assert f"checkpoint {bad.relative_to(user_copy)} is truncated or corrupt" in proc.stderr
    assert "last.ckpt" in proc.stderr  # the other checkpoints of that run are named
    bad.unlink()
