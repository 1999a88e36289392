"""Pretraining entry point: ``python -m vatt.train experiment=demo key=value ...`` (or ``make train``).

Composes ``configs/train.yaml``, builds the DataModule, the LightningModule
(sized to the tokenizer's vocabulary), callbacks, loggers and the Trainer, then
fits. Each run's config, TensorBoard events and checkpoints land in one folder:
``logs/train/runs/<timestamp>/`` (multiruns: ``logs/train/multiruns/<timestamp>/<job>/``).

``ckpt_path=<run>/checkpoints/last.ckpt`` resumes: the run continues in its own
folder with the checkpoint's model, data and seed settings (keys given on the
command line win; every difference is logged), see ``vatt.runs``. When training
stops at a step that was not validated (e.g. ``trainer.max_steps``), one final
validation runs so every run ends with validation metrics.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from vatt.checkpoint import read_checkpoint
from vatt.config import check_train_config
from vatt.errors import UserError, reported
from vatt.interrupts import Stopped, raise_on_stop_signals
from vatt.lightning.noise import silence_known_noise
from vatt.lightning.callbacks import HParamsSummary, Preemption, RandomState, RunConfig
from vatt.metrics import save_metrics_json
from vatt.runs import RESUME_NOTES, restore_config, resume_argv

log = logging.getLogger("vatt.train")

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def _instantiate_all(group: DictConfig | None) -> list:
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def _hydra() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _info(msg: str, *args: Any) -> None:
    if rank_zero_only.rank == 0:
        log.info(msg, *args)


def check_hardware(cfg: DictConfig) -> None:
    """Fail early, with the fix, when the trainer asks for GPUs this machine does not have."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        hc = _hydra()
        choice = hc.runtime.choices.get("trainer") if hc is not None else None
        what = f"trainer={choice}" if choice else f"trainer.accelerator={accelerator}"
        raise UserError(
            f"{what} needs CUDA GPUs, and none is available on this machine. On CPU use trainer=cpu "
            "(one process) or trainer=ddp_cpu (two processes over gloo, to exercise the distributed code); "
            "FSDP and bf16 GPU kernels need a GPU machine."
        )


def restore_from_checkpoint(cfg: DictConfig) -> dict[str, Any] | None:
    """``ckpt_path=...``: check that the file loads, then take its model, data and seed settings (in place).

    Returns the checkpoint's vocabulary record (file and size), if it has one.
    """
    ckpt = read_checkpoint(cfg.ckpt_path)  # names the file when it is truncated or corrupt
    saved, step, vocab = ckpt.get(RunConfig.KEY), ckpt.get("global_step"), ckpt.get(RunConfig.VOCAB_KEY)
    state_keys = set(ckpt.get("state_dict", {}))
    del ckpt
    _info("resuming from %s (global step %s)", cfg.ckpt_path, step)
    if saved is None:
        _info("this checkpoint holds no run settings; model and data come from the command line")
        return vocab
    hc = _hydra()
    lines = restore_config(cfg, saved, list(hc.overrides.task) if hc is not None else [])
    lines += legacy_run_settings(cfg, saved, state_keys)
    if lines:
        _info("settings of the resumed run that differ from the command line's defaults or from the checkpoint:")
        for line in lines:
            _info("  %s", line)
    else:
        _info("the command line and the checkpoint agree on every model, data and seed setting")
    if hc is not None and hc.output_subdir and rank_zero_only.rank == 0:
        # what this run really uses, beside Hydra's copy of the command line's composition
        OmegaConf.save(cfg, Path(hc.runtime.output_dir) / hc.output_subdir / "config.yaml")
    return vocab


def legacy_run_settings(cfg: DictConfig, saved: dict[str, Any], state_keys: set[str]) -> list[str]:
    """Settings a run saved before they were settings, with the values it ran with (in place); one line each.

    The text feed-forward norm had no offset (``t5_mlp_norm=layer_nobias``) until the
    authors' LayerNorm with one became the default, and captions were split by the
    ``split`` punctuation rule until ``data.punctuation`` existed.
    """
    lines = []
    backbone = (saved.get("model") or {}).get("backbone") or {}
    norm = "model.text.transformer.blocks.0.norm2"
    if "t5_mlp_norm" not in backbone and f"{norm}.weight" in state_keys and f"{norm}.bias" not in state_keys:
        with open_dict(cfg):
            cfg.model.backbone.t5_mlp_norm = "layer_nobias"
        lines.append("model.backbone.t5_mlp_norm: 'layer_nobias' from the checkpoint's weights (written before the "
                     "authors' norm with an offset was the default)")
    data = saved.get("data") or {}
    if data and "punctuation" not in data and "punctuation" in cfg.data:
        cfg.data.punctuation = "split"
        lines.append("data.punctuation: 'split', the rule of runs saved before it was a setting")
    return lines


def check_vocabulary(saved: dict[str, Any] | None, datamodule: Any) -> None:
    """A resumed run must read captions with the words its model's word table was trained on."""
    if saved is not None and saved["size"] != datamodule.vocab_size:
        raise ValueError(
            f"the checkpoint was trained with a caption vocabulary of {saved['size']} words ({saved['path']}), "
            f"but this run's has {datamodule.vocab_size} ({datamodule.tokenizer_path}); resume with the checkpoint's "
            f"vocabulary: data.vocab={saved['path']}"
        )


def choose_monitor(cfg: DictConfig, datamodule: Any) -> None:
    """Say which metric picks the best checkpoint; fall back to video->audio when no validation clip has a caption.

    Text->video retrieval needs captions: with an AudioSet-like validation set it is
    never logged, and a checkpoint callback waiting for it would stop the run.
    """
    best = cfg.get("callbacks", {}).get("model_checkpoint") if cfg.get("callbacks") else None
    if not best or not best.get("monitor"):
        return
    monitor = best.monitor
    if monitor.startswith("val/t2v_") and datamodule.val_has_captions() is False:
        fallback = monitor.replace("val/t2v_", "val/v2a_")
        _info("no validation clip has a caption, so %s cannot be computed: the best checkpoint follows %s", monitor, fallback)
        best.monitor = fallback
        if cfg.get("optimized_metric") == monitor:
            cfg.optimized_metric = fallback
    else:
        _info("the best checkpoint follows %s (%s)", best.monitor, best.get("mode", "min"))


# what a run's row in TensorBoard's HParams view shows (besides the command line's overrides)
HPARAM_KEYS = ("model.name", "model.droptoken", "model.loss.mil_nce_weight", "model.loss.temperature",
               "model.optimizer.lr", "model.optimizer.weight_decay", "data.batch_size", "data.global_batch_size",
               "model.input.num_frames", "model.input.image_size", "seed")
# overrides that are plumbing, not settings worth a column
_NOT_HPARAMS = ("paths.", "hydra.", "ckpt_path", "data.path", "data.val_path", "data.vocab", "data.num_workers",
                "data.cache_dir", "trainer.max_steps", "trainer.max_epochs", "debug")


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings for the HParams view: the config groups chosen, ``HPARAM_KEYS`` and every override."""
    hc = _hydra()
    choices = dict(hc.runtime.choices) if hc is not None else {}
    out: dict[str, Any] = {g: choices[g] for g in ("experiment", "model", "data", "trainer") if choices.get(g)}
    keys = list(HPARAM_KEYS)
    if hc is not None:
        for o in hc.overrides.task:
            key = o.split("=", 1)[0].lstrip("+~")
            if "=" in o and "." in key and not key.startswith(_NOT_HPARAMS):
                keys.append(key)
    for key in keys:
        try:
            value = OmegaConf.select(cfg, key)
        except Exception:  # noqa: BLE001 - an interpolation this process cannot resolve
            continue
        if isinstance(value, (int, float, str, bool)) and not isinstance(value, DictConfig):
            out[key] = value
    return out


def write_metrics_json(metrics: dict[str, float], datamodule: Any, run_dir: Path) -> Path:
    """``metrics.json`` of a fine-tuning run: the test metrics and the counts of videos used and skipped."""
    out = {k: v for k, v in sorted(metrics.items()) if k.startswith("test/")}
    split = datamodule.split
    out["num_train"], out["num_test"] = len(split.train), int(metrics.get("test/num_videos", len(split.test)))
    out["num_skipped"] = int(metrics.get("data/test_skipped", 0))
    path = save_metrics_json(out, run_dir / "metrics.json")
    _info("test metrics: %s", path)
    return path


def devices_in_use(trainer: DictConfig) -> int:
    """How many processes train: devices per node x nodes, resolving ``-1``/``"auto"`` as Lightning does."""
    devices, accelerator = trainer.get("devices", "auto"), str(trainer.get("accelerator", "auto"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        n = int(devices)
    elif isinstance(devices, int):
        n = devices
    elif devices is not None and not isinstance(devices, str):  # a list of device ids
        n = len(devices)
    else:
        n = -1
    if n == -1:
        n = torch.cuda.device_count() if gpu else 1
    return max(1, n) * int(trainer.get("num_nodes", 1) or 1)


def configure_batch(cfg: DictConfig) -> int:
    """Derive the per-device batch from ``data.global_batch_size`` (the paper's 2048) and say what the global batch is.

    Every clip of the global batch is a negative for every other one (the losses
    gather over all devices), so the global batch, not the per-device one, is what
    compares with the paper. Returns the number of devices.
    """
    world = devices_in_use(cfg.trainer)
    total = cfg.data.get("global_batch_size")
    if total:
        if total % world:
            raise ValueError(
                f"data.global_batch_size={total} is not divisible by the {world} devices this run trains on; "
                f"choose a multiple of {world}, or set data.global_batch_size=null and data.batch_size (per device)"
            )
        cfg.data.batch_size = total // world
    per = cfg.data.batch_size
    _info("global batch %d = %d device(s) x %d clips per device", per * world, world, per)
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    if accumulate > 1:
        _info("accumulate_grad_batches=%d adds up gradients of %d steps, but each step's contrastive loss still sees "
              "only %d clips: accumulation does not add NCE negatives", accumulate, accumulate, per * world)
    return world


def configure_sync_batchnorm(cfg: DictConfig, world: int) -> None:
    """SyncBatchNorm in the FAC heads whenever several devices train (the authors' cross-replica BN)."""
    if world <= 1:
        return
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    with open_dict(cfg.trainer):
        cfg.trainer.sync_batchnorm = gpu
    if gpu:
        _info("SyncBatchNorm: BatchNorm statistics are synchronised over the %d devices", world)
    else:
        _info("SyncBatchNorm is off: PyTorch synchronises BatchNorm only for GPU/XPU tensors, so each of the %d CPU "
              "processes keeps its own BatchNorm statistics", world)


def interpreter() -> str:
    """The Python this run was started with, as a user would type it from here (``.venv/bin/python``)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(Path.cwd())) if exe.is_relative_to(Path.cwd()) else str(exe)


def preempted(stop: Preemption, cfg: DictConfig) -> None:
    """The run stopped on a signal: say where its state is and how to continue, then exit 128 + signal."""
    if rank_zero_only.rank == 0:
        where = stop.checkpoint or "no last.ckpt (the run has no LastCheckpoint callback)"
        log.warning("stopped by %s at step %s; state saved to %s", stop.received.name, stop.stopped_at, where)
        if stop.requeued:
            log.warning("the SLURM job was requeued and will continue from there")
        elif stop.checkpoint is not None:
            args = [a for a in sys.argv[1:] if not a.startswith(("ckpt_path=", "hydra.run.dir=", "hydra.output_subdir="))]
            log.warning("continue with: %s -m vatt.train %s", interpreter(), " ".join([*args, f"ckpt_path={stop.checkpoint}"]))
            log.warning("(or ckpt_path=last: the newest last.ckpt of this experiment)")
    raise SystemExit(128 + int(stop.received))


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit one run described by ``cfg``; returns the final logged metrics."""
    check_hardware(cfg)
    check_train_config(cfg)
    silence_known_noise()
    for note in RESUME_NOTES:
        _info("%s", note)
    saved_vocab = restore_from_checkpoint(cfg) if cfg.get("ckpt_path") else None
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    configure_sync_batchnorm(cfg, configure_batch(cfg))

    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if rank_zero_only.rank == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        datamodule.prepare_data()  # demo generation / tokenizer, before the model needs the vocabulary size
    vocab = None
    if hasattr(datamodule, "tokenizer_path"):  # pretraining: captions
        _info("caption vocabulary: %d words (%s)", datamodule.vocab_size, datamodule.tokenizer_path)
        check_vocabulary(saved_vocab, datamodule)
        vocab = {"path": str(Path(datamodule.tokenizer_path).resolve()), "size": datamodule.vocab_size}
    # what the model needs from the data (word-table size; classes of a downstream set).
    # _convert_="all": plain dicts/lists, so checkpoints hold no OmegaConf objects (weights_only loading works)
    module = hydra.utils.instantiate(cfg.model, **datamodule.model_kwargs(), _convert_="all")
    choose_monitor(cfg, datamodule)

    callbacks = [
        *_instantiate_all(cfg.get("callbacks")),
        RunConfig(OmegaConf.to_container(cfg, resolve=False), vocab),
        RandomState(),
    ]
    loggers = _instantiate_all(cfg.get("logger"))
    best = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    monitor = best.get("monitor")
    metrics = ["train/loss", *([monitor] if monitor else [])]
    if hasattr(datamodule, "tokenizer_path"):  # pretraining: both retrieval directions and the throughput
        metrics += ["val/t2v_R@10", "val/v2a_R@10", "val/t2v_MedR", "train/samples_per_sec"]
    callbacks.append(HParamsSummary(run_hparams(cfg), metrics, monitor, best.get("mode", "max")))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    stop = next((cb for cb in trainer.callbacks if isinstance(cb, Preemption) and cb.received is not None), None)
    if stop is not None:
        preempted(stop, cfg)
    if cfg.get("test_after_fit") and not trainer.interrupted and not trainer.fast_dev_run:
        _info("testing the final weights on every view of the test videos")
        (tested,) = trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in tested.items()})
        if rank_zero_only.rank == 0:
            write_metrics_json(metrics, datamodule, Path(cfg.paths.output_dir))
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
