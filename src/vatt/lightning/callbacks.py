"""Callbacks of the training runs: the always-current ``last.ckpt``; the run's config and random state in checkpoints."""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` equal to the latest training state.

    A ``Checkpoint`` callback, so Lightning runs it after the others; list it after
    the best-checkpoint ``ModelCheckpoint`` so that ``last.ckpt`` holds that
    callback's updated state (which file is best).

    Lightning's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when
    it also saves a monitored checkpoint, i.e. when the metric improves, so resuming
    from it could silently rewind. This callback writes it after every validation,
    at the end of every training epoch, every ``every_n_train_steps`` optimizer
    steps (when set) and at the end of fitting, whenever the step has moved since
    the last write. The file is written beside the target and renamed over it, so
    a run killed mid-write leaves the previous ``last.ckpt`` intact.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt", every_n_train_steps: int | None = None) -> None:
        super().__init__()
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}: give a positive number of steps or null")
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._saved_step == trainer.global_step:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank takes part; the strategy writes from rank 0
        if trainer.is_global_zero:
            if tmp.is_dir():  # sharded checkpoints are folders
                shutil.rmtree(self.path, ignore_errors=True)
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")
        self._saved_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run has its restored step on disk already
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
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

    def __init__(self, root: str | Path, labels: tuple[str, ...] | list[str] = ("colour", "shape", "motion"),
                 modality: str = "video", every_n_validations: int = 5, batch_size: int = 32) -> None:
        super().__init__()
        if every_n_validations < 1:
            raise ValueError(f"every_n_validations={every_n_validations}: give a positive number")
        self.root, self.labels, self.modality = Path(root), list(labels), modality
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
