"""What a run tells about itself: the model's size, training curves and the TensorBoard HParams view.

- ``ModelSummary``: one line at the start of fitting with the parameters per tower
  and the forward GFLOPs per clip;
- ``LoggingInterval``: ``trainer.log_every_n_steps`` capped at the length of an
  epoch (and of the run), so every run logs training curves;
- ``HParamsSummary``: one HParams session per TensorBoard logger, and the best value
  so far of the monitored metric (``<monitor>_best``, into every logger).

``tensorboards(trainer)`` finds the TensorBoard loggers of a run; ``without_tensorboard``
says once that a TensorBoard-only feature needs ``logger=tensorboard`` when there is none.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("vatt.train")


def tensorboards(trainer: L.Trainer) -> list[Any]:
    """The run's TensorBoard loggers (one of several loggers, e.g. ``logger=many``, or the only one)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def without_tensorboard(trainer: L.Trainer, feature: str, logger: logging.Logger = log) -> bool:
    """True when the run has no TensorBoard logger; then one line (rank 0) names ``feature`` as skipped.

    Call it once per run. A fast dev run, which logs nothing by design, is not told.
    """
    if tensorboards(trainer):
        return False
    if trainer.is_global_zero and not trainer.fast_dev_run:
        names = ", ".join(type(lg).__name__ for lg in trainer.loggers) or "none"
        logger.info("%s: TensorBoard only, skipped; it needs logger=tensorboard (or logger=many, or a list such as "
                    "logger=[tensorboard,csv]); this run's loggers: %s", feature, names)
    return True


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


class HParamsSummary(Callback):
    """TensorBoard's HParams view with metric columns, and the best-so-far value of the monitored metric.

    At the start of fitting each TensorBoard logger gets one HParams session (without one,
    a line says so; every logger gets the whole config from ``vatt.train``): the
    run's chosen settings (``hparams``: flat ``key -> number | str | bool``) and the
    metric tags the view shows as columns (``metrics``: the last value of each tag in
    the run). After every validation ``<monitor>_best`` (e.g. ``val/t2v_R@10_best``)
    is logged into every logger: the best value so far (``mode`` max or min), kept in checkpoints. No
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

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if without_tensorboard(trainer, "HParams view with metric columns (the other loggers get the run's config "
                                        "as hyper-parameters)") or not trainer.is_global_zero:
            return
        from torch.utils.tensorboard.summary import hparams

        for lg in tensorboards(trainer):
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
