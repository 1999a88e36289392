"""UCF101 (Soomro et al., 2012): 101 action classes, three official train/test splits.

Official release (https://www.crcv.ucf.edu/data/UCF101.php): ``UCF101.rar``
(the videos, ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``) and
``UCF101TrainTestSplits-RecognitionTask.zip`` (``ucfTrainTestlist/``):

- ``classInd.txt``: ``1 ApplyEyeMakeup`` ... ``101 YoYo`` (1-based class numbers);
- ``trainlist0{1,2,3}.txt``: ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``
  (path, then the 1-based class number);
- ``testlist0{1,2,3}.txt``: ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``
  (the class is the folder name).

The released lists have Windows line endings (``\\r\\n``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..layouts import read_lines, require_dir, require_file
from . import Item, Listing, Split, register

NAME = "ucf101"
LAYOUT = (
    "{root}/ucfTrainTestlist/classInd.txt, trainlist0[1-3].txt and testlist0[1-3].txt "
    "(from UCF101TrainTestSplits-RecognitionTask.zip) and the videos in {root}/UCF-101/<Class>/*.avi "
    "(from UCF101.rar)"
)


def read_class_index(path: Path, skipped: list[str]) -> list[str]:
    """Class names of ``classInd.txt``, index = class number - 1; malformed lines go to ``skipped``."""
    numbered: dict[int, str] = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            skipped.append(f"{path.name} line {lineno}: expected '<class number> <ClassName>', got {line!r}")
            continue
        number = int(parts[0])
        if number in numbered:
            raise ValueError(
                f"{NAME}: {path} line {lineno}: class number {number} is used twice "
                f"({numbered[number]!r} and {parts[1]!r}); re-extract classInd.txt from "
                "UCF101TrainTestSplits-RecognitionTask.zip"
            )
        numbered[number] = parts[1]
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        gaps = sorted(set(range(1, max(numbered, default=0) + 1)) - set(numbered))
        raise ValueError(
            f"{NAME}: {path}: class numbers must run 1, 2, ..., N (missing {gaps[:5]}, "
            f"{len(skipped)} malformed lines); re-extract classInd.txt from UCF101TrainTestSplits-RecognitionTask.zip"
        )
    if not numbered:
        raise ValueError(f"{NAME}: {path} lists no class ('1 ApplyEyeMakeup' per line)")
    return [numbered[n] for n in range(1, len(numbered) + 1)]


@register("ucf101")
def list_ucf101(root: str | Path) -> Listing:
    """List the three official UCF101 splits (see the module docstring for the layout).

    Videos are read from ``<root>/UCF-101/`` or, when that folder does not exist,
    from ``<root>/`` itself.
    """
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    layout = LAYOUT.format(root=root)
    lists = root / "ucfTrainTestlist"
    skipped: list[str] = []
    missing: list[str] = []
    classes = read_class_index(require_file(lists / "classInd.txt", NAME, layout), skipped)
    # the folder, not the file name, carries the class: HandstandPushups/v_HandStandPushups_g01_c01.avi
    by_folder = {c: i for i, c in enumerate(classes)}
    videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    exists: dict[str, bool] = {}  # every video is in three lists: stat it once

    def item(list_file: Path, lineno: int, rel: str, label: int) -> Item | None:
        if rel not in exists:
            exists[rel] = (videos / rel).is_file()
        if not exists[rel]:
            missing.append(f"{list_file.name} line {lineno}: {rel}")
            return None
        return Item(videos / rel, label, id=rel)

    splits = []
    for k in (1, 2, 3):
        train: list[Item] = []
        missing_train = missing_test = 0
        train_file = require_file(lists / f"trainlist0{k}.txt", NAME, layout)
        for lineno, line in read_lines(train_file):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                skipped.append(
                    f"{train_file.name} line {lineno}: expected '<Class>/<video>.avi <class number 1-{len(classes)}>', "
                    f"got {line!r}"
                )
                continue
            if (it := item(train_file, lineno, parts[0], int(parts[1]) - 1)) is None:
                missing_train += 1
            else:
                train.append(it)
        test: list[Item] = []
        test_file = require_file(lists / f"testlist0{k}.txt", NAME, layout)
        for lineno, line in read_lines(test_file):
            rel = line.split()[0]
            folder = PurePosixPath(rel).parts[0] if len(PurePosixPath(rel).parts) > 1 else ""
            if folder not in by_folder:
                skipped.append(
                    f"{test_file.name} line {lineno}: the class folder of {rel!r} is not a class of classInd.txt"
                )
                continue
            if (it := item(test_file, lineno, rel, by_folder[folder])) is None:
                missing_test += 1
            else:
                test.append(it)
        splits.append(Split(f"split{k}", train, test, missing_train, missing_test))
    return Listing(NAME, classes, splits, missing=missing, skipped=skipped)
