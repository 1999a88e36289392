"""What a training run derives from its composed config before anything is built.

``prepare_run`` does it in order: hardware check, value checks, the resumed
checkpoint's settings (``ckpt_path=``), the per-device batch from the global one,
SyncBatchNorm, the loggers' settings (Weights & Biases online or offline, MLflow's file store).
``choose_monitor`` and ``run_hparams`` read the config once the data is known. Every function changes the config in place and logs what it
decided (rank 0); none imports Lightning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vatt.checkpoint import read_checkpoint
from vatt.config import check_train_config
from vatt.errors import UserError
from vatt.runs import RESUME_NOTES, restore_config

log = logging.getLogger("vatt.train")

# checkpoint entries written by the training callbacks (vatt.lightning.callbacks.RunConfig)
CONFIG_KEY, VOCAB_KEY = "vatt_config", "vatt_vocab"


def _hydra() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _rank_zero() -> bool:
    """Rank 0 of the job, read from the environment as Lightning does (set-up runs before the trainer exists)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def _info(msg: str, *args: Any) -> None:
    if _rank_zero():
        log.info(msg, *args)


def prepare_run(cfg: DictConfig) -> dict[str, Any] | None:
    """Check ``cfg`` and derive what the run needs before instantiation (in place).

    Returns the resumed checkpoint's vocabulary record (None for a new run).
    """
    check_hardware(cfg)
    check_train_config(cfg)
    for note in RESUME_NOTES:
        _info("%s", note)
    saved_vocab = restore_from_checkpoint(cfg) if cfg.get("ckpt_path") else None
    configure_sync_batchnorm(cfg, configure_batch(cfg))
    configure_loggers(cfg)
    return saved_vocab


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
    saved, step, vocab = ckpt.get(CONFIG_KEY), ckpt.get("global_step"), ckpt.get(VOCAB_KEY)
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
    if hc is not None and hc.output_subdir and _rank_zero():
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


def check_vocabulary(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
    """A resumed run must read captions with the words its model's word table was trained on."""
    if saved is not None and current is not None and saved["size"] != current["size"]:
        raise ValueError(
            f"the checkpoint was trained with a caption vocabulary of {saved['size']} words ({saved['path']}), "
            f"but this run's has {current['size']} ({current['path']}); resume with the checkpoint's "
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


def configure_loggers(cfg: DictConfig) -> None:
    """What the ``logger`` group leaves to the environment: wandb online or offline, MLflow's local file store."""
    loggers = cfg.get("logger") or {}
    configure_wandb(loggers.get("wandb"))
    mlflow = loggers.get("mlflow")
    if mlflow and str(mlflow.get("tracking_uri") or "").startswith("file:"):
        # MLflow 3 keeps the file store ("maintenance mode") but refuses it unless asked; a database backend
        # (sqlite:///...) needs SQLAlchemy, which this install does not have
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        _info("mlflow: local file store %s (browse it: mlflow ui --backend-store-uri %s)", mlflow.tracking_uri,
              mlflow.tracking_uri)
    if mlflow:  # Lightning's warning per metric is silenced (vatt.lightning.noise); one line says it instead
        _info("mlflow: metric names lose their '@' (MLflow allows no '@'): val/t2v_R@10 is val/t2v_R10 there")


def configure_wandb(wandb: DictConfig | None) -> None:
    """``logger.wandb.offline: null`` (``logger=wandb``/``many``): online only with an API key, else offline (in place).

    Online needs ``WANDB_API_KEY`` (or ``WANDB_MODE=online``, e.g. after ``wandb login``); without it the run is
    logged offline into ``<run>/wandb/offline-run-*`` (``wandb sync`` uploads it later), and ``WANDB_MODE=offline``
    and ``WANDB_SILENT=true`` keep wandb from asking for a login or reaching the network.
    """
    if not wandb or "_target_" not in wandb:
        return
    chosen = wandb.get("offline") is not None
    if not chosen:
        with open_dict(wandb):
            wandb.offline = not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online")
    if wandb.offline:
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        _info("wandb: offline (%s), into %s/wandb/offline-run-*; upload it later with `wandb sync <that folder>`",
              "logger.wandb.offline=true" if chosen else "no WANDB_API_KEY",
              wandb.get("save_dir", "."))
    else:
        _info("wandb: online, project %s (WANDB_API_KEY or WANDB_MODE=online is set)", wandb.get("project"))


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
