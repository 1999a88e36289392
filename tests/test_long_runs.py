"""Runs that survive the real world: preemption, ckpt_path=last with fallback, exact mid-epoch resume, non-finite losses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import (BatchRecorder, assert_same_training_state, fit_with, make_cfg, make_user_copy, read_dataset,
                      recorded_steps, small_data, subprocess_env)
from vatt.lightning import NonFiniteError
from vatt.runs import find_last, resume_argv


def _log(run: Path) -> str:
    return (run / "train.log").read_text()


def _runs(cwd: Path) -> list[Path]:
    return sorted((cwd / "logs" / "train" / "runs").iterdir())


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


# --------------------------------------------------------------------------- preemption, as a user's job sees it


@pytest.mark.slow
def test_sigterm_saves_the_step_reached_and_ckpt_path_last_continues_or_falls_back(tmp_path, demo_root):
    """``python -m vatt.train`` gets SIGTERM mid-run: exit 143, last.ckpt at the step reached; ckpt_path=last resumes."""
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"} | {"PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "vatt.train", *small_data(demo_root), "data.batch_size=4", "logger=none"]
    proc = subprocess.Popen([*args, "trainer.max_epochs=100"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    time.sleep(1.0)  # into the second epoch
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    (run,) = _runs(tmp_path)
    log = _log(run)
    stopped = int(log.split("stopped by SIGTERM at step ")[1].split(";")[0])
    last = run / "checkpoints" / "last.ckpt"
    assert stopped >= 4 and _step(last) == stopped  # the step reached, not the last validation
    assert f"ckpt_path={last}" in log and "ckpt_path=last" in log  # how to continue
    assert (run / "checkpoints" / "previous.ckpt").is_file() and _step(run / "checkpoints" / "previous.ckpt") < stopped

    # the same command with ckpt_path=last continues in the same folder from that step
    resumed = subprocess.run([*args, f"trainer.max_epochs={stopped // 4 + 1}", "ckpt_path=last"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _runs(tmp_path) == [run]
    log = _log(run)
    assert f"ckpt_path=last: {last} (global step {stopped})" in log
    assert f"resuming from {last} (global step {stopped})" in log
    assert _step(last) == 4 * (stopped // 4 + 1)

    # a last.ckpt cut short (a kill while copying it, a full disk): ckpt_path=last says so and takes previous.ckpt
    good = _step(run / "checkpoints" / "previous.ckpt")
    last.write_bytes(last.read_bytes()[:1000])
    again = subprocess.run([*args, f"trainer.max_epochs={stopped // 4 + 1}", "ckpt_path=last"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = _log(run)
    assert f"ckpt_path=last: skipping {last}: checkpoint {last} is truncated or corrupt" in log
    assert f"resuming from {run / 'checkpoints' / 'previous.ckpt'} (global step {good})" in log


def _fake_run(root: Path, name: str, experiment: str, files: dict[str, int | None]) -> Path:
    """A run folder as vatt.train leaves it; ``files``: checkpoint name -> global step (None: truncated)."""
    run = root / "logs" / "train" / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      experiment: {experiment}\n")
    (run / "checkpoints").mkdir()
    for i, (file, step) in enumerate(files.items()):
        path = run / "checkpoints" / file
        if step is None:
            path.write_bytes(b"PK\x03\x04 cut short")
        else:
            torch.save({"global_step": step}, path)
        os.utime(path, (1e9 + i, 1e9 + i))
    return run


def test_ckpt_path_last_picks_the_newest_readable_checkpoint_of_the_same_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VATT_ROOT", raising=False)
    old = _fake_run(tmp_path, "2026-01-01_00-00-00", "demo", {"last.ckpt": 10})
    other = _fake_run(tmp_path, "2026-01-03_00-00-00", "vatt_mbs", {"last.ckpt": 99})
    new = _fake_run(tmp_path, "2026-01-02_00-00-00", "demo", {"epoch001.ckpt": 15, "previous.ckpt": 18, "last.ckpt": None})
    os.utime(other / "checkpoints" / "last.ckpt", (2e9, 2e9))  # the newest file, of another experiment
    os.utime(new / "checkpoints" / "last.ckpt", (1.5e9, 1.5e9))

    found, notes = find_last(["ckpt_path=last"])  # the default experiment: demo
    assert found == new / "checkpoints" / "previous.ckpt"  # last.ckpt unreadable -> previous.ckpt, not the older epoch file
    assert notes[0].startswith(f"ckpt_path=last: skipping {new / 'checkpoints' / 'last.ckpt'}: checkpoint ")
    assert notes[-1] == f"ckpt_path=last: {found} (global step 18)"
    assert find_last(["experiment=vatt_mbs", "ckpt_path=last"])[0] == other / "checkpoints" / "last.ckpt"
    assert find_last(["ckpt_path=last", f"hydra.run.dir={old}"])[0] == old / "checkpoints" / "last.ckpt"

    argv = resume_argv(["data.batch_size=4", "ckpt_path=last"])
    assert f"ckpt_path='{found}'" in argv and f"hydra.run.dir='{new}'" in argv and "ckpt_path=last" not in argv
    # nothing to resume: the same command starts a new run (the first start of a requeued job)
    nothing, notes = find_last(["experiment=vatt_lbs", "ckpt_path=last"])
    assert nothing is None and "no readable checkpoint" in notes[-1] and "starting a new run" in notes[-1]
    assert resume_argv(["experiment=vatt_lbs", "ckpt_path=last"]) == ["experiment=vatt_lbs", "ckpt_path=null"]
    with pytest.raises(SystemExit, match="one run"):
        resume_argv(["-m", "ckpt_path=last"])


# --------------------------------------------------------------------------- exact resume after a mid-epoch stop


class SignalAt(Callback):
    """Sends this process ``sig`` during the training step that reaches ``step``."""

    def __init__(self, step: int, sig: int = signal.SIGTERM) -> None:
        self.step, self.sig = step, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.sig)


def _fit_expecting_exit(cfg, callbacks: list[Callback], code: int) -> None:
    import vatt.train as vt

    original = vt._instantiate_all
    vt._instantiate_all = lambda group: original(group) + (callbacks if group is cfg.get("callbacks") else [])
    try:
        with pytest.raises(SystemExit) as e:
            vt.train(cfg)
        assert e.value.code == code
    finally:
        vt._instantiate_all = original


def _base(demo_root: Path) -> list[str]:
    # validated after every epoch (the demo validates every third, and at the end): the tests count validations
    return [*small_data(demo_root), "data.batch_size=4", "logger=none", "trainer.max_epochs=3",
            "trainer.check_val_every_n_epoch=1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_root):
    tmp = tmp_path_factory.mktemp("full")
    full = BatchRecorder()
    fit_with(make_cfg(tmp, _base(demo_root)), full)
    return full, tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGINT])  # SIGTERM: the subprocess test above
def test_a_run_stopped_mid_epoch_by_a_signal_resumes_with_the_uninterrupted_losses(tmp_path, demo_root, uninterrupted,
                                                                                  sig):
    """Manifest data, 4 steps an epoch, loader workers, dropout and DropToken on; stopped at step 6 (mid-epoch 2)."""
    base = _base(demo_root)
    full, full_last = uninterrupted
    stop = BatchRecorder()
    _fit_expecting_exit(make_cfg(tmp_path / "stop", base), [stop, SignalAt(6, sig)], 128 + sig)
    ckpt = tmp_path / "stop" / "run" / "checkpoints" / "last.ckpt"
    assert _step(ckpt) == 6 and max(stop.losses) == 5  # the step in progress finished, then the run stopped
    resumed = BatchRecorder()
    fit_with(make_cfg(tmp_path / "resume", [*base, f"ckpt_path={ckpt}"]), resumed)
    assert sorted(resumed.batches) == list(range(6, 12))
    for step in range(6, 12):
        assert resumed.batches[step] == full.batches[step]  # same clips, windows and augmentation
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-6)
        assert resumed.lrs[step] == full.lrs[step]
    assert_same_training_state(full_last, tmp_path / "resume" / "run" / "checkpoints" / "last.ckpt")


# --------------------------------------------------------------------------- non-finite losses


class Poison(Callback):
    """Makes the loss of the given steps NaN (before backward) and records the weights around every step."""

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps
        self.changed: dict[int, bool] = {}
        self.logged: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = [p.detach().clone() for p in pl_module.parameters()]
        step = trainer.global_step
        if step in self.steps and not hasattr(pl_module, "_clean_losses"):
            pl_module._clean_losses = pl_module.losses
        if hasattr(pl_module, "_clean_losses"):
            poisoned = step in self.steps
            clean = pl_module._clean_losses
            pl_module.losses = (lambda out: {k: v * float("nan") for k, v in clean(out).items()}) if poisoned else clean

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1
        self.changed[step] = any(not torch.equal(a, p) for a, p in zip(self._before, pl_module.parameters()))
        self.logged[step] = float(trainer.callback_metrics["train/nonfinite_steps"])


def test_a_non_finite_loss_skips_the_update_and_is_counted(tmp_path, demo_root, caplog):
    poison = Poison({2, 3})
    base = [*small_data(demo_root), "data.batch_size=4", "logger=none", "trainer.max_epochs=2",
            "+trainer.limit_val_batches=0"]
    with caplog.at_level("WARNING", logger="vatt.train"):
        fit_with(make_cfg(tmp_path, base), poison)
    # (step 0 trains at the warm-up's learning rate 0)
    assert poison.changed == {0: False, 1: True, 2: False, 3: False, 4: True, 5: True, 6: True, 7: True}
    assert [poison.logged[s] for s in range(8)] == [0, 0, 1, 2, 2, 2, 2, 2]
    warnings = [r.getMessage() for r in caplog.records if "non-finite loss" in r.getMessage()]
    assert len(warnings) == 2 and "skipped the update (1 in a row, 1 in all)" in warnings[0]
    assert "samples [" in warnings[0]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert state["NonFiniteGuard"] == {"total": 2, "in_a_row": 0}


def test_non_finite_steps_in_a_row_stop_the_run_with_a_message(tmp_path, demo_root):
    poison = Poison(set(range(1, 100)))  # from step 1 on
    cfg = make_cfg(tmp_path, [*small_data(demo_root), "data.batch_size=4", "logger=none", "trainer.max_epochs=3",
                              "callbacks.nonfinite.max_in_a_row=3"])
    with pytest.raises(NonFiniteError, match=r"3 optimizer steps in a row had a non-finite loss or gradient \(last at step 3"):
        fit_with(cfg, poison)
    assert not any(poison.changed[s] for s in (1, 2))


@pytest.mark.parametrize("bad", ["callbacks.nonfinite.max_in_a_row=0", "callbacks.preemption.signals=[SIGFOO]",
                                 "callbacks.preemption.requeue=sometimes"])
def test_bad_long_run_settings_are_rejected_by_name(tmp_path, demo_root, bad):
    cfg = make_cfg(tmp_path, [*small_data(demo_root), "debug=fdr", bad])
    with pytest.raises(Exception, match=bad.split("=")[0].split(".")[-1]):
        fit_with(cfg, Callback())


def test_a_second_ctrl_c_aborts_at_once_and_handlers_are_put_back():
    from vatt.lightning import Preemption

    before = signal.getsignal(signal.SIGINT)
    stop = Preemption(signals=["SIGINT", "SIGUSR1"])
    stop._install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.received == signal.SIGUSR1  # noted; the run stops after its step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal that is Ctrl-C: abort now
    finally:
        stop.teardown(None, None, "fit")
    assert signal.getsignal(signal.SIGINT) is before


# --------------------------------------------------------------------------- signals to every process of the job
#
# SLURM, Kubernetes, `docker stop`, `timeout` and Ctrl-C signal the whole process group: the loader workers too.


def _start_group(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _signal_group_at(proc: subprocess.Popen, record: Path, step: int, sig: int = signal.SIGTERM,
                     timeout: float = 300) -> str:
    """Wait until the recorded run has finished step ``step - 1``, signal its whole process group, return its output."""
    deadline = time.time() + timeout
    while step - 1 not in recorded_steps(record):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=300)
    with pytest.raises(ProcessLookupError):  # every process of the group is gone: no worker left behind
        for _ in range(50):
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
    return out


def _assert_quiet_stop(out: str, returncode: int, sig: int) -> int:
    """Exit status 128 + signal, no traceback, no dead worker; returns the step the log says the state was saved at."""
    assert returncode == 128 + sig, out[-3000:]
    assert "Traceback" not in out and "killed by signal" not in out and "exited unexpectedly" not in out, out[-3000:]
    (line,) = [ln for ln in out.splitlines() if f"stopped by {signal.Signals(sig).name} at step" in ln]
    return int(line.split(" at step ")[1].split(";")[0])


def _recorder(path: Path, pause: float = 0.0) -> list[str]:
    return ["+callbacks.recorder._target_=conftest.StepRecorder", f"+callbacks.recorder.path={path}",
            f"+callbacks.recorder.pause={pause}"]


@pytest.fixture(scope="module")
def shard_data(demo_root, tmp_path_factory) -> list[str]:
    from vatt.data.prepare import prepare

    root = tmp_path_factory.mktemp("group_shards")
    for split in ("train", "val"):
        prepare("manifest", str(root / split), manifest=demo_root / f"{split}.jsonl", workers=2, progress=False)
    return ["data=shards", f"data.path={root / 'train'}", f"data.val_path={root / 'val'}",
            f"data.cache_dir={root / 'cache'}"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["manifest", "shards"])
def test_sigterm_to_the_whole_process_group_saves_the_step_reached_and_the_resume_is_exact(
        tmp_path, demo_root, shard_data, kind):
    """Loader workers (2) signalled with the trainer, mid-epoch: exit 143, last.ckpt at that step, the same batches.

    Shards: the job runs under SLURM (a stand-in ``scontrol`` records the call) with requeue on every signal.
    """
    data = small_data(demo_root) if kind == "manifest" else shard_data
    args = [sys.executable, "-m", "vatt.train", *data, "data.batch_size=4", "data.num_workers=2", "logger=none",
            "trainer.max_epochs=3"]
    (tmp_path / "full").mkdir()
    full = subprocess.run([*args, *_recorder(tmp_path / "full.jsonl")], cwd=tmp_path / "full", env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    reference = recorded_steps(tmp_path / "full.jsonl")
    assert sorted(reference) == list(range(12))

    env = {}
    extra = []
    if kind == "shards":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.txt'}\n")
        (bin_dir / "scontrol").chmod(0o755)
        env = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        extra = ["callbacks.preemption.requeue=true"]
    (tmp_path / "job").mkdir()
    proc = _start_group([*args, *extra, *_recorder(tmp_path / "stop.jsonl", pause=0.4)], tmp_path / "job", **env)
    out = _signal_group_at(proc, tmp_path / "stop.jsonl", step=6)  # during step 6 of 12 (epoch 2 of 3)
    stopped = _assert_quiet_stop(out, proc.returncode, signal.SIGTERM)
    assert stopped % 4 and stopped >= 6, out[-3000:]  # in the middle of an epoch, after the step in progress
    (run,) = _runs(tmp_path / "job")
    assert _step(run / "checkpoints" / "last.ckpt") == stopped
    before = recorded_steps(tmp_path / "stop.jsonl")
    assert max(before) == stopped - 1  # the step in progress finished; no step after it started
    if kind == "shards":
        assert (tmp_path / "scontrol.txt").read_text() == "requeue 4242\n" and "requeued" in out
    else:
        assert f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in out

    resumed = subprocess.run([*args, *extra, *_recorder(tmp_path / "resume.jsonl"), "ckpt_path=last"],
                             cwd=tmp_path / "job", env=subprocess_env(**env), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = recorded_steps(tmp_path / "resume.jsonl")
    assert sorted(after) == list(range(stopped, 12))
    for step, row in {**before, **after}.items():
        ref = reference[step]  # same clips, augmentation, learning rate and loss
        assert (row["ids"], row["video"], row["audio"], row["lr"]) == (ref["ids"], ref["video"], ref["audio"], ref["lr"])
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-6), step


@pytest.mark.slow
def test_timeout_make_train_signals_the_group_and_exits_143_with_the_step_reached(tmp_path, demo_root):
    """`timeout --preserve-status -s TERM N make train ...`: timeout signals make, python and the workers.

    GNU timeout sends its signal to the whole group of the command both when N runs out and when it is
    itself sent SIGTERM (as a scheduler stopping the job does); the test takes the second way, once the
    run has trained 3 steps, so that it neither waits out a fixed N nor depends on the machine's speed.
    """
    copy = make_user_copy(tmp_path / "vatt")
    cmd = ["timeout", "--preserve-status", "-s", "TERM", "600", "make", "train", "data=manifest",
           f"data.path={demo_root}", "data.batch_size=4", "logger=none", "trainer.max_epochs=1000",
           *_recorder(tmp_path / "rec.jsonl", pause=0.2)]
    proc = subprocess.Popen(cmd, cwd=copy, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 300
    while 2 not in recorded_steps(tmp_path / "rec.jsonl"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to timeout, which passes it to the command's process group
    out = proc.communicate(timeout=300)[0]
    # timeout, signalled itself, ends by the same signal once the command is done (a shell shows 143), and
    # make says with which status vatt.train ended: 143 of its own, not killed
    assert proc.returncode == -signal.SIGTERM, out[-3000:]
    assert re.search(r"make: \*\*\* \[Makefile:\d+: train\] Error 143", out), out[-3000:]
    stopped = _assert_quiet_stop(out, 128 + signal.SIGTERM, signal.SIGTERM)
    (run,) = _runs(copy)
    assert _step(run / "checkpoints" / "last.ckpt") == stopped >= 3
    assert "continue with: .venv/bin/python -m vatt.train " in out  # the interpreter as the user would type it


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_to_every_rank_and_its_workers_stops_all_ranks_after_the_same_step(tmp_path, demo_root):
    """`trainer=ddp_cpu`: two ranks with a loader worker each, the whole group signalled: one save, every rank stops."""
    args = [sys.executable, "-m", "vatt.train", *small_data(demo_root), "trainer=ddp_cpu", "data.batch_size=2",
            "data.num_workers=1", "logger=none", "trainer.max_epochs=3", *_recorder(tmp_path / "rec.jsonl", 0.4)]
    proc = _start_group(args, tmp_path)
    out = _signal_group_at(proc, tmp_path / "rec.jsonl", step=6)
    stopped = _assert_quiet_stop(out, proc.returncode, signal.SIGTERM)
    (run,) = _runs(tmp_path)
    assert _step(run / "checkpoints" / "last.ckpt") == stopped
    rank0, rank1 = recorded_steps(tmp_path / "rec.jsonl"), recorded_steps(Path(f"{tmp_path / 'rec.jsonl'}.rank1"))
    assert max(rank0) == max(rank1) == stopped - 1  # both ranks finished the same last step, then stopped
    assert set(rank0[0]["ids"]).isdisjoint(rank1[0]["ids"])  # (two ranks really trained: each its own clips)


def _demo_labels(demo_root: Path) -> list[str]:
    """The fixture's small demo copy as the labelled demo set (the same generation options: nothing is regenerated)."""
    return [f"data.root={demo_root}", "data.demo_options.num_train=16", "data.demo_options.num_val=8"]


@pytest.mark.slow
def test_fine_tuning_signalled_as_a_group_stops_after_the_step_with_its_checkpoint(tmp_path, demo_root):
    args = [sys.executable, "-m", "vatt.train", "experiment=finetune_demo", *_demo_labels(demo_root), "pretrained=null",
            "data.batch_size=4", "data.num_workers=2", "logger=none", "trainer.max_steps=40",
            *_recorder(tmp_path / "rec.jsonl", 0.4)]
    proc = _start_group(args, tmp_path)
    out = _signal_group_at(proc, tmp_path / "rec.jsonl", step=3, sig=signal.SIGINT)  # Ctrl-C in a terminal
    stopped = _assert_quiet_stop(out, proc.returncode, signal.SIGINT)
    (run,) = _runs(tmp_path)
    assert _step(run / "checkpoints" / "last.ckpt") == stopped >= 3
    assert not (run / "metrics.json").exists()  # stopped before testing: no metrics of an unfinished run


@pytest.mark.slow
def test_eval_signalled_as_a_group_exits_143_and_the_same_command_then_completes(tmp_path, demo_root):
    args = [sys.executable, "-m", "vatt.eval", "task=linear_probe", "data=demo_labels", *_demo_labels(demo_root),
            "pretrained=null", "num_workers=2", "batch_size=1", "data.num_windows=8", "logger=none", "probe.l2_grid=[0.001]"]
    proc = _start_group(args, tmp_path)
    lines = []
    for line in proc.stdout:  # logged as the extraction of the first split's features starts
        lines.append(line)
        if " to do" in line:
            break
    os.killpg(proc.pid, signal.SIGTERM)  # at once: on a quiet machine the whole evaluation takes ~1 s
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "Traceback" not in out and "killed by signal" not in out and "stopped by SIGTERM" in out, out[-3000:]
    assert not list((tmp_path / "logs").glob("eval/runs/*/metrics.json"))
    for cached in (tmp_path / "data" / "cache" / "features").glob("*.pt"):  # whatever was cached is whole
        torch.load(cached, weights_only=True)
    again = subprocess.run(args, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(list((tmp_path / "logs").glob("eval/runs/*/metrics.json"))) == 1


@pytest.mark.slow
def test_prepare_signalled_as_a_group_finishes_the_inputs_in_hand_and_resumes_to_the_same_shards(tmp_path, demo_root):
    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "vatt.data.prepare", "manifest", "--manifest", str(demo_root / "train.jsonl"),
                "--out", str(out), "--workers", "2", "--transcode", "64", "--no-progress"]

    full = subprocess.run(cmd(tmp_path / "full"), env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stdout + full.stderr
    out = tmp_path / "out"
    proc = _start_group(cmd(out), tmp_path)
    deadline = time.time() + 120
    while len(list(out.glob(".prepare-tmp/done/*.json"))) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "stopped by SIGTERM" in text, text
    assert not (out / "summary.json").exists() and not (out / "index.json").exists()  # nothing to stream
    work = out / ".prepare-tmp"
    finished = len(list((work / "done").glob("*.json")))
    assert 3 <= finished < 16
    assert not [a for a in (work / "attempts").iterdir() if not (work / "done" / f"{a.name}.json").exists()], \
        "an input the signal interrupted must not count as a crash"
    again = subprocess.run(cmd(out), env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming an interrupted run: {finished} of 16 inputs" in again.stdout
    # the same samples with the same metadata (their order in the chunks follows the 2 workers' pace; bytes
    # are compared with one worker in test_prepare.py, where the transcoder's output is repeatable)
    resumed, reference = read_dataset(out), read_dataset(tmp_path / "full")
    assert {k: v["meta"] for k, v in resumed.items()} == {k: v["meta"] for k, v in reference.items()}


class ValRecorder(Callback):
    def __init__(self, key: str) -> None:
        self.key, self.values = key, {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.values[trainer.global_step] = float(trainer.callback_metrics[self.key])


@pytest.mark.slow
def test_the_best_checkpoint_and_best_value_survive_a_mid_epoch_stop_and_resume(tmp_path, demo_root):
    """SIGINT at step 6 (mid-epoch 2), resume to step 12: the best by val/loss is the best of all 3 validations."""
    base = [*_base(demo_root), "callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min"]
    first, second = ValRecorder("val/loss"), ValRecorder("val/loss")
    _fit_expecting_exit(make_cfg(tmp_path, base), [first, SignalAt(6, signal.SIGINT)], 128 + signal.SIGINT)
    assert list(first.values) == [4]  # the stop itself does not validate
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    fit_with(make_cfg(tmp_path, [*base, f"ckpt_path={ckpt}"]), second)
    values = {**first.values, **second.values}
    assert sorted(values) == [4, 8, 12]
    best_step = min(values, key=values.get)
    state = torch.load(ckpt, weights_only=True)["callbacks"]
    (mc,) = [v for k, v in state.items() if k.startswith("ModelCheckpoint")]
    assert float(mc["best_model_score"]) == pytest.approx(values[best_step])
    assert Path(mc["best_model_path"]).name.endswith(f"step{best_step:06d}.ckpt")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")] == [Path(mc["best_model_path"]).name]
    assert state["HParamsSummary"]["best"] == pytest.approx(values[best_step])
