"""Moments in Time (Monfort et al., 2019): 3-second clips of 339 actions (v1; 305 in v2).

Official release (http://moments.csail.mit.edu/, ``Moments_in_Time_Raw.zip``):

- ``trainingSet.csv`` / ``validationSet.csv``: no header, rows
  ``<path>,<label>[,<agreement counts>...]``, e.g.
  ``adult+female+singing/0000001.mp4,adult+female+singing,3,1``;
- the clips at ``training/<path>`` and ``validation/<path>``;
- ``moments_categories.txt``: ``<label>,<index>`` per line (the class ids).

One split ``test``: the training set as train, the validation set as test.
Classes come from ``moments_categories.txt`` when present, else they are the
sorted labels of ``trainingSet.csv``.
"""

from __future__ import annotations

from pathlib import Path

from ..layouts import read_csv, require_dir, require_file
from . import Item, Listing, Split, register

NAME = "mit"
LAYOUT = (
    "{root}/trainingSet.csv, {root}/validationSet.csv and {root}/moments_categories.txt with the clips in "
    "{root}/training/<label>/*.mp4 and {root}/validation/<label>/*.mp4 (from Moments_in_Time_Raw.zip)"
)


def _read_categories(path: Path, skipped: list[str]) -> list[str]:
    numbered: dict[int, str] = {}
    for lineno, row in read_csv(path):
        if len(row) != 2 or not row[1].strip().isdigit() or not row[0].strip():
            skipped.append(f"{path.name} line {lineno}: expected '<label>,<index>', got {','.join(row)!r}")
            continue
        numbered.setdefault(int(row[1]), row[0].strip())
    if sorted(numbered) != list(range(len(numbered))) or not numbered:
        raise ValueError(
            f"{NAME}: {path}: the class indices must run 0, 1, ..., N-1 (found {len(numbered)} indices up to "
            f"{max(numbered, default=None)}); restore moments_categories.txt from Moments_in_Time_Raw.zip or "
            "delete it to use the sorted training labels"
        )
    return [numbered[i] for i in range(len(numbered))]


@register("mit")
def list_mit(root: str | Path) -> Listing:
    """List Moments in Time (see the module docstring for the layout)."""
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    layout = LAYOUT.format(root=root)
    skipped: list[str] = []
    missing: list[str] = []
    sets = []
    for csv_name, folder in (("trainingSet.csv", "training"), ("validationSet.csv", "validation")):
        path = require_file(root / csv_name, NAME, layout)
        rows = []
        for lineno, row in read_csv(path):
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                skipped.append(f"{csv_name} line {lineno}: expected '<path>,<label>,...', got {','.join(row)!r}")
                continue
            rows.append((lineno, row[0].strip(), row[1].strip()))
        sets.append((csv_name, folder, rows))
    categories = root / "moments_categories.txt"
    if categories.is_file():
        classes, source = _read_categories(categories, skipped), categories.name
    else:
        classes, source = sorted({label for _, _, label in sets[0][2]}), "trainingSet.csv"
    index = {c: i for i, c in enumerate(classes)}

    lists, lost = [], []
    for csv_name, folder, rows in sets:
        items, n_missing = [], 0
        for lineno, rel, label in rows:
            if label not in index:
                skipped.append(f"{csv_name} line {lineno}: label {label!r} is not a class of {source}")
                continue
            path = root / folder / rel
            if not path.is_file():
                missing.append(f"{csv_name} line {lineno}: {folder}/{rel}")
                n_missing += 1
                continue
            items.append(Item(path, index[label], id=f"{folder}/{rel}"))
        lists.append(items)
        lost.append(n_missing)
    split = Split("test", lists[0], lists[1], lost[0], lost[1])
    return Listing(NAME, classes, [split], missing=missing, skipped=skipped)
