"""Training entry point: ``python -m vatt.train experiment=demo key=value ...`` (or ``make train``).

Compose ``configs/train.yaml`` → derive what the config leaves implicit
(``vatt.run_setup``: checks, a resumed checkpoint's settings, the per-device
batch, SyncBatchNorm) → instantiate data, model, callbacks, loggers and trainer →
fit → test (fine-tuning) → ``metrics.json``. Pretraining and fine-tuning differ
only in their config groups. Each run's config, TensorBoard events and
checkpoints land in one folder: ``logs/train/runs/<timestamp>/`` (multiruns:
``logs/train/multiruns/<timestamp>/<job>/``); ``ckpt_path=.../last.ckpt`` continues
a run in its own folder (``vatt.runs``). A run that stops at a step it did not
validate (e.g. ``trainer.max_steps``) validates once more, so every run ends with
validation metrics.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from vatt.data import loading
from vatt.errors import reported
from vatt.interrupts import Stopped, raise_on_stop_signals
from vatt.lightning.callbacks import HParamsSummary, Preemption, RandomState, RunConfig
from vatt.lightning.noise import silence_known_noise
from vatt.metrics import write_run_metrics
from vatt.run_setup import check_vocabulary, choose_monitor, prepare_run, run_hparams
from vatt.runs import CONFIG_DIR, report_stop, resume_argv

log = logging.getLogger("vatt.train")


def _info(msg: str, *args) -> None:
    if rank_zero_only.rank == 0:
        log.info(msg, *args)


def _instantiate_all(group: DictConfig | None) -> list:
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def build_datamodule(cfg: DictConfig, saved_vocab: dict | None) -> L.LightningDataModule:
    """The run's DataModule, its data prepared (demo generation, tokenizer) before the model needs its sizes."""
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if rank_zero_only.rank == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        datamodule.prepare_data()
    vocab = datamodule.vocabulary()
    if vocab is not None:
        _info("caption vocabulary: %d words (%s)", vocab["size"], vocab["path"])
    check_vocabulary(saved_vocab, vocab)
    return datamodule


def build_trainer(cfg: DictConfig, module: L.LightningModule, vocab: dict | None) -> L.Trainer:
    """Callbacks (the config's, plus the run record and random state every checkpoint holds), loggers, Trainer."""
    best = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    monitor = best.get("monitor")
    metrics = ["train/loss", *([monitor] if monitor else []), *module.summary_metrics]
    callbacks = [
        *_instantiate_all(cfg.get("callbacks")),
        RunConfig(OmegaConf.to_container(cfg, resolve=False), vocab),
        RandomState(),
        HParamsSummary(run_hparams(cfg), metrics, monitor, best.get("mode", "max")),
    ]
    finish_loggers()
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return trainer


def finish_loggers(trainer: L.Trainer | None = None) -> None:
    """End this process's Weights & Biases run, if one is open (its summary written).

    ``wandb`` keeps one run per process, and a ``WandbLogger`` made while one is open logs into it: the jobs of a
    ``--multirun`` sweep, or runs in one test process, would all land in the first job's run. Called before the
    loggers are made and after a run (a run that fails is finished by wandb's own exit hook).
    """
    wandb = sys.modules.get("wandb")  # imported only by a WandbLogger
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if trainer is not None and trainer.interrupted else 0)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit one run described by ``cfg``; returns the final logged metrics."""
    silence_known_noise()
    saved_vocab = prepare_run(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))

    datamodule = build_datamodule(cfg, saved_vocab)
    # _convert_="all": plain dicts/lists, so checkpoints hold no OmegaConf objects (weights_only loading works)
    module = hydra.utils.instantiate(cfg.model, **datamodule.model_kwargs(), _convert_="all")
    choose_monitor(cfg, datamodule)
    trainer = build_trainer(cfg, module, datamodule.vocabulary())
    if trainer.strategy.root_device.type == "cpu":
        workers = getattr(datamodule, "num_workers", 0)
        threads = loading.share_cores_with_workers(workers, trainer.num_devices)
        if threads is not None:
            _info("CPU training: %d math thread(s) per process beside %d loader worker(s) on %d core(s) "
                  "(set OMP_NUM_THREADS to choose)", threads, workers, loading.usable_cores())

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    stop = next((cb for cb in trainer.callbacks if isinstance(cb, Preemption) and cb.received is not None), None)
    if stop is not None:
        if rank_zero_only.rank == 0:
            report_stop(log, stop.received.name, stop.stopped_at, stop.checkpoint, stop.requeued)
        raise SystemExit(128 + int(stop.received))
    if cfg.get("test_after_fit") and not trainer.interrupted and not trainer.fast_dev_run:
        _info("testing the final weights on every view of the test videos")
        (tested,) = trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in tested.items()})
        if rank_zero_only.rank == 0:
            last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
            write_run_metrics(datamodule.test_record(metrics, getattr(module, "tested_index", None),
                                                     str(last) if last.is_file() else None, cfg.get("pretrained")),
                              Path(cfg.paths.output_dir))
    finish_loggers(trainer)
    if rank_zero_only.rank == 0:
        shown = {k: round(v, 4) for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/", "train/loss"))}
        log.info("final metrics: %s", shown)
        log.info("run folder: %s", cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Outside the training loop (data preparation, set-up, the final validation and test) a stop signal ends the
    # run at once: there is no step to finish. In the loop the Preemption callback takes over (README "Long runs").
    try:
        with raise_on_stop_signals(), reported("vatt.train", log):
            metrics = train(cfg)
    except Stopped as e:
        if rank_zero_only.rank == 0:
            log.warning("stopped by %s outside the training loop (no optimizer step was in progress); "
                        "checkpoints/last.ckpt, if the run has one, holds its last finished step", e.signal.name)
        raise SystemExit(e.exit_code) from None
    # the value a Hydra sweeper would optimise
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *resume_argv(sys.argv[1:])]  # a resumed run continues in its own folder
    main()
