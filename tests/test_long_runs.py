"""Runs that survive the real world: preemption, ckpt_path=last with fallback, exact mid-epoch resume, non-finite losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from test_shards import BatchRecorder, assert_same_training_state
from test_train import _fit_with, make_cfg, small_data
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
    return [*small_data(demo_root), "data.batch_size=4", "logger=none", "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_root):
    tmp = tmp_path_factory.mktemp("full")
    full = BatchRecorder()
    _fit_with(make_cfg(tmp, _base(demo_root)), full)
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
    _fit_with(make_cfg(tmp_path / "resume", [*base, f"ckpt_path={ckpt}"]), resumed)
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
        _fit_with(make_cfg(tmp_path, base), poison)
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
        _fit_with(cfg, poison)
    assert not any(poison.changed[s] for s in (1, 2))


@pytest.mark.parametrize("bad", ["callbacks.nonfinite.max_in_a_row=0", "callbacks.preemption.signals=[SIGFOO]",
                                 "callbacks.preemption.requeue=sometimes"])
def test_bad_long_run_settings_are_rejected_by_name(tmp_path, demo_root, bad):
    cfg = make_cfg(tmp_path, [*small_data(demo_root), "debug=fdr", bad])
    with pytest.raises(Exception, match=bad.split("=")[0].split(".")[-1]):
        _fit_with(cfg, Callback())


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
