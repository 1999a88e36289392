"""Fine-tuning a pretrained VATT tower on a labelled benchmark (paper §4; docs/vatt.md §7).

``VATTFinetuneModule`` = the pretrained video (or audio) Transformer + dropout +
a linear head, trained with the authors' defaults (their ``Finetune`` experiment
config): SGD with momentum 0.9, lr 0.005 with a 2.5k-step linear warmup then a
cosine to 0, gradient clipping at norm 0.75 on the backbone only, label smoothing
0.1, Inception-style crops + flip + colour (the data module), mixup for AudioSet
(alpha 5), and for multi-label sets a sigmoid loss with the head's bias at
-log(C - 1). DropToken (``droptoken``) acts in training only.

Validation scores the centred view of each test video (clip-level, cheap);
``test`` scores every view (4 windows x 3 crops for video, 4 windows for audio),
averages the **logits** per video and reports video-level top-1/top-5, or mAP, AUC
and d' for multi-label sets (``vatt.metrics``).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics.aggregation import CatMetric

from vatt.metrics import average_views, classification_metrics
from vatt.models import ClassifierHead, create_model
from vatt.errors import UserError
from vatt.pretrained import load_classifier, load_pretrained, weights_kind, weights_sha256
from vatt.schedules import warmup_cosine

from .hparams import compile_options, input_geometry
from .sums import log_epoch_sums

log = logging.getLogger(__name__)

OUTPUT_KEYS = ("logits", "labels", "valid", "index")


class VATTFinetuneModule(L.LightningModule):
    """A VATT tower + classifier head; see the module docstring.

    ``pretrained``: a pretraining ``.ckpt`` or an export; null builds ``name`` with
    random weights (the from-scratch baseline). ``input`` is the clip geometry
    (the position tables are resized to it). ``num_classes``, ``multilabel`` and
    ``modality`` come from the data module.
    """

    summary_metrics: tuple[str, ...] = ()  # the monitored top-1 is the run's summary

    def __init__(
        self,
        num_classes: int,
        multilabel: bool = False,
        modality: str = "video",
        pretrained: str | None = None,
        name: str = "bbs",
        droptoken: float = 0.0,
        input: dict | None = None,
        backbone: dict | None = None,
        head_dropout: float | None = None,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        clip_backbone_grad_norm: float | None = 0.75,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._epoch_skipped: torch.Tensor | int = 0  # samples the loader skipped in this training epoch (this rank)
        self.tested_index: list[int] | None = None  # indices of the test items scored by the last test
        if modality not in ("video", "audio"):
            raise ValueError(f"model.modality={modality!r}: fine-tune the video or the audio tower")
        geometry = {k: v for k, v in input_geometry(input).items() if k in ("num_frames", "image_size", "audio_samples")}
        extra = {k: v for k, v in (backbone or {}).items() if k in ("dropout", "attn_dropout")}
        if head_dropout is None:
            head_dropout = 0.5 if modality == "video" else 0.0
        classifier = pretrained and weights_kind(pretrained) == "classifier"
        if classifier:  # a fine-tuned classifier (e.g. converted from the authors'): its tower and its head
            tuned = load_classifier(pretrained, droptoken=droptoken, **geometry, **extra)
            if (tuned.modality, tuned.num_classes) != (modality, num_classes):
                raise UserError(f"pretrained={pretrained} is a {tuned.modality} classifier with {tuned.num_classes} "
                                f"classes; this data has {num_classes} {modality} classes")
            self.backbone = tuned.tower
        else:
            vatt = (load_pretrained(pretrained, droptoken=droptoken, **geometry, **extra) if pretrained
                    else create_model(name, droptoken=droptoken, **geometry, **extra))
            self.backbone = vatt.video if modality == "video" else vatt.audio
        self.backbone.train()
        if rank_zero_only.rank == 0 and pretrained:
            # load_pretrained is strict: a missing or unexpected tensor would have raised, naming it
            log.info("fine-tuning the %s tower of %s (sha256 %s): its %d tensors loaded, none missing or unexpected "
                     "(the other towers and the FAC heads are not used)", modality, pretrained,
                     weights_sha256(pretrained)[:12], len(self.backbone.state_dict()))
        elif rank_zero_only.rank == 0:
            log.info("fine-tuning the %s tower of a randomly initialised %s model (pretrained=null)", modality, name)
        prior = 1.0 / num_classes if multilabel else None
        self.head = ClassifierHead(self.backbone.embed_dim, num_classes, head_dropout, prior)
        if classifier:
            self.head.linear.load_state_dict(tuned.head.linear.state_dict())
        self.modality, self.num_classes, self.multilabel = modality, num_classes, multilabel
        self.label_smoothing, self.mixup_alpha = label_smoothing, mixup_alpha
        self.optim_cfg = {"lr": 0.005, "momentum": 0.9, "weight_decay": 0.0, **dict(optimizer or {})}
        self.sched_cfg = {"warmup_steps": 2500, "total_steps": None, **dict(scheduler or {})}
        self.clip_backbone_grad_norm = clip_backbone_grad_norm
        self.compile = compile
        self.outputs = torch.nn.ModuleDict(
            {stage: torch.nn.ModuleDict({k: CatMetric(nan_strategy="disable") for k in OUTPUT_KEYS})
             for stage in ("val", "test")}
        )

    def configure_model(self) -> None:
        options = compile_options(self.compile)
        if options is not None and not isinstance(self.backbone.transformer, torch._dynamo.eval_frame.OptimizedModule):
            self.backbone.transformer.compile(**options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, 3, T, H, W]`` / ``[B, S]`` -> logits ``[B, C]``."""
        return self.head(self.backbone(x))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), target.float())
        if target.ndim == 2:  # mixed-up soft targets
            smooth = target * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
            return torch.sum(-smooth * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[self.modality], batch["label"]
        if self.mixup_alpha > 0:
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            perm = torch.randperm(x.shape[0], device=x.device)
            x = lam * x + (1 - lam) * x[perm]
            onehot = y.float() if self.multilabel else F.one_hot(y, self.num_classes).float()
            y = lam * onehot + (1 - lam) * onehot[perm]
        loss = self.loss(self(x), y)
        self.last_loss = loss.detach()  # NonFiniteGuard checks it before the optimizer step
        bs = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        if "skipped" in batch:  # summed over the ranks in on_train_epoch_end (vatt.lightning.sums)
            self._epoch_skipped = batch["skipped"].sum() + self._epoch_skipped
        return loss

    def on_train_epoch_end(self) -> None:
        log_epoch_sums(self, {"data/skipped": self._epoch_skipped})
        self._epoch_skipped = 0

    def _collect(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        x = batch[self.modality]
        if stage == "test":  # [B, V, ...]: every view through the model, logits averaged per video
            b, v = x.shape[:2]
            logits = average_views(self(x.reshape(b * v, *x.shape[2:])).float(), v)
        else:
            logits = self(x).float()
        labels = batch["label"].float() if self.multilabel else batch["label"].float()[:, None]
        index = batch["index"].float()[:, None]  # exact below 2**24 items
        for key, value in (("logits", logits), ("labels", labels), ("valid", batch["valid"].float()[:, None]),
                           ("index", index)):
            self.outputs[stage][key].update(value)
        if stage == "val" and not self.multilabel:
            self.log("val/loss", F.cross_entropy(logits, batch["label"]), batch_size=x.shape[0], sync_dist=True)
        self.log(f"data/{stage}_skipped", batch["skipped"].sum().float(), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True, batch_size=x.shape[0])

    def _score(self, stage: str) -> None:
        store = self.outputs[stage]
        if not store["logits"].update_called:
            return
        out = {k: m.compute() for k, m in store.items()}
        for m in store.values():
            m.reset()
        labels = out["labels"] if self.multilabel else out["labels"][:, 0]
        metrics = classification_metrics(out["logits"], labels, out["valid"][:, 0], self.multilabel)
        if stage == "test":  # which test items were scored, for the protocol record of metrics.json
            self.tested_index = sorted({int(i) for i in out["index"][out["valid"][:, 0].bool(), 0].tolist()})
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect("test", batch)

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        # the authors clip the backbone's gradient norm (0.75) and leave the classifier's alone
        if self.clip_backbone_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in self.backbone.parameters() if p.grad is not None],
                                           self.clip_backbone_grad_norm)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg, s = self.optim_cfg, self.sched_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])

        def factor(step: int) -> float:
            if step >= s["warmup_steps"] and not s["total_steps"]:
                # asked only after warmup, once the trainer knows its loaders (as in pretraining)
                s["total_steps"] = int(self.trainer.estimated_stepping_batches)
            return warmup_cosine(step, s["warmup_steps"], s["total_steps"])  # warmup does not read total_steps

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
