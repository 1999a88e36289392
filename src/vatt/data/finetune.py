"""The DataModule of fine-tuning runs on a downstream benchmark (``make train experiment=finetune_<dataset>``)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset

from .clip import Augment, ClipConfig
from .downstream import DownstreamData, Listing, Split
from .loading import DataLoader, default_num_workers


class DownstreamDataModule(L.LightningDataModule):
    """A downstream benchmark for fine-tuning: a :class:`DownstreamData` with loaders.

    The dataset keys (``name``, ``root``, ``modality``, ``split``, ``options``,
    ``label``, ``num_windows``, ``num_crops``, ...) are :class:`DownstreamData`'s,
    shared with ``make eval``. Training clips are augmented (``train`` mode),
    validation uses the centred view of each test video (cheap, clip-level), and
    testing every view (``num_windows`` x ``num_crops``), whose logits the module
    averages per video. ``model_kwargs()`` sizes the classifier. ``global_batch_size``
    (a total over devices) is what ``vatt.run_setup`` derives ``batch_size`` from.
    """

    KWARGS_TO = DownstreamData  # **data: its settings (vatt.config checks keys against both)

    def __init__(
        self,
        name: str,
        root: str | None,
        clip: dict | ClipConfig | None = None,
        augment: dict | Augment | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        global_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        **data: Any,
    ) -> None:
        super().__init__()
        self.data = DownstreamData(name, root, **data)
        self.clip, self.augment = ClipConfig.of(clip), Augment.of(augment)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.global_batch_size = global_batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        self.data.prepare()

    @property
    def listing(self) -> Listing:
        return self.data.listing()

    @property
    def split(self) -> Split:
        return self.data.split_of()

    def model_kwargs(self) -> dict:
        """What the fine-tuning module needs to know about the data: classes and the input it reads."""
        return {"num_classes": len(self.listing.classes), "multilabel": self.listing.multilabel,
                "modality": self.data.modality}

    def val_has_captions(self) -> None:
        return None

    def vocabulary(self) -> None:
        """Downstream sets have classes, not a caption vocabulary."""
        return None

    def test_record(self, metrics: dict[str, float], tested_index: list[int] | None = None,
                    checkpoint: str | None = None, pretrained: str | None = None) -> dict[str, Any]:
        """What ``metrics.json`` holds after testing: the test metrics, the counts of videos used and skipped, and
        the ``protocol`` object (``vatt.protocol``; ``tested_index``: the test items scored, ``checkpoint``: the
        weights tested, ``pretrained``: what fine-tuning started from)."""
        from vatt import protocol

        out: dict[str, Any] = {k: v for k, v in sorted(metrics.items()) if k.startswith("test/")}
        out["num_train"] = len(self.split.train)
        out["num_test"] = int(metrics.get("test/num_videos", len(self.split.test)))
        out["num_skipped"] = int(metrics.get("data/test_skipped", 0))
        split, listing, test = self.split, self.listing, self.datasets.get("test")
        scored = [split.test[i].id for i in tested_index] if tested_index is not None else [i.id for i in split.test]
        parts = [protocol.Part(split.name, "test", len(split.test), split.missing_test, scored)]
        views = protocol.view_record(test.num_windows if test else self.data.num_windows,
                                     test.num_crops if test else self.data.num_crops, "logits averaged")
        out["protocol"] = protocol.build("finetune", listing.name, parts, [s.name for s in listing.splits], views,
                                         "logits", "fine-tuned", checkpoint,
                                         clip={k: vars(self.clip)[k] for k in protocol.CLIP_KEYS},
                                         random_init=None if pretrained else "fine-tuned from scratch, pretrained=null")
        out["protocol"]["initialised_from"] = pretrained
        return out

    def setup(self, stage: str | None = None) -> None:
        split = self.split
        if not self.datasets:
            self.datasets = {"train": self.data.dataset(split.train, "train", self.clip, self.augment),
                             "val": self.data.dataset(split.test, "single", self.clip),
                             "test": self.data.dataset(split.test, "views", self.clip)}

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
        return self._loader(self.datasets["test"], max(1, self.val_batch_size // self.datasets["test"].num_views), False)
