"""One downstream benchmark as both ``make eval`` and fine-tuning read it: listing, split, datasets.

``DownstreamData`` holds what a ``configs/data/<name>.yaml`` says (the dataset's
name and root, lister options, the input modality, the test views) and gives
the listing, one split, and a :class:`~vatt.data.labeled.LabeledClipDataset` per
mode. The fine-tuning DataModule (``vatt.data.finetune``) wraps it with loaders;
``vatt.eval`` uses it directly, without Lightning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..clip import Augment, ClipConfig
from ..labeled import LabeledClipDataset
from . import Item, Listing, Split, import_lister, list_dataset

log = logging.getLogger("vatt.data")


@dataclass
class DownstreamData:
    """A downstream dataset in its official layout under ``root``.

    ``label`` picks which labels a dataset with several kinds provides (the demo:
    colour, shape, motion); ``retrieval_options`` are lister options added for the
    retrieval task (the demo's captions). ``num_windows`` x ``num_crops`` are the
    test views of a video (windows linearly spaced, crops along the long side),
    the one setting of test views for probes, classifiers and fine-tuning tests.
    ``lister`` names a module outside this package whose ``@register`` defines
    ``name``. ``generate_demo`` writes the built-in demo data into ``root`` first.
    """

    name: str
    root: str | None
    modality: str = "video"
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    retrieval_options: dict[str, Any] = field(default_factory=dict)
    lister: str | None = None
    num_windows: int = 4
    num_crops: int = 3
    generate_demo: bool = False
    demo_options: dict[str, Any] = field(default_factory=dict)
    experiment_hint: str = ""

    def __post_init__(self) -> None:
        if self.root is None or str(self.root) in ("", "???"):
            raise ValueError(f"data.root is not set{self.experiment_hint}: point it at your copy of {self.name} in its "
                             f"official layout, e.g. data.root=/data/{self.name}")
        if self.modality not in ("video", "audio"):
            raise ValueError(f"data.modality={self.modality!r}: choose video or audio")
        self._listings: dict[bool, Listing] = {}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> DownstreamData:
        """From a ``data`` config section: its dataset keys (the loader keys are the DataModule's)."""
        import dataclasses

        own = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in own})

    def prepare(self) -> None:
        """Generate the demo data when this config asks for it (a no-op when it is already there)."""
        if self.generate_demo:
            from ..demo import generate_demo

            generate_demo(self.root, **self.demo_options)

    def listing(self, retrieval: bool = False) -> Listing:
        """The dataset's listing (``retrieval``: with the retrieval task's options); read once, logged once."""
        if retrieval not in self._listings:
            if self.lister:
                import_lister(self.lister)
            options = {**self.options, **({"label": self.label} if self.label is not None else {}),
                       **(self.retrieval_options if retrieval else {})}
            listing = list_dataset(self.name, self.root, **options)
            log.info("%s", listing.report())
            self._listings[retrieval] = listing
        return self._listings[retrieval]

    def split_of(self, name: str | None = None) -> Split:
        """Split ``name`` (default: ``data.split``, else the first of the listing)."""
        splits, name = self.listing().splits, name or self.split
        if name is None:
            return splits[0]
        for s in splits:
            if s.name == name:
                return s
        raise ValueError(f"data.split={name!r}: {self.name} has splits {[s.name for s in splits]}")

    def test_split(self, listing: Listing | None = None) -> Split:
        """The split whose test part is the benchmark's test set (``test`` where there is one, else the last)."""
        splits = (listing or self.listing()).splits
        return next((s for s in splits if s.name == "test"), splits[-1])

    def dataset(self, items: list[Item], mode: str, clip: ClipConfig, augment: Augment | None = None,
                modality: str | None = None, num_crops: int | None = None, **extra: Any) -> Any:
        """Clips of ``items`` in ``mode`` (``train``, ``single``, ``views``); ``extra``: e.g. a tokenizer for captions.

        ``modality`` replaces ``data.modality`` where the model decides (a classifier's
        tower); ``num_crops`` replaces ``data.num_crops`` where a task reads one crop
        (audio, retrieval).
        """
        listing = self.listing()
        modality = "image" if listing.modality == "image" else (modality or self.modality)
        return LabeledClipDataset(items, modality, clip, mode, len(listing.classes), listing.multilabel, augment,
                                  self.num_windows, self.num_crops if num_crops is None else num_crops, **extra)

