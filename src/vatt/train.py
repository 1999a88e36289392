"""Pretraining entry point: ``python -m vatt.train experiment=demo key=value ...`` (or ``make train``).

Composes ``configs/train.yaml``, builds the DataModule, the LightningModule
(sized to the tokenizer's vocabulary), callbacks, loggers and the Trainer, then
fits. Each run's config, TensorBoard events and checkpoints land in one folder:
``logs/train/runs/<timestamp>/`` (multiruns: ``logs/train/multiruns/<timestamp>/<job>/``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("vatt.train")

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def _instantiate_all(group: DictConfig | None) -> list:
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit one run described by ``cfg``; returns the final logged metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))

    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if rank_zero_only.rank == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        datamodule.prepare_data()  # demo generation / tokenizer, before the model needs the vocabulary size
    # _convert_="all": plain dicts/lists, so checkpoints hold no OmegaConf objects (weights_only loading works)
    module = hydra.utils.instantiate(cfg.model, vocab_size=datamodule.vocab_size, _convert_="all")

    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if rank_zero_only.rank == 0:
        shown = {k: round(v, 4) for k, v in sorted(metrics.items()) if k.startswith(("val/", "train/loss"))}
        log.info("final metrics: %s", shown)
        log.info("run folder: %s", cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # the value a Hydra sweeper would optimise
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
