"""What a run keeps on disk to continue: ``last.ckpt`` and what a checkpoint holds beyond the weights.

- ``LastCheckpoint``: ``checkpoints/last.ckpt`` always equal to the latest training
  state (written atomically; the one before kept as ``previous.ckpt``);
- ``RunConfig``: the run's composed config (and caption vocabulary) in every
  checkpoint, so ``ckpt_path=...`` resumes the same run;
- ``RandomState``: the random generators in every checkpoint, put back on resume so
  the resumed run draws the numbers the uninterrupted one would;
- ``FinalValidation``: a run stopped by ``trainer.max_steps`` mid-epoch validates its
  last step, so it ends with ``val/*`` metrics and a best checkpoint.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

from vatt.run_setup import CONFIG_KEY, VOCAB_KEY


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` equal to the latest training state.

    A ``Checkpoint`` callback, so Lightning runs it after the others; list it after
    the best-checkpoint ``ModelCheckpoint`` so that ``last.ckpt`` holds that
    callback's updated state (which file is best).

    Lightning's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when
    it also saves a monitored checkpoint, i.e. when the metric improves, so resuming
    from it could silently rewind. This callback writes it after every validation,
    at the end of every training epoch, every ``every_n_train_steps`` optimizer
    steps and every ``every_n_minutes`` (when set), when a run is preempted
    (``Preemption``) and at the end of fitting, whenever the step has moved since
    the last write. The file is written beside the target and renamed over it, so
    a run killed mid-write leaves the previous ``last.ckpt`` intact; the one before
    is kept as ``previous.ckpt`` (``keep_previous``), which ``ckpt_path=last`` falls
    back to when ``last.ckpt`` cannot be read.
    """

    PREVIOUS = "previous.ckpt"

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt", every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = None, keep_previous: bool = True) -> None:
        super().__init__()
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}: give a positive number of steps or null")
        if every_n_minutes is not None and not every_n_minutes > 0:
            raise ValueError(f"every_n_minutes={every_n_minutes}: give a positive number of minutes or null")
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self.keep_previous = keep_previous
        self._saved_step: int | None = None
        self._saved_time = time.monotonic()

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def save(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` (all ranks call this; rank 0 writes), keeping the one before as ``previous.ckpt``."""
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._saved_step == trainer.global_step:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; every rank takes part, rank 0 writes
        if trainer.is_global_zero:
            previous = self.dirpath / self.PREVIOUS
            if self.keep_previous and self.path.exists():
                # a resume falls back to it when last.ckpt turns out unreadable (disk full, a copy cut short)
                if previous.is_dir():
                    shutil.rmtree(previous, ignore_errors=True)
                os.replace(self.path, previous)
            elif tmp.is_dir():  # sharded checkpoints are folders
                shutil.rmtree(self.path, ignore_errors=True)
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")
        self._saved_step = trainer.global_step
        self._saved_time = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run has its restored step on disk already
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        due = bool(self.every_n_train_steps) and trainer.global_step % self.every_n_train_steps == 0
        if self.every_n_minutes and not due:
            # rank 0's clock decides, so that every rank takes part in the same saves
            due = trainer.strategy.broadcast(time.monotonic() - self._saved_time >= 60 * self.every_n_minutes)
        if due:
            self.save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation at the end of an epoch is followed by on_train_epoch_end, where ModelCheckpoint
        # records the best file: save there, so last.ckpt holds that record too.
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)


class FinalValidation(Callback):
    """Validate at the last training step when the schedule would not: every run ends with validation metrics.

    A run that stops at ``trainer.max_steps`` in the middle of an epoch (a short
    fine-tuning run, a step-limited smoke run), or whose last epoch is not one that
    ``trainer.check_val_every_n_epoch`` validates (the demo validates every third
    epoch; ``trainer.max_epochs=2`` ends after the second), would otherwise end
    unvalidated: no ``val/*`` metric, no best checkpoint. Asking Lightning to stop
    after the last step, with validation due in that epoch, makes it validate inside
    ``fit``, so the best-checkpoint and ``last.ckpt`` callbacks see that validation as
    any other. (A preempted run stops without it.)
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch == trainer.max_epochs - 1:
            trainer.check_val_every_n_epoch = 1  # the last epoch: validated at its end

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True
            trainer.check_val_every_n_epoch = 1  # due in this epoch, whichever it is


class RunConfig(Callback):
    """Stores the run's composed (unresolved) config in every checkpoint under ``"vatt_config"``.

    ``ckpt_path=...`` reads it back so a resumed run keeps its model, data and seed
    (see ``vatt.runs.restore_config``); ``vocab`` (the caption vocabulary's file and
    size) lets it check that the resumed run reads captions with the same words.
    Plain containers only, so the checkpoint loads with ``weights_only=True``.
    """

    KEY, VOCAB_KEY = CONFIG_KEY, VOCAB_KEY  # read back by vatt.run_setup

    def __init__(self, config: dict[str, Any], vocab: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = self.config
        if self.vocab is not None:
            checkpoint[self.VOCAB_KEY] = self.vocab


class RandomState(Callback):
    """Saves the random generators (torch CPU/CUDA, NumPy, Python) in checkpoints and restores them on resume.

    Dropout, DropToken and the data order draw from them, so without this a resumed
    run would continue with other random numbers than the uninterrupted run. The
    state is put back at the point where the uninterrupted run would be: before the
    next epoch's data iterator is made (it draws the shuffling and worker seeds) for
    a checkpoint written at an epoch's end, else before the next batch.
    """

    KEY = "vatt_rng"

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        np_state = np.random.get_state()
        checkpoint[self.KEY] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate(),
            "at_epoch_end": bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch),
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(self.KEY)

    def _restore(self) -> None:
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning creates the first epoch's data iterator right after this hook (later epochs': after
        # on_train_epoch_start), so an epoch-end state goes back here, before the loaders draw from it
        if self._pending is not None and self._pending["at_epoch_end"]:
            self._restore()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._pending is not None:
            self._restore()
