"""Callbacks of the training runs: the always-current ``last.ckpt``; the run's config and random state in checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("vatt.train")


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
    fine-tuning run, a step-limited smoke run) would otherwise end unvalidated: no
    ``val/*`` metric, no best checkpoint. Asking Lightning to stop after the last step
    makes it validate inside ``fit``, so the best-checkpoint and ``last.ckpt``
    callbacks see that validation as any other. (A preempted run stops without it.)
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class ModelSummary(Callback):
    """One line at the start of fitting: the model, its parameters per tower and its forward GFLOPs per clip.

    Instead of Lightning's module table (whose FLOPs column is 0 without an example
    input): the GFLOPs are counted on the ``meta`` device for the model's own
    geometry, at DropToken 0 and at the run's rate (``vatt.flops``).
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from vatt.flops import config_gflops
        from vatt.models import count_parameters

        def millions(module: torch.nn.Module, trainable: bool = False) -> str:
            return f"{count_parameters(module, trainable_only=trainable) / 1e6:.2f} M"

        model = getattr(pl_module, "model", None)
        config = getattr(model, "config", None)
        if config is None:  # a fine-tuning module: one tower and a head
            log.info("model: %s parameters (%s trainable)", millions(pl_module), millions(pl_module, True))
            return
        towers = ", ".join(f"{t} {millions(getattr(model, t))}" for t in model.TOWERS)
        at_rate = config_gflops(config)["total"]
        at_zero = at_rate if config.droptoken == 0 else config_gflops(dataclasses.replace(config, droptoken=0.0))["total"]
        log.info("model: %s parameters (%s; %s trainable); forward %.2f GFLOPs per clip (%.2f with DropToken %g "
                 "as in training)", millions(model), towers, millions(model, True), at_zero, at_rate, config.droptoken)


class LoggingInterval(Callback):
    """Log training curves at least once per epoch and per run: ``trainer.log_every_n_steps`` is capped.

    A run whose epochs (or whose ``trainer.max_steps``) are shorter than the logging
    interval would otherwise show no training curve in TensorBoard. The data module's
    ``train_steps_per_epoch(world_size)`` says how long an epoch is, when it knows.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        limits = [trainer.max_steps] if trainer.max_steps and trainer.max_steps > 0 else []
        steps = getattr(trainer.datamodule, "train_steps_per_epoch", None)
        per_epoch = steps(trainer.world_size) if callable(steps) else None
        if per_epoch:
            limits.append(per_epoch)
        if limits and trainer.log_every_n_steps > min(limits):
            trainer.log_every_n_steps = max(1, min(limits))


class RunConfig(Callback):
    """Stores the run's composed (unresolved) config in every checkpoint under ``"vatt_config"``.

    ``ckpt_path=...`` reads it back so a resumed run keeps its model, data and seed
    (see ``vatt.runs.restore_config``); ``vocab`` (the caption vocabulary's file and
    size) lets it check that the resumed run reads captions with the same words.
    Plain containers only, so the checkpoint loads with ``weights_only=True``.
    """

    KEY = "vatt_config"
    VOCAB_KEY = "vatt_vocab"

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


class DemoProbe(Callback):
    """A linear probe of the demo labels on the validation clips, every ``every_n_validations`` validations.

    Downstream progress during pretraining: the frozen pooled features of the
    validation clips (one centred view each) of ``modality`` are split in two
    halves (even / odd clips); a logistic-regression probe (``vatt.tasks.linear_probe``)
    is trained on one half and tested on the other, and the other way round, and
    the mean top-1 is logged as ``probe/<label>_top1`` (plus ``probe/<label>_chance``)
    for every label. Runs on rank 0; the other ranks wait.
    """

    def __init__(self, root: str | Path | None, labels: tuple[str, ...] | list[str] = ("colour", "shape", "motion"),
                 modality: str = "video", every_n_validations: int = 5, batch_size: int = 32) -> None:
        super().__init__()
        if every_n_validations < 1:
            raise ValueError(f"every_n_validations={every_n_validations}: give a positive number")
        self.root, self.labels, self.modality = (Path(root) if root else None), list(labels), modality
        self.every, self.batch_size = every_n_validations, batch_size
        self._seen = 0

    def probe(self, model: Any, clip: Any) -> dict[str, float]:
        from vatt.data.downstream import list_dataset
        from vatt.data.labeled import LabeledClipDataset
        from vatt.tasks.features import extract
        from vatt.tasks.linear_probe import chance_top1, linear_probe

        metrics: dict[str, float] = {}
        features = None
        for label in self.labels:
            listing = list_dataset("demo", self.root, label=label)
            items = listing.splits[0].test
            if features is None:  # the clips are the same for every label: encode them once
                ds = LabeledClipDataset(items, self.modality, clip, "single", len(listing.classes))
                features = extract(model, ds, "agg", self.batch_size, 0, next(model.parameters()).device)
            labels = torch.tensor([int(i.label) for i in items])
            valid = features["valid"]
            x, y = features["features"][valid, 0], labels[valid]
            halves = (torch.arange(len(y)) % 2 == 0, torch.arange(len(y)) % 2 == 1)
            top1 = [linear_probe(x[a], y[a], x[b][:, None], y[b], len(listing.classes))["top1"]
                    for a, b in (halves, halves[::-1])]
            metrics[f"probe/{label}_top1"] = sum(top1) / 2
            metrics[f"probe/{label}_chance"] = chance_top1(y)
        return metrics

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._seen += 1
        if self._seen % self.every:
            return
        if self.root is None:  # e.g. data.sources mixes several folders: no single demo folder to probe
            logging.getLogger("vatt.lightning.pretrain").info(
                "demo probe switched off: data.path names no demo folder (callbacks.probe.root)")
            self.every = 10**9
            return
        if trainer.is_global_zero:
            from vatt.data.clip import ClipConfig

            clip = ClipConfig(**{k: v for k, v in pl_module.hparams["input"].items()
                                 if k in ("num_frames", "fps", "image_size", "sample_rate", "max_words")})
            was_training = pl_module.model.training
            try:
                metrics = self.probe(pl_module.model.eval(), clip)
            except (FileNotFoundError, ValueError) as e:  # not demo-like data: say so once and stop probing
                logging.getLogger("vatt.lightning.pretrain").warning("demo probe switched off: %s", e)
                self.every, metrics = 10**9, {}
            finally:
                pl_module.model.train(was_training)
            for lg in trainer.loggers:
                lg.log_metrics(metrics, step=trainer.global_step)
            shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("_top1"))
            logging.getLogger("vatt.lightning.pretrain").info("step %d: %s", trainer.global_step, shown)
        trainer.strategy.barrier("demo_probe")


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


class HParamsSummary(Callback):
    """TensorBoard's HParams view with metric columns, and the best-so-far value of the monitored metric.

    At the start of fitting each TensorBoard logger gets one HParams session: the
    run's chosen settings (``hparams``: flat ``key -> number | str | bool``) and the
    metric tags the view shows as columns (``metrics``: the last value of each tag in
    the run). After every validation ``<monitor>_best`` (e.g. ``val/t2v_R@10_best``)
    is logged: the best value so far (``mode`` max or min), kept in checkpoints. No
    scalar is written at step 0, so curves start where training does.
    """

    def __init__(self, hparams: dict[str, Any], metrics: list[str], monitor: str | None, mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode!r}")
        self.hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        self.monitor, self.mode = monitor, mode
        self.metrics = list(dict.fromkeys([*metrics, *([f"{monitor}_best"] if monitor else [])]))
        self.best: float | None = None

    def _tensorboards(self, trainer: L.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import TensorBoardLogger

        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from torch.utils.tensorboard.summary import hparams

        for lg in self._tensorboards(trainer):
            exp, ssi, sei = hparams(self.hparams, {m: 0.0 for m in self.metrics})
            writer = lg.experiment._get_file_writer()
            for summary in (exp, ssi, sei):
                writer.add_summary(summary)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not torch.isfinite(torch.as_tensor(value)):
            return
        value = float(value)
        better = max if self.mode == "max" else min
        self.best = value if self.best is None else better(self.best, value)
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_metrics({f"{self.monitor}_best": self.best}, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


class EmbeddingViews(Callback):
    """Pictures of what was learned, at the end of every ``every_n_validations``-th validation (pretraining).

    Into each TensorBoard logger:

    - the **embedding projector**: the validation clips' video and audio embeddings
      (video-audio space) and video and caption embeddings (video-text space), with
      one metadata row per clip (file, first caption, the manifest's labels);
    - a **2-D map** of the video embeddings (t-SNE with scikit-learn, else PCA),
      coloured by the first label (or the first caption word), as an image;
    - **retrieval examples**: for a few captions, the top-5 clips retrieved in the
      video-text space as thumbnails (middle frame), the right one framed in green.

    Needs the module's ``val_outputs`` (``VATTPretrainModule``); every rank takes
    part in gathering them, rank 0 writes. ``max_points`` caps the clips shown.
    """

    def __init__(self, every_n_validations: int = 10, max_points: int = 1000, method: str = "auto",
                 queries: int = 4) -> None:
        super().__init__()
        if every_n_validations < 1:
            raise ValueError(f"callbacks.embeddings.every_n_validations must be >= 1, got {every_n_validations}")
        if method not in ("auto", "tsne", "pca"):
            raise ValueError(f"callbacks.embeddings.method must be auto, tsne or pca, got {method!r}")
        self.every_n, self.max_points, self.method, self.queries = every_n_validations, max_points, method, queries
        self._count = 0
        self._thumbs: dict[int, torch.Tensor] = {}
        self._due = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._due = (not trainer.sanity_checking and self._usable(pl_module)
                     and self._count % self.every_n == self.every_n - 1)
        self._thumbs = {}

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._due or not isinstance(batch, dict) or "video" not in batch:
            return
        video = batch["video"]  # B, 3, T, H, W in [-1, 1]
        middle = video[:, :, video.shape[2] // 2].float()
        small = torch.nn.functional.interpolate(middle, size=(64, 64), mode="bilinear", align_corners=False)
        for i, frame in zip(batch["index"].tolist(), small.cpu()):
            if len(self._thumbs) < self.max_points:
                self._thumbs[int(i)] = ((frame + 1) / 2).clamp(0, 1)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._usable(pl_module):
            return
        self._count += 1
        if not self._due or not pl_module.val_outputs["index"].update_called:
            return
        # torchmetrics caches the gathered value, so the module's own compute right after is free
        gathered = {k: m.compute().detach().cpu() for k, m in pl_module.val_outputs.items()}
        if not trainer.is_global_zero:
            return
        index = gathered["index"].long()
        order = torch.argsort(index, stable=True)
        first = order[torch.cat([torch.ones(1, dtype=torch.bool), index[order][1:] != index[order][:-1]])]
        first = first[: self.max_points]
        out = {k: v[first] for k, v in gathered.items()}
        meta, header = self._metadata(trainer, out["index"].long().tolist())
        step = trainer.global_step
        from lightning.pytorch.loggers import TensorBoardLogger

        for lg in trainer.loggers:
            if not isinstance(lg, TensorBoardLogger):
                continue
            writer = lg.experiment
            for tag in ("video_va", "audio_va", "video_vt"):
                writer.add_embedding(out[tag].float(), metadata=meta, metadata_header=header, global_step=step,
                                     tag=f"val_{tag}")
            has_text = out["has_text"].bool()
            if has_text.any():
                writer.add_embedding(out["text_vt"][has_text].float(), metadata=[m for m, h in zip(meta, has_text) if h],
                                     metadata_header=header, global_step=step, tag="val_text_vt")
            writer.add_figure("val/embedding_map", self._map(out["video_va"].float(), meta, header), step)
            if has_text.any() and self._thumbs:
                writer.add_figure("val/retrieval_examples", self._grid(out, meta, header), step)
            writer.flush()

    @staticmethod
    def _usable(pl_module: L.LightningModule) -> bool:
        outputs = getattr(pl_module, "val_outputs", None)
        return outputs is not None and {"index", "video_va", "audio_va", "video_vt", "text_vt", "has_text"} <= set(outputs)

    def _metadata(self, trainer: L.Trainer, indices: list[int]) -> tuple[list[list[str]], list[str]]:
        rows = getattr(getattr(trainer.datamodule, "val_set", None), "rows", None)
        label_keys = sorted({k for r in rows for k in r.labels}) if rows else []
        header = ["clip", "caption", *label_keys]
        meta = []
        for i in indices:
            r = rows[i] if rows and 0 <= i < len(rows) else None
            caption = r.captions[len(r.captions) // 2].text if r is not None and r.captions else ""
            meta.append([Path(str(r.video)).name if r is not None else str(i), caption or "-",
                         *[str(r.labels.get(k, "-")) if r is not None else "-" for k in label_keys]])
        return meta, header

    @staticmethod
    def colour_by(meta: list[list[str]], header: list[str]) -> tuple[int, list[str]]:
        """The metadata column the map is coloured by (the first label, else the caption's first word) and its values."""
        if len(header) > 2:
            return 2, [m[2] for m in meta]
        return 1, [(m[1].split() or ["-"])[0] for m in meta]

    def _map(self, x: torch.Tensor, meta: list[list[str]], header: list[str]) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = torch.nn.functional.normalize(x, dim=-1)
        method = self.method
        if method in ("auto", "tsne"):
            try:
                from sklearn.manifold import TSNE
            except ImportError:
                if method == "tsne":
                    raise
                method = "pca"
            else:
                method = "tsne"
        if method == "tsne" and len(x) > 5:
            xy = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=0).fit_transform(x.numpy())
        else:
            method = "pca"
            centred = x - x.mean(0)
            xy = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T).numpy()
        col, labels = self.colour_by(meta, header)
        fig, ax = plt.subplots(figsize=(6, 5))
        for value in sorted(set(labels)):
            pick = [i for i, v in enumerate(labels) if v == value]
            # a label that names a colour (the demo's "colour") is drawn in it
            colour = value if matplotlib.colors.is_color_like(value) and not value.replace(".", "").isdigit() else None
            ax.scatter(xy[pick, 0], xy[pick, 1], s=12, label=value, color=colour)
        ax.set_title(f"validation video embeddings ({method}), coloured by {header[col]}")
        if len(set(labels)) <= 12:
            ax.legend(fontsize=7, markerscale=1.5)
        fig.tight_layout()
        return fig

    def _grid(self, out: dict[str, torch.Tensor], meta: list[list[str]], header: list[str]) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        index = out["index"].long().tolist()
        has_text = out["has_text"].bool()
        video = torch.nn.functional.normalize(out["video_vt"].float(), dim=-1)
        text = torch.nn.functional.normalize(out["text_vt"].float(), dim=-1)
        queries = [i for i in range(len(index)) if has_text[i] and index[i] in self._thumbs][: self.queries]
        fig, axes = plt.subplots(len(queries), 5, figsize=(10, 2.3 * len(queries)), squeeze=False)
        for row, q in enumerate(queries):
            top = (text[q] @ video.T).topk(min(5, len(index))).indices.tolist()
            for col in range(5):
                ax = axes[row][col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(top):
                    continue
                clip = top[col]
                if index[clip] in self._thumbs:
                    ax.imshow(self._thumbs[index[clip]].permute(1, 2, 0).numpy())
                right = clip == q
                for spine in ax.spines.values():
                    spine.set_edgecolor("limegreen" if right else "lightgrey")
                    spine.set_linewidth(4 if right else 1)
                ax.set_xlabel(f"#{col + 1}" + (" (right clip)" if right else ""), fontsize=7)
            axes[row][0].set_title(f'"{meta[q][1]}"', fontsize=8, loc="left")
        fig.suptitle("text -> video: top-5 clips per caption", fontsize=9)
        fig.tight_layout()
        return fig
