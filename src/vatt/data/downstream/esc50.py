"""ESC-50 (Piczak, 2015): 2000 five-second environmental sound recordings in 50 classes, 5 folds.

Official release (https://github.com/karolpiczak/ESC-50): ``meta/esc50.csv`` with
the header ``filename,fold,target,category,esc10,src_file,take`` and the audio in
``audio/<filename>`` (``1-100032-A-0.wav``, ...). Class ``target`` (0..49) is
named ``category``. The benchmark is 5-fold cross-validation: split ``foldK``
tests on fold K and trains on the other four.
"""

from __future__ import annotations

from pathlib import Path

from ..layouts import read_csv, require_dir, require_file
from . import Item, Listing, Split, register

NAME = "esc50"
FOLDS = (1, 2, 3, 4, 5)
COLUMNS = ("filename", "fold", "target", "category")
LAYOUT = (
    "{root}/meta/esc50.csv (header filename,fold,target,category,esc10,src_file,take) and the clips in "
    "{root}/audio/<filename> (the ESC-50 repository, https://github.com/karolpiczak/ESC-50)"
)


@register("esc50")
def list_esc50(root: str | Path) -> Listing:
    """List ESC-50 as five leave-one-fold-out splits ``fold1..fold5``."""
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    meta = require_file(root / "meta" / "esc50.csv", NAME, LAYOUT.format(root=root))
    rows = read_csv(meta)
    header = [h.strip() for h in rows[0][1]] if rows else []
    absent = [c for c in COLUMNS if c not in header]
    if absent:
        raise ValueError(
            f"{NAME}: {meta} has no column {', '.join(absent)} in its header {','.join(header)!r}; "
            "use the official meta/esc50.csv (header filename,fold,target,category,esc10,src_file,take)"
        )
    col = {c: header.index(c) for c in COLUMNS}
    skipped: list[str] = []
    missing: list[str] = []
    names: dict[int, str] = {}
    by_fold: dict[int, list[Item]] = {k: [] for k in FOLDS}
    lost = dict.fromkeys(FOLDS, 0)  # missing rows per fold
    for lineno, row in rows[1:]:
        where = f"{meta.name} line {lineno}"
        try:
            filename, category = row[col["filename"]].strip(), row[col["category"]].strip()
            fold, target = int(row[col["fold"]]), int(row[col["target"]])
            if not filename or not category or fold not in FOLDS or target < 0:
                raise ValueError
        except (IndexError, ValueError):
            skipped.append(f"{where}: expected a filename, a fold 1-5, a target >= 0 and a category, "
                           f"got {','.join(row)!r}")
            continue
        if names.setdefault(target, category) != category:
            skipped.append(f"{where}: target {target} is named {category!r} here but {names[target]!r} before")
            continue
        path = root / "audio" / filename
        if not path.is_file():
            missing.append(f"{where}: audio/{filename}")
            lost[fold] += 1
            continue
        by_fold[fold].append(Item(path, target, id=filename))
    if sorted(names) != list(range(len(names))) or not names:
        raise ValueError(
            f"{NAME}: {meta}: the targets must run 0, 1, ..., N-1 (found {sorted(names)[:10]}...); "
            "restore meta/esc50.csv from the ESC-50 repository"
        )
    classes = [names[t] for t in range(len(names))]
    splits = [
        Split(f"fold{k}", [it for j in FOLDS if j != k for it in by_fold[j]], list(by_fold[k]),
              sum(lost[j] for j in FOLDS if j != k), lost[k])
        for k in FOLDS
    ]
    return Listing(NAME, classes, splits, modality="audio", missing=missing, skipped=skipped)
