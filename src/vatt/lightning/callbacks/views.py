"""Views of what pretraining has learned, during the run: downstream scores and pictures of the embeddings.

- ``DemoProbe``: a linear probe of the demo labels on the validation clips, logged as
  ``probe/*`` (the evaluation itself is ``vatt.tasks.demo_probe``);
- ``EmbeddingViews``: the validation clips' embeddings in TensorBoard's projector, a
  2-D map of them and text -> video retrieval examples (TensorBoard only: without a
  TensorBoard logger one line says so and nothing is computed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from vatt.lightning.callbacks.reporting import tensorboards, without_tensorboard
from vatt.lightning.pretrain import VAL_EMBEDDINGS, VAL_KEYS, unique_clips

# the probe's lines go with the pretraining module's (its validation metrics)
probe_log = logging.getLogger("vatt.lightning.pretrain")


class DemoProbe(Callback):
    """A linear probe of the demo labels on the validation clips, every ``every_n_validations`` validations.

    Downstream progress during pretraining: ``vatt.tasks.demo_probe`` scores a
    logistic-regression probe of each label on the frozen pooled features of the
    validation clips (``modality``) in two folds, and this logs the mean top-1 as
    ``probe/<label>_top1`` (plus ``probe/<label>_chance``) for every label. Runs on
    rank 0; the other ranks wait. Data that is not demo-like (no ``root``, or a folder
    the demo lister cannot read) switches it off with one message.
    """

    OFF = 10**9  # ``every`` of a probe that is switched off: it is never due again

    def __init__(self, root: str | Path | None, labels: tuple[str, ...] | list[str] = ("colour", "shape", "motion"),
                 modality: str = "video", every_n_validations: int = 5, batch_size: int = 32) -> None:
        super().__init__()
        if every_n_validations < 1:
            raise ValueError(f"every_n_validations={every_n_validations}: give a positive number")
        self.root, self.labels, self.modality = (Path(root) if root else None), list(labels), modality
        self.every, self.batch_size = every_n_validations, batch_size
        self._seen = 0

    def probe(self, model: Any, clip: Any) -> dict[str, float]:
        """The ``probe/*`` metrics of ``model`` (a ``VATT``) on clips of geometry ``clip`` (a ``ClipConfig``)."""
        from vatt.tasks.demo_probe import demo_probe  # the downstream code loads only when a probe runs

        scores = demo_probe(model, self.root, clip, self.labels, self.modality, self.batch_size)
        return {f"probe/{k}": v for k, v in scores.items()}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._seen += 1
        if self._seen % self.every:
            return
        if self.root is None:  # e.g. data.sources mixes several folders: no single demo folder to probe
            probe_log.info("demo probe switched off: data.path names no demo folder (callbacks.probe.root)")
            self.every = self.OFF
            return
        if trainer.is_global_zero:
            self._probe_and_log(trainer, pl_module)
        trainer.strategy.barrier("demo_probe")

    def _probe_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from vatt.data.clip import ClipConfig

        clip = ClipConfig(**{k: v for k, v in pl_module.hparams["input"].items()
                             if k in ("num_frames", "fps", "image_size", "sample_rate", "max_words")})
        was_training = pl_module.model.training
        try:
            metrics = self.probe(pl_module.model.eval(), clip)
        except (FileNotFoundError, ValueError) as e:  # not demo-like data: say so once and stop probing
            probe_log.warning("demo probe switched off: %s", e)
            self.every, metrics = self.OFF, {}
        finally:
            pl_module.model.train(was_training)
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
        shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("_top1"))
        probe_log.info("step %d: %s", trainer.global_step, shown)


class EmbeddingViews(Callback):
    """Pictures of what was learned, at the end of every ``every_n_validations``-th validation (pretraining).

    Into each TensorBoard logger (with several loggers, the TensorBoard ones; without
    any, one line at the start says the views need ``logger=tensorboard`` and they are
    skipped):

    - the **embedding projector**: every embedding the module collects of the
      validation clips (``vatt.lightning.pretrain.VAL_EMBEDDINGS``: video and audio in
      the video-audio space, video and caption in the video-text space), with one
      metadata row per clip (file, first caption, the manifest's labels);
    - a **2-D map** of the video embeddings (t-SNE with scikit-learn, else PCA),
      coloured by the first label (or the first caption word), as an image;
    - **retrieval examples**: for a few captions, the top-5 clips retrieved in the
      video-text space as thumbnails (middle frame), the right one framed in green.

    Needs the module's ``val_outputs`` (``VATTPretrainModule``); every rank takes
    part in gathering them, rank 0 writes. Each clip is shown once
    (``unique_clips``); ``max_points`` caps the clips shown.
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
        self._no_board: bool | None = None  # decided once, at the first set-up with a pretraining module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._no_board is None and self._usable(pl_module):
            self._no_board = without_tensorboard(
                trainer, "embedding views (projector embeddings, embedding map and retrieval example images)")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._due = (not trainer.sanity_checking and self._usable(pl_module) and not self._no_board
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
        out = unique_clips(gathered, self.max_points)
        meta, header = self._metadata(trainer, out["index"].long().tolist())
        step = trainer.global_step
        for lg in tensorboards(trainer):
            writer = lg.experiment
            self._project(writer, out, meta, header, step)
            writer.add_figure("val/embedding_map", self._map(out["video_va"].float(), meta, header), step)
            if out["has_text"].bool().any() and self._thumbs:
                writer.add_figure("val/retrieval_examples", self._grid(out, meta, header), step)
            writer.flush()

    @staticmethod
    def _usable(pl_module: L.LightningModule) -> bool:
        outputs = getattr(pl_module, "val_outputs", None)
        return outputs is not None and set(VAL_KEYS) <= set(outputs)

    @staticmethod
    def _project(writer: Any, out: dict[str, torch.Tensor], meta: list[list[str]], header: list[str],
                 step: int) -> None:
        """Every embedding the module collects into the projector as ``val_<key>``, over the clips it is defined for."""
        for key, defined_by in VAL_EMBEDDINGS.items():
            if defined_by is None:
                writer.add_embedding(out[key].float(), metadata=meta, metadata_header=header, global_step=step,
                                     tag=f"val_{key}")
                continue
            rows = out[defined_by].bool()
            if rows.any():
                writer.add_embedding(out[key][rows].float(), metadata=[m for m, r in zip(meta, rows) if r],
                                     metadata_header=header, global_step=step, tag=f"val_{key}")

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
