"""AudioSet (Gemmeke et al., 2017): 10-second YouTube segments with multiple labels out of 527.

Official release (https://research.google.com/audioset/download.html):

- ``class_labels_indices.csv``: header ``index,mid,display_name``, one row per class
  (``0,/m/09x0r,"Speech"``);
- ``balanced_train_segments.csv`` (~22k segments), ``unbalanced_train_segments.csv``
  (~2M) and ``eval_segments.csv`` (~20k): three ``#`` lines, then rows
  ``YTID, start_seconds, end_seconds, "mid1,mid2,..."`` (parsed by
  :func:`vatt.data.layouts.read_audioset_segments`).

Only the lists are released; the media are downloaded from YouTube by the user,
as video or audio-only files ``<YTID>_<start>.<ext>`` anywhere under the root,
with the start written in any of the forms :func:`vatt.data.layouts.audioset_file_stems`
accepts (the same names ``python -m vatt.data.prepare audioset`` accepts).

One split ``test``: the chosen train list as train, ``eval_segments.csv`` as test.
Labels are sorted tuples of class indices (``Listing.multilabel`` is True).
"""

from __future__ import annotations

from pathlib import Path

from ..layouts import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    MalformedRow,
    audioset_file_stems,
    index_media_folder,
    read_audioset_segments,
    read_csv,
    require_dir,
    require_file,
)
from . import Item, Listing, Split, register

NAME = "audioset"
# .aac: raw ADTS audio, what `yt-dlp -x --audio-format aac` writes
EXTS = VIDEO_EXTS + AUDIO_EXTS + ("aac",)
TRAIN_SETS = {"balanced": "balanced_train_segments.csv", "unbalanced": "unbalanced_train_segments.csv"}
LAYOUT = (
    "{root}/class_labels_indices.csv, {root}/balanced_train_segments.csv (or unbalanced_train_segments.csv) and "
    "{root}/eval_segments.csv (from https://research.google.com/audioset/download.html), and the downloaded "
    "segments <YTID>_<start_seconds>.<mp4|mkv|webm|avi|mov|wav|flac|ogg|mp3|m4a|aac> anywhere under {root}"
)


def read_class_labels(path: Path, skipped: list[str]) -> tuple[list[str], dict[str, int]]:
    """Display names (index = class id) and mid -> class id from ``class_labels_indices.csv``."""
    rows = read_csv(path)
    header = [h.strip() for h in rows[0][1]] if rows else []
    if header[:3] != ["index", "mid", "display_name"]:
        raise ValueError(
            f"{NAME}: {path} starts with {','.join(header)!r}, not the header index,mid,display_name; "
            "download class_labels_indices.csv again from the AudioSet site"
        )
    names: dict[int, str] = {}
    mids: dict[str, int] = {}
    for lineno, row in rows[1:]:
        if len(row) < 3 or not row[0].strip().isdigit() or not row[1].strip():
            skipped.append(f"{path.name} line {lineno}: expected 'index,mid,display_name', got {','.join(row)!r}")
            continue
        index, mid = int(row[0]), row[1].strip()
        if index in names or mid in mids:
            raise ValueError(f"{NAME}: {path} line {lineno}: index {index} or mid {mid} is listed twice; "
                             "download class_labels_indices.csv again")
        names[index] = row[2].strip()
        mids[mid] = index
    if sorted(names) != list(range(len(names))) or not names:
        raise ValueError(f"{NAME}: {path}: the class indices must run 0, 1, ..., N-1 (found {len(names)} classes "
                         f"up to {max(names, default=None)}); download class_labels_indices.csv again")
    return [names[i] for i in range(len(names))], mids


@register("audioset", options=("train_set",))
def list_audioset(root: str | Path, train_set: str = "balanced") -> Listing:
    """List AudioSet: ``train_set`` (``"balanced"`` or ``"unbalanced"``) as train, the eval set as test.

    A label mid that is not in ``class_labels_indices.csv`` is dropped from its row
    and reported in ``skipped``; a row left with no known label is left out.
    """
    if train_set not in TRAIN_SETS:
        raise ValueError(f"{NAME}: train_set must be one of {', '.join(TRAIN_SETS)}, got {train_set!r}")
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    layout = LAYOUT.format(root=root)
    skipped: list[str] = []
    missing: list[str] = []
    classes, mids = read_class_labels(require_file(root / "class_labels_indices.csv", NAME, layout), skipped)
    train_csv = require_file(root / TRAIN_SETS[train_set], NAME, layout)
    eval_csv = require_file(root / "eval_segments.csv", NAME, layout)
    files = index_media_folder(root, EXTS)

    def items(csv_path: Path) -> tuple[list[Item], int]:
        """The items of ``csv_path`` and how many were left out as missing."""
        out, lost = [], 0
        for seg in read_audioset_segments(csv_path):
            where = f"{csv_path.name} line {seg.line}"
            if isinstance(seg, MalformedRow):
                skipped.append(f"{where}: {seg.reason}, got {seg.text!r}")
                continue
            unknown = [m for m in seg.labels if m not in mids]
            if unknown:
                skipped.append(f"{where}: label {', '.join(unknown)} is not in class_labels_indices.csv, dropped")
            labels = tuple(sorted({mids[m] for m in seg.labels if m in mids}))
            if not labels:
                skipped.append(f"{where}: no known label, left out")
                continue
            stems = audioset_file_stems(seg.ytid, seg.start_text)
            path = next((files[s][0] for s in stems if s in files), None)
            if path is None:
                missing.append(f"{where}: {stems[0]}.*")
                lost += 1
                continue
            out.append(Item(path, labels, id=seg.clip_id))
        return out, lost

    (train, missing_train), (test, missing_test) = items(train_csv), items(eval_csv)
    split = Split("test", train, test, missing_train, missing_test)
    return Listing(NAME, classes, [split], multilabel=True, missing=missing, skipped=skipped)
