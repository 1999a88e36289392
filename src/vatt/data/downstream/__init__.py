"""Downstream benchmark datasets: listers for the official on-disk layouts a user downloads.

``list_dataset(name, root, **options)`` reads a dataset's index files (the split
lists, CSVs or JSON of its official release) and returns a :class:`Listing`: the
class names and, per split (UCF101/HMDB51: ``split1..split3``; ESC-50:
``fold1..fold5``; the rest: ``test``), the train and test :class:`Item` s with
their labels (or captions for retrieval sets). Nothing is decoded here; reading
the media is ``vatt.data.media.read_clip``'s job.

What the listers never crash on, and where it goes instead:

- ``Listing.missing``: one line per index-file line whose media file is not on
  disk, ``"<index file> line <n>: <path>"``: the file looked for, relative to the
  root or (UCF101, HMDB51) to the video folder, or ``<stem>.*`` where files are
  found by name anywhere under the root (Kinetics, AudioSet). YouCook2's JSON has
  no useful lines and says ``entry <video_id>`` instead. Such items are left out
  of the splits. Each :class:`Split` counts its own as ``missing_train`` /
  ``missing_test`` (per split and part: a UCF101 video absent from disk counts in
  every list that names it).
- ``Listing.skipped``: one line per index-file line that was left out or changed
  for another reason (malformed, an unknown class, an AudioSet label mid that is
  not in ``class_labels_indices.csv``), ``"<index file> line <n>: <reason>"``
  (ImageNet folders have no index file: ``"<folder>: <reason>"``).

:func:`list_dataset` logs a warning with the counts and three examples of each.
A missing root folder or index file is a ``FileNotFoundError`` that names the path
and describes the expected layout; an index file that cannot define the classes
(e.g. class numbers with gaps) is a ``ValueError`` naming the file and the fix.

One module per family: :mod:`.ucf101`, :mod:`.hmdb51`, :mod:`.kinetics`,
:mod:`.mit`, :mod:`.esc50`, :mod:`.audioset`, :mod:`.msrvtt`, :mod:`.youcook2`,
:mod:`.imagenet`, :mod:`.demo`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One example: a media file, its label(s) or caption, and optionally a segment inside it."""

    path: Path  # the media file (absolute or root-joined)
    label: int | tuple[int, ...] | None = None  # class index; sorted tuple for multi-label; None for retrieval
    caption: str | None = None  # retrieval text (MSR-VTT, YouCook2, demo retrieval)
    start: float | None = None  # segment inside the file in seconds (YouCook2); None = whole file
    end: float | None = None
    id: str = ""  # stable identifier (e.g. relative path, or "<video>_<segment index>")


@dataclass
class Split:
    """One train/test partition: ``split1..split3`` (UCF101/HMDB51), ``fold1..fold5`` (ESC-50), else ``test``."""

    name: str
    train: list[Item]
    test: list[Item]
    missing_train: int = 0  # index entries of the train part left out because their media file is not on disk
    missing_test: int = 0  # the same for the test part: listed in the official index, absent on disk


@dataclass
class Listing:
    """Everything a lister found: classes (index = label id), splits and what it had to leave out."""

    name: str  # registry name, e.g. "ucf101"
    classes: list[str]  # index = label id; [] for retrieval-only sets
    splits: list[Split]
    multilabel: bool = False
    modality: str = "video"  # "video" | "audio" | "image"
    missing: list[str] = field(default_factory=list)  # "<index file> line <n>: <path>" per absent file
    skipped: list[str] = field(default_factory=list)  # "<index file> line <n>: <reason>" per other problem

    def report(self) -> str:
        """One line: split and class counts, sizes of the first split, and what is missing or skipped.

        e.g. ``ucf101: 3 splits, 101 classes, 9537 train / 3783 test (split1); 2 listed files
        missing, e.g. trainlist01.txt line 4: ApplyEyeMakeup/v_x.avi``.
        """
        n = len(self.splits)
        parts = [f"{self.name}: {n} split{'s' if n != 1 else ''}"]
        parts.append(f"{len(self.classes)} classes" if self.classes else "retrieval (no classes)")
        text = ", ".join(parts)
        if self.splits:
            first = self.splits[0]
            text += f", {len(first.train)} train / {len(first.test)} test ({first.name})"
        if self.missing:
            text += f"; {_count(len(self.missing), 'listed file')} missing, e.g. {', '.join(self.missing[:3])}"
        if self.skipped:
            text += f"; {_count(len(self.skipped), 'index line')} skipped, e.g. {', '.join(self.skipped[:3])}"
        return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


# name -> (lister, the keyword options it accepts)
_LISTERS: dict[str, tuple[Callable[..., Listing], tuple[str, ...]]] = {}


def register(name: str, options: tuple[str, ...] = ()) -> Callable[[Callable[..., Listing]], Callable[..., Listing]]:
    """Decorator: make ``lister(root, **options) -> Listing`` the dataset ``name`` (``data.name=<name>``).

    A dataset is one lister module plus one config file (README "How to extend"):
    the module calls ``@register("my_set")`` on its lister; ``configs/data/my_set.yaml``
    names it and, for a module outside this package, says where it lives
    (``lister: my_package.my_set``, imported before listing).
    """
    def add(lister: Callable[..., Listing]) -> Callable[..., Listing]:
        if name in _LISTERS and _LISTERS[name][0] is not lister:
            raise ValueError(f"dataset {name!r} is registered twice ({_LISTERS[name][0].__module__} and "
                             f"{lister.__module__}); give one of them another name")
        _LISTERS[name] = (lister, tuple(options))
        return lister

    return add


def registered() -> tuple[str, ...]:
    """The names ``list_dataset`` knows: the built-in datasets, then any registered since."""
    return tuple(_LISTERS)


def import_lister(module: str) -> None:
    """Import ``module`` (a dotted name) so that its ``@register`` calls run; the error names the module."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"data.lister={module!r} cannot be imported ({e}); give the dotted name of a module on "
                         "the Python path whose lister calls @vatt.data.downstream.register") from e


# The family modules import the types and `register` above from this package, so they are imported after them.
from . import (  # noqa: E402
    audioset,
    demo,
    esc50,
    hmdb51,
    imagenet,
    kinetics,
    mit,
    msrvtt,
    ucf101,
    youcook2,
)
from .audioset import list_audioset  # noqa: E402
from .demo import list_demo  # noqa: E402
from .esc50 import list_esc50  # noqa: E402
from .hmdb51 import list_hmdb51  # noqa: E402
from .imagenet import list_imagenet  # noqa: E402
from .kinetics import list_kinetics  # noqa: E402
from .mit import list_mit  # noqa: E402
from .msrvtt import list_msrvtt  # noqa: E402
from .ucf101 import list_ucf101  # noqa: E402
from .youcook2 import list_youcook2  # noqa: E402

DATASETS: tuple[str, ...] = registered()  # the built-in ones


def list_dataset(name: str, root: str | Path, **options: Any) -> Listing:
    """List dataset ``name`` (one of :func:`registered`) from its official layout under ``root``.

    Options: ``audioset``: ``train_set="balanced" | "unbalanced"``; ``demo``:
    ``label="colour"`` (which labels key) and ``task="classify" | "retrieval"``.
    Raises ``ValueError`` for an unknown name or option, ``FileNotFoundError`` for
    a missing root or index file. Logs a warning when listed files are missing or
    index lines were skipped.
    """
    if name not in _LISTERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(registered()))} (a dataset of your own: "
                         "@vatt.data.downstream.register in a module named by data.lister)")
    lister, allowed = _LISTERS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; {takes}")
    listing = lister(root, **options)
    if listing.missing:
        log.warning("%s: %d listed files are missing under %s and left out, e.g. %s",
                    name, len(listing.missing), root, listing.missing[:3])
    if listing.skipped:
        log.warning("%s: %d index lines skipped or changed, e.g. %s", name, len(listing.skipped), listing.skipped[:3])
    return listing


__all__ = [
    "DATASETS",
    "DownstreamData",
    "import_lister",
    "register",
    "registered",
    "Item",
    "Listing",
    "Split",
    "audioset",
    "demo",
    "esc50",
    "hmdb51",
    "imagenet",
    "kinetics",
    "list_audioset",
    "list_dataset",
    "list_demo",
    "list_esc50",
    "list_hmdb51",
    "list_imagenet",
    "list_kinetics",
    "list_mit",
    "list_msrvtt",
    "list_ucf101",
    "list_youcook2",
    "mit",
    "msrvtt",
    "ucf101",
    "youcook2",
]

from .data import DownstreamData  # noqa: E402
