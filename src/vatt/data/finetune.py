"""The DataModule of fine-tuning runs on a downstream benchmark (``make train experiment=finetune_<dataset>``)."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import Dataset

from .clip import Augment, ClipConfig
from .downstream import Listing, Split, list_dataset
from .labeled import LabeledClipDataset
from .loading import DataLoader, default_num_workers

log = logging.getLogger(__name__)


class DownstreamDataModule(L.LightningDataModule):
    """A downstream benchmark for fine-tuning (``make train experiment=finetune_<dataset>``).

    ``name``/``root``/``options`` pick a listing (``vatt.data.downstream``); ``split``
    one of its official splits (default: the first). Training clips are augmented
    (``train`` mode), validation uses the centred view of each test video (cheap,
    clip-level), and testing every view (``num_windows`` x ``num_crops``), whose logits
    the module averages per video. ``train.py`` sizes the classifier from
    ``model_kwargs()``.
    """

    def __init__(
        self,
        name: str,
        root: str | None,
        modality: str = "video",
        split: str | None = None,
        options: dict | None = None,
        clip: dict | ClipConfig | None = None,
        augment: dict | Augment | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        global_batch_size: int | None = None,
        num_workers: int | None = None,
        num_windows: int = 4,
        num_crops: int = 3,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        generate_demo: bool = False,
        demo_options: dict | None = None,
        label: str | None = None,
        retrieval_options: dict | None = None,
        experiment_hint: str = "",
    ) -> None:
        super().__init__()
        del label, retrieval_options, global_batch_size  # feed `options` / the retrieval task / train.py
        if root is None or str(root) in ("", "???"):
            raise ValueError(f"data.root is not set{experiment_hint}: point it at your copy of {name} in its official "
                             f"layout, e.g. `make train experiment=finetune_{name} data.root=/data/{name} pretrained=PATH`")
        self.name, self.root, self.modality, self.split_name = name, root, modality, split
        self.options = dict(options or {})
        self.clip, self.augment = ClipConfig.of(clip), Augment.of(augment)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers = default_num_workers(num_workers)
        self.num_windows, self.num_crops, self.pin_memory = num_windows, num_crops, pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.generate_demo, self.demo_options = generate_demo, dict(demo_options or {})
        self._listing: Listing | None = None
        self.datasets: dict[str, LabeledClipDataset] = {}

    def prepare_data(self) -> None:
        if self.generate_demo:
            from .demo import generate_demo

            generate_demo(self.root, **self.demo_options)

    @property
    def listing(self) -> Listing:
        if self._listing is None:
            self._listing = list_dataset(self.name, self.root, **self.options)
            log.info("%s", self._listing.report())
        return self._listing

    @property
    def split(self) -> Split:
        splits = self.listing.splits
        if self.split_name is None:
            return splits[0]
        for s in splits:
            if s.name == self.split_name:
                return s
        raise ValueError(f"data.split={self.split_name!r}: {self.name} has splits {[s.name for s in splits]}")

    @property
    def input_modality(self) -> str:
        return "image" if self.listing.modality == "image" else self.modality

    def model_kwargs(self) -> dict:
        """What the fine-tuning module needs to know about the data: classes and the input it reads."""
        return {"num_classes": len(self.listing.classes), "multilabel": self.listing.multilabel,
                "modality": "audio" if self.modality == "audio" else "video"}

    def val_has_captions(self) -> None:
        return None

    def vocabulary(self) -> None:
        """Downstream sets have classes, not a caption vocabulary."""
        return None

    def test_record(self, metrics: dict[str, float]) -> dict[str, float]:
        """What ``metrics.json`` holds after testing: the test metrics and the counts of videos used and skipped."""
        out = {k: v for k, v in sorted(metrics.items()) if k.startswith("test/")}
        out["num_train"] = len(self.split.train)
        out["num_test"] = int(metrics.get("test/num_videos", len(self.split.test)))
        out["num_skipped"] = int(metrics.get("data/test_skipped", 0))
        return out

    def _dataset(self, items: list, mode: str) -> LabeledClipDataset:
        return LabeledClipDataset(items, self.input_modality, self.clip, mode, len(self.listing.classes),
                                  self.listing.multilabel, self.augment, self.num_windows, self.num_crops)

    def setup(self, stage: str | None = None) -> None:
        split = self.split
        if not self.datasets:
            self.datasets = {"train": self._dataset(split.train, "train"), "val": self._dataset(split.test, "single"),
                             "test": self._dataset(split.test, "views")}

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=self.num_workers,
                          pin_memory=self.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.persistent_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], self.val_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        # all views of a video: keep the batch small, it holds num_windows x num_crops clips per video
        return self._loader(self.datasets["test"], max(1, self.val_batch_size // (self.num_windows * self.num_crops)),
                            False)
