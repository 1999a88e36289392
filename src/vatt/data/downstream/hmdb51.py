"""HMDB51 (Kuehne et al., 2011): 51 action classes, three official 70/30 splits.

Official release (https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/):
``hmdb51_org.rar`` (one ``<action>.rar`` per class, each holding ``<video>.avi``) and
``test_train_splits.rar``, which extracts to ``testTrainMulti_7030_splits/`` with
153 files ``<action>_test_split{1,2,3}.txt`` of lines ``<video>.avi <flag>``:
1 = train, 2 = test, 0 = not used in that split (70 / 30 / the rest per class).
Classes are the action names in alphabetical order.
"""

from __future__ import annotations

from pathlib import Path

from ..layouts import read_lines, require_dir, require_file
from . import Item, Listing, Split, register

NAME = "hmdb51"
LAYOUT = (
    "the split lists {root}/testTrainMulti_7030_splits/<action>_test_split[1-3].txt (from test_train_splits.rar; "
    "also accepted in {root}/splits/ or {root}/) and the videos in {root}/<action>/<video>.avi "
    "(or {root}/videos/<action>/<video>.avi; from hmdb51_org.rar and its per-action .rar files)"
)
_SUFFIX = "_test_split1.txt"


def _split_dir(root: Path) -> Path:
    for folder in (root / "testTrainMulti_7030_splits", root / "splits", root):
        if folder.is_dir() and any(folder.glob(f"*{_SUFFIX}")):
            return folder
    raise FileNotFoundError(
        f"{NAME}: no <action>{_SUFFIX} in {root / 'testTrainMulti_7030_splits'}, {root / 'splits'} or {root}; "
        f"expected {LAYOUT.format(root=root)}"
    )


@register("hmdb51")
def list_hmdb51(root: str | Path) -> Listing:
    """List the three official HMDB51 splits (see the module docstring for the layout).

    Rows flagged 0 are in neither the train nor the test set of their split, and
    their files are not checked.
    """
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    layout = LAYOUT.format(root=root)
    split_dir = _split_dir(root)
    classes = sorted(p.name[: -len(_SUFFIX)] for p in split_dir.glob(f"*{_SUFFIX}"))
    skipped: list[str] = []
    missing: list[str] = []
    found: dict[str, Path | None] = {}  # most videos are listed in all three splits: look once

    def locate(rel: str) -> Path | None:
        if rel not in found:
            found[rel] = next((p for p in (root / rel, root / "videos" / rel) if p.is_file()), None)
        return found[rel]

    splits = []
    for k in (1, 2, 3):
        train: list[Item] = []
        test: list[Item] = []
        lost = {"1": 0, "2": 0}  # by flag: missing train / test entries of this split
        for label, action in enumerate(classes):
            split_file = require_file(split_dir / f"{action}_test_split{k}.txt", NAME, layout)
            for lineno, line in read_lines(split_file):
                parts = line.rsplit(maxsplit=1)  # rsplit: the flag is last, whatever the file name holds
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    skipped.append(f"{split_file.name} line {lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
                    continue
                if parts[1] == "0":
                    continue
                rel = f"{action}/{parts[0]}"
                path = locate(rel)
                if path is None:
                    missing.append(f"{split_file.name} line {lineno}: {rel}")
                    lost[parts[1]] += 1
                    continue
                (train if parts[1] == "1" else test).append(Item(path, label, id=rel))
        splits.append(Split(f"split{k}", train, test, lost["1"], lost["2"]))
    return Listing(NAME, classes, splits, missing=missing, skipped=skipped)
