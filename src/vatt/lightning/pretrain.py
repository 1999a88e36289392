"""VATT pretraining as a LightningModule: NCE(video, audio) + λ·MIL-NCE(video, text)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import lightning as L
import torch
from torchmetrics.aggregation import CatMetric

from vatt.losses import mil_nce_loss, nce_loss
from vatt.metrics import SMOKE_CHANCE, retrieval_metrics
from vatt.models import create_model
from vatt.pretrained import MODEL_KEY  # where the model's own config goes in a checkpoint
from vatt.schedules import warmup_cosine

from .hparams import backbone_kwargs, compile_options
from .sums import log_epoch_sums

log = logging.getLogger(__name__)


# The embeddings validation collects per clip (text: caption 0, the window's own caption), each with the
# output that flags the clips it is defined for (None: every clip).
VAL_EMBEDDINGS: dict[str, str | None] = {"video_va": None, "audio_va": None, "video_vt": None, "text_vt": "has_text"}
# Everything it collects (``val_outputs``): the clip's id in the dataset, the embeddings, whether it has a caption.
VAL_KEYS = ("index", *VAL_EMBEDDINGS, "has_text")


def unique_clips(outputs: dict[str, torch.Tensor], limit: int | None = None) -> dict[str, torch.Tensor]:
    """The gathered validation ``outputs`` with each clip once, in the order of ``index``; at most ``limit`` clips.

    A clip can be seen more than once (a distributed sampler pads the last ranks
    with repeats): its first row in the gathered order is kept.
    """
    index = outputs["index"].long()
    order = torch.argsort(index, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    keep[1:] = index[order][1:] != index[order][:-1]
    first = order[keep][:limit]
    return {k: v[first] for k, v in outputs.items()}


def validation_retrieval(outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Retrieval metrics of a validation set from its gathered per-clip outputs.

    ``outputs``: ``index`` [N] (the clip's id in the dataset), ``video_va``/``audio_va``
    [N, 512], ``video_vt``/``text_vt`` [N, 256] (caption 0: the window's own caption),
    ``has_text`` [N]. A clip seen twice counts once (``unique_clips``). Video -> audio
    over all clips in the va space; text -> video over the clips with a caption in the
    vt space (``val/t2v_*`` only when there is one).
    """
    o = unique_clips(outputs)
    num_clips = len(o["index"])
    metrics = {f"val/v2a_{k}": v for k, v in retrieval_metrics(o["video_va"], o["audio_va"]).items()}
    has_text = o["has_text"].bool()
    metrics["val/num_clips"] = float(num_clips)
    metrics["val/v2a_chance_R@10"] = min(1.0, 10 / num_clips)
    if has_text.any():
        t2v = retrieval_metrics(o["text_vt"][has_text], o["video_vt"][has_text])
        metrics.update({f"val/t2v_{k}": v for k, v in t2v.items()})
        metrics["val/t2v_chance_R@10"] = min(1.0, 10 / int(has_text.sum()))
    return metrics


class VATTPretrainModule(L.LightningModule):
    """Wraps ``vatt.create_model(name, ...)``.

    Arguments are plain values (Hydra passes the ``model`` config group):
    ``name`` and ``droptoken``/``droptoken_per_sample`` choose the backbone,
    ``backbone`` holds further ``create_model`` overrides, ``input`` the clip
    geometry (frames, fps, image size, sample rate, words), ``loss`` the
    temperature and λ (``mil_nce_weight``), ``optimizer``/``scheduler`` Adam and the
    warmup + half-cosine schedule (paper §4.1; docs/vatt.md §6). ``total_steps: null`` uses the
    trainer's estimate.
    """

    # besides the loss and the monitored metric, what a run's row in TensorBoard's HParams view shows
    summary_metrics = ("val/t2v_R@10", "val/v2a_R@10", "val/t2v_MedR", "train/samples_per_sec")

    def __init__(
        self,
        name: str = "tiny",
        droptoken: float = 0.5,
        droptoken_per_sample: bool = True,
        vocab_size: int = 2**16,
        input: dict | None = None,
        backbone: dict | None = None,
        loss: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        compile: bool | str = False,
        word_vectors: str | None = None,
        word_vectors_trainable: bool = False,
        vocab: list[str] | None = None,
        punctuation: str = "remove",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vocab"])  # the words are stored once, with the model's config
        self.vocab, self.punctuation = vocab, punctuation
        kwargs = backbone_kwargs(name, droptoken, droptoken_per_sample, vocab_size, input, backbone)
        self.model = create_model(kwargs.pop("name"), **kwargs)
        self.load_word_vectors(word_vectors, vocab, word_vectors_trainable)
        self.loss_cfg = {"temperature": 0.07, "mil_nce_weight": 1.0, **dict(loss or {})}
        self.optim_cfg = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0, **dict(optimizer or {})}
        self.sched_cfg = {"warmup_steps": 5000, "total_steps": 500_000, "final_lr": 5e-5, **dict(scheduler or {})}
        self.compile = compile
        # validation embeddings of every clip, gathered over ranks at the end of validation
        self.val_outputs = torch.nn.ModuleDict(
            {k: CatMetric(nan_strategy="disable").set_dtype(torch.float64 if k == "index" else torch.float32)
             for k in VAL_KEYS}
        )
        self._last_step_time: float | None = None
        self._total_steps: int | None = None
        self._skipped_total: torch.Tensor | int = 0  # samples the loaders skipped since the run began (this rank)
        self._epoch_skipped: torch.Tensor | int = 0  # ... in this training epoch (this rank)

    def load_word_vectors(self, path: str | None, vocab: list[str] | None, trainable: bool) -> None:
        """Fill the word table from a word2vec/GloVe file for the tokenizer's words (frozen unless ``trainable``)."""
        embed = self.model.text.embed
        if path is None:
            msg = ("word table: %d words, randomly initialised and trained (no model.word_vectors file; the paper "
                   "uses frozen word2vec vectors)")
            (log.warning if self.hparams.name != "tiny" else log.info)(msg, embed.weight.shape[0])
            return
        if vocab is None:
            raise ValueError("model.word_vectors needs the tokenizer's words (train.py passes them from the data module)")
        found = embed.load_vectors(path, vocab, freeze=not trainable)
        log.info("word vectors: %d of %d vocabulary words found in %s (the others, [UNK] among them, start as small "
                 "random vectors; [PAD] is zero); the table is %s", found, len(vocab), path,
                 "trained" if trainable else "frozen")

    def configure_model(self) -> None:
        options = compile_options(self.compile)
        if options is not None and not isinstance(self.model.video.transformer, torch._dynamo.eval_frame.OptimizedModule):
            # compile the Transformer stacks: the shapes are static, the glue around them is not
            for enc in (self.model.video, self.model.audio, self.model.text):
                enc.transformer.compile(**options)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(video=batch["video"], audio=batch["audio"], text=batch["text"], text_mask=batch["text_mask"])

    def losses(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tau = self.loss_cfg["temperature"]
        nce = nce_loss(out["video_va"], out["audio_va"], temperature=tau)
        mil = mil_nce_loss(out["video_vt"], out["text_vt"], temperature=tau, text_mask=out["text_mask"])
        return {"loss": nce + self.loss_cfg["mil_nce_weight"] * mil, "loss_nce": nce, "loss_mil_nce": mil}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.losses(self(batch))
        self.last_loss = losses["loss"].detach()  # NonFiniteGuard checks it before the optimizer step
        bs = batch["video"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        self.log_skipped(batch, "data/skipped", bs)
        now = time.perf_counter()
        if self._last_step_time is not None:
            # global samples per second over the last step (data loading included)
            world = self.trainer.world_size if self._trainer is not None else 1
            self.log("train/samples_per_sec", bs * world / (now - self._last_step_time), batch_size=bs)
        self._last_step_time = now
        return losses["loss"]

    def log_skipped(self, batch: dict[str, torch.Tensor], name: str, bs: int) -> None:
        """Samples the loader skipped (bad files) for this batch, summed over the epoch and all ranks.

        Logged once per epoch (``on_epoch``), so no skip is lost between logging
        steps; training also logs the running total since the run began as
        ``data/skipped_total`` (at logging steps and at every epoch's end; kept in
        checkpoints).
        """
        if "skipped" not in batch:
            return
        n = batch["skipped"].sum()
        if self.training:  # summed over the ranks in on_train_epoch_end (vatt.lightning.sums)
            self._epoch_skipped = n + self._epoch_skipped
            self._skipped_total = n + self._skipped_total
            self.log("data/skipped_total", self._skipped_total.float(), reduce_fx="sum", sync_dist=True, batch_size=bs)
        else:  # validation: its metrics are reduced at the validation's end, on every rank
            self.log(name, n.float(), on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, batch_size=bs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what rebuilds the model without this module (vatt.load_pretrained): its config, caption words and rule
        checkpoint[MODEL_KEY] = {"config": dataclasses.asdict(self.model.config), "vocab": self.vocab,
                                 "punctuation": self.punctuation}
        # every rank saves together, so the sum over ranks is a safe collective here
        total = torch.as_tensor(self._skipped_total, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
        checkpoint["data_skipped_total"] = int(total)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the saved total is over all ranks: rank 0 carries it on, so the logged sum over ranks continues
        self._skipped_total = int(checkpoint.get("data_skipped_total", 0)) if self.global_rank == 0 else 0

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None

    def on_train_epoch_end(self) -> None:
        log_epoch_sums(self, {"data/skipped": self._epoch_skipped, "data/skipped_total": self._skipped_total})
        self._epoch_skipped = 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        bs = batch["video"].shape[0]
        if bs > 1:
            self.log("val/loss", self.losses(out)["loss"], batch_size=bs, sync_dist=True)
        self.log_skipped(batch, "data/val_skipped", bs)
        step = {
            "index": batch["index"],
            "video_va": out["video_va"],
            "audio_va": out["audio_va"],
            "video_vt": out["video_vt"],
            "text_vt": out["text_vt"][:, 0],  # caption 0 is the one of the window itself
            "has_text": out["text_mask"][:, 0],
        }
        for key, value in step.items():
            self.val_outputs[key].update(value.detach())

    def on_validation_epoch_end(self) -> None:
        if not self.val_outputs["index"].update_called:
            return
        # torchmetrics gathers from every rank (also uneven numbers of clips) on compute
        gathered = {key: metric.compute() for key, metric in self.val_outputs.items()}
        for metric in self.val_outputs.values():
            metric.reset()
        metrics = validation_retrieval(gathered)
        if "val/t2v_R@10" not in metrics:
            # no captioned clip in this validation (e.g. limited batches): NaN, so the monitor never picks it
            metrics.update({f"val/t2v_{k}": float("nan") for k in ("R@1", "R@5", "R@10", "MedR")})
            if self.trainer.is_global_zero:
                log.warning("this validation saw no captioned clip: val/t2v_* are NaN")
        # computed from the outputs gathered over all ranks, so equal on every rank: the reduction changes nothing
        self.log_dict(metrics, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if ("R@10" in k or "MedR" in k)
                             and "chance" not in k)
            log.info("epoch %d step %d: %s", self.current_epoch, self.global_step, shown)
            if metrics["val/v2a_chance_R@10"] > SMOKE_CHANCE:
                log.warning("validation over %d clips only: R@10 by chance is %.2f, so these R@10 values are a smoke "
                            "test, not a measurement (validate on more clips, e.g. a larger trainer.limit_val_batches)",
                            int(metrics["val/num_clips"]), metrics["val/v2a_chance_R@10"])

    def lr_at(self, step: int) -> float:
        """Learning rate at optimizer step ``step`` (docs/vatt.md §6)."""
        s = self.sched_cfg
        if step < s["warmup_steps"]:
            return warmup_cosine(step, s["warmup_steps"], s["warmup_steps"] + 1, self.optim_cfg["lr"], s["final_lr"])
        if s["total_steps"] is None and self._total_steps is None:
            # Asked for lazily, after warmup: calling estimated_stepping_batches in configure_optimizers
            # would set up the train dataloader before a checkpoint's loader state is restored.
            self._total_steps = int(self.trainer.estimated_stepping_batches)
        total = s["total_steps"] or self._total_steps
        return warmup_cosine(step, s["warmup_steps"], total, self.optim_cfg["lr"], s["final_lr"])

    def _is_fsdp(self) -> bool:
        return self._trainer is not None and "FSDP" in type(self.trainer.strategy).__name__

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.Adam(
            params,
            lr=cfg["lr"],
            betas=tuple(cfg["betas"]),
            eps=cfg["eps"],
            weight_decay=cfg["weight_decay"],
            fused=all(p.device.type in ("cpu", "cuda") for p in params) and not self._is_fsdp(),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_at(step) / cfg["lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
