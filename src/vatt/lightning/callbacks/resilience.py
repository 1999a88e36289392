"""Runs that survive their environment: stop signals and numerical blow-ups.

- ``Preemption``: on SIGTERM / SIGINT / SIGUSR1 the run finishes the step, writes
  ``last.ckpt`` (``LastCheckpoint``) and stops, requeueing the SLURM job when asked;
- ``NonFiniteGuard``: an optimizer step with a non-finite loss or gradient norm is
  skipped and counted; too many in a row stop the run with ``NonFiniteError``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from .checkpointing import LastCheckpoint

log = logging.getLogger("vatt.train")


class Preemption(Callback):
    """Stop cleanly on a signal: finish the step, write ``last.ckpt``, exit with a message saying how to resume.

    ``signals`` (names) are caught from ``setup`` on: SIGTERM (what schedulers send
    before killing a job), SIGINT (Ctrl-C; a second one aborts at once) and SIGUSR1
    (what ``sbatch --signal=USR1@120`` sends before the time limit). After the current
    optimizer step every rank agrees to stop (any rank that got a signal counts),
    ``LastCheckpoint`` writes ``last.ckpt`` and the run ends; ``vatt.train`` then exits
    with status 128 + the signal number. ``requeue``: under SLURM (``SLURM_JOB_ID``
    set), rank 0 runs ``scontrol requeue <job>`` so the job starts again and resumes
    with ``ckpt_path=last``; ``"auto"`` requeues on SIGUSR1 only (the time-limit
    warning), ``true`` on every signal, ``false`` never.
    """

    def __init__(self, signals: list[str] | tuple[str, ...] = ("SIGTERM", "SIGINT", "SIGUSR1"),
                 requeue: bool | str = "auto") -> None:
        super().__init__()
        unknown = [s for s in signals if not isinstance(getattr(signal, str(s), None), signal.Signals)]
        if unknown:
            raise ValueError(f"callbacks.preemption.signals: unknown signal(s) {unknown}; use names like SIGTERM, SIGUSR1")
        if requeue not in (True, False, "auto"):
            raise ValueError(f"callbacks.preemption.requeue must be true, false or auto, got {requeue!r}")
        self.signals = [getattr(signal, str(s)) for s in signals]
        self.requeue = requeue
        self.received: signal.Signals | None = None
        self.stopped_at: int | None = None
        self.checkpoint: Path | None = None
        self.requeued = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)
        log.warning("received %s: stopping after this step and writing checkpoints/last.ckpt", self.received.name)

    def _install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.signals:
            old = signal.signal(s, self._handler)
            self._old.setdefault(s, old)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.received, self.stopped_at, self.requeued = None, None, False
            self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # again: Lightning installs its own SIGTERM handler between setup and here

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        got = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        if not got or trainer.should_stop:
            return
        if self.received is None:
            self.received = signal.SIGTERM  # another rank was signalled
        self.stopped_at = trainer.global_step
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, LastCheckpoint):
                cb.save(trainer)
                self.checkpoint = cb.path
        trainer.should_stop = True
        # Lightning validates when a run stops early; a preempted run must end within the scheduler's grace
        # period instead (the resumed run validates where the uninterrupted one would)
        trainer.limit_val_batches = 0
        if trainer.is_global_zero and self._should_requeue():
            job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
            if os.environ.get("SLURM_ARRAY_TASK_ID"):
                job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            self.requeued = result.returncode == 0
            if self.requeued:
                log.warning("SLURM job %s requeued; it resumes from %s when it starts again", job, self.checkpoint)
            else:
                log.warning("scontrol requeue %s failed (%s)", job, (result.stderr or result.stdout).strip())

    def _should_requeue(self) -> bool:
        if "SLURM_JOB_ID" not in os.environ or self.requeue is False:
            return False
        return self.requeue is True or self.received == signal.SIGUSR1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


class NonFiniteGuard(Callback):
    """Skip the optimizer step when the loss or the gradient norm is not finite; stop after ``max_in_a_row``.

    Checked after backward, before the optimizer: the module's ``last_loss`` (the
    training step's loss, fp32 under bf16 too) and the global gradient norm. A bad
    step sets every gradient to None, so the optimizer leaves every weight and its
    own state untouched; it is counted (``train/nonfinite_steps``, a running total
    kept in checkpoints) and logged with the batch's sample ids. ``max_in_a_row``
    consecutive bad steps stop the run with ``NonFiniteError``. Every rank reaches the
    same decision (gradients are already averaged; the loss check is reduced).
    """

    def __init__(self, max_in_a_row: int = 10) -> None:
        super().__init__()
        if max_in_a_row < 1:
            raise ValueError(f"callbacks.nonfinite.max_in_a_row must be >= 1, got {max_in_a_row}")
        self.max_in_a_row = max_in_a_row
        self.total = 0
        self.in_a_row = 0
        self._ids: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        ids = batch.get("index") if isinstance(batch, dict) else None
        self._ids = ids.tolist() if isinstance(ids, torch.Tensor) else []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        # one fused pass (foreach kernels), as clip_grad_norm_ computes it
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False) if grads else None
        loss = getattr(pl_module, "last_loss", None)
        bad_loss = loss is not None and not bool(torch.isfinite(loss).all())
        bad_grad = norm is not None and not bool(torch.isfinite(norm))
        bad = trainer.strategy.reduce_boolean_decision(bad_loss or bad_grad, all=False)
        if bad:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self.total += 1
            self.in_a_row += 1
            log.warning(
                "step %d: non-finite %s (loss %s, gradient norm %s); skipped the update (%d in a row, %d in all); "
                "samples %s", trainer.global_step, "loss" if bad_loss else "gradient",
                None if loss is None else float(loss), None if norm is None else float(norm),
                self.in_a_row, self.total, self._ids)
        else:
            self.in_a_row = 0
        pl_module.log("train/nonfinite_steps", float(self.total), on_step=True, on_epoch=False, batch_size=1)
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteError(
                f"{self.in_a_row} optimizer steps in a row had a non-finite loss or gradient (last at step "
                f"{trainer.global_step}, samples {self._ids}); the run is stopped. Lower the learning rate, check the "
                "data those samples come from, or resume from an earlier checkpoint "
                "(callbacks.nonfinite.max_in_a_row sets the limit)")

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "in_a_row": self.in_a_row}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total, self.in_a_row = int(state_dict["total"]), int(state_dict["in_a_row"])
