"""Kinetics-400/600/700 (Kay et al., 2017; Carreira et al., 2018, 2019): YouTube clips of human actions.

Official annotations (DeepMind's release, mirrored with the videos by the CVDF,
https://github.com/cvdfoundation/kinetics-dataset): ``train.csv``,
``validate.csv`` and ``test.csv`` with the header
``label,youtube_id,time_start,time_end,split`` (Kinetics-600/700 add ``is_cc``).
``test.csv`` has no labels and is not read. A clip is a file
``<youtube_id>_<time_start:06d>_<time_end:06d>.<mp4|mkv|webm|avi>``, the name the
official download scripts (ActivityNet's crawler, the CVDF tarballs) give it,
usually in ``<root>/train/<label>/`` or all in one folder: files are found by
name anywhere under the root.

One split ``test``: ``train.csv`` as train, ``validate.csv`` as test (the
validation set is the benchmark's test set, as in the VATT paper).
Classes are the sorted labels of ``train.csv``.
"""

from __future__ import annotations

import functools

import math
from pathlib import Path

from ..layouts import index_media_folder, read_csv, require_dir
from . import Item, Listing, Split, register

EXTS = ("mp4", "mkv", "webm", "avi")
VERSIONS = (400, 600, 700)
COLUMNS = ("label", "youtube_id", "time_start", "time_end")
LAYOUT = (
    "{root}/train.csv and {root}/validate.csv (or val.csv; also accepted in {root}/annotations/) with the header "
    "label,youtube_id,time_start,time_end,split from the official Kinetics-{version} annotations, and the clips "
    "<youtube_id>_<time_start:06d>_<time_end:06d>.<mp4|mkv|webm|avi> anywhere under {root} "
    "(e.g. {root}/train/<label>/)"
)


def _annotation_files(root: Path, name: str, layout: str) -> tuple[Path, Path]:
    for folder in (root, root / "annotations"):
        if (folder / "train.csv").is_file():
            for val_name in ("validate.csv", "val.csv"):
                if (folder / val_name).is_file():
                    return folder / "train.csv", folder / val_name
            raise FileNotFoundError(f"{name}: {folder / 'validate.csv'} (or val.csv) does not exist; expected {layout}")
    raise FileNotFoundError(
        f"{name}: neither {root / 'train.csv'} nor {root / 'annotations' / 'train.csv'} exists; expected {layout}"
    )


def _read_rows(path: Path, name: str, skipped: list[str]) -> list[tuple[int, str, str]]:
    """(line, label, file stem) per usable row; malformed rows go to ``skipped``."""
    rows = read_csv(path)
    if not rows:
        raise ValueError(f"{name}: {path} is empty; expected the header {','.join(COLUMNS)},split and one row per clip")
    header = [h.strip() for h in rows[0][1]]
    absent = [c for c in COLUMNS if c not in header]
    if absent:
        raise ValueError(
            f"{name}: {path} has no column {', '.join(absent)} in its header {','.join(header)!r}; "
            f"use the official annotation CSV (header {','.join(COLUMNS)},split)"
        )
    col = {c: header.index(c) for c in COLUMNS}
    out = []
    for lineno, row in rows[1:]:
        try:
            label, ytid = row[col["label"]].strip(), row[col["youtube_id"]].strip()
            start, end = float(row[col["time_start"]]), float(row[col["time_end"]])
            if not label or not ytid or not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < 0:
                raise ValueError
        except (IndexError, ValueError):
            skipped.append(f"{path.name} line {lineno}: expected a label, a youtube_id and whole-second times, "
                           f"got {','.join(row)!r}")
            continue
        out.append((lineno, label, f"{ytid}_{int(start):06d}_{int(end):06d}"))
    return out


def list_kinetics(root: str | Path, version: int = 400) -> Listing:
    """List Kinetics-``version`` (400, 600 or 700): train.csv as train, validate.csv as test."""
    if version not in VERSIONS:
        raise ValueError(f"Kinetics version must be one of {VERSIONS}, got {version!r}")
    name = f"kinetics{version}"
    root = require_dir(root, name, LAYOUT.format(root="<root>", version=version))
    layout = LAYOUT.format(root=root, version=version)
    train_csv, val_csv = _annotation_files(root, name, layout)
    skipped: list[str] = []
    missing: list[str] = []
    train_rows = _read_rows(train_csv, name, skipped)
    val_rows = _read_rows(val_csv, name, skipped)
    # from every train row, present or not: the class ids must not depend on how much was downloaded
    classes = sorted({label for _, label, _ in train_rows})
    index = {c: i for i, c in enumerate(classes)}
    files = index_media_folder(root, EXTS)

    def items(csv_path: Path, rows: list[tuple[int, str, str]]) -> tuple[list[Item], int]:
        """The items of ``rows`` and how many were left out as missing."""
        out, lost = [], 0
        for lineno, label, stem in rows:
            if label not in index:
                skipped.append(f"{csv_path.name} line {lineno}: label {label!r} is not a class of {train_csv.name}")
                continue
            paths = files.get(stem)
            if not paths:
                missing.append(f"{csv_path.name} line {lineno}: {stem}.*")
                lost += 1
                continue
            out.append(Item(paths[0], index[label], id=stem))
        return out, lost

    (train, missing_train), (test, missing_test) = items(train_csv, train_rows), items(val_csv, val_rows)
    split = Split("test", train, test, missing_train, missing_test)
    return Listing(name, classes, [split], missing=missing, skipped=skipped)


for _version in (400, 600, 700):
    register(f"kinetics{_version}")(functools.partial(list_kinetics, version=_version))
