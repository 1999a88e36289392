"""ImageNet-style image folders (ILSVRC-2012, Russakovsky et al., 2015, or any dataset in that layout).

The layout torchvision's ``ImageFolder`` reads: ``<root>/train/<class>/*.JPEG`` and
``<root>/val/<class>/*.JPEG``. The official ILSVRC-2012 release
(https://image-net.org/download.php) gives ``train/`` as one tar per class
(``n01440764.tar``, extract each into ``train/<wnid>/``) and ``val/`` as 50,000
loose images, which have to be sorted into ``val/<wnid>/`` first (e.g. with the
widely used ``valprep.sh``). Classes are the sorted folder names of ``train/``.
There is no index file, so nothing is ever ``missing``; images outside a class
folder and val classes unknown to ``train/`` are reported in ``skipped``.

One split ``test``: ``train/`` as train, ``val/`` as test.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..layouts import require_dir
from . import Item, Listing, Split, register

NAME = "imagenet"
EXTS = (".jpg", ".jpeg", ".png")  # compared lower-case: ImageNet's own files are .JPEG
LAYOUT = (
    "{root}/train/<class>/*.{{jpg,jpeg,png,JPEG}} and {root}/val/<class>/*.{{jpg,jpeg,png,JPEG}} "
    "(ImageNet's val images sorted into class folders, e.g. with valprep.sh)"
)


def _images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries ignored), sorted."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(parent) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in EXTS)
    return sorted(found)


def _images_count(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


@register("imagenet")
def list_imagenet(root: str | Path) -> Listing:
    """List ``train/`` and ``val/`` class folders (see the module docstring)."""
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    layout = LAYOUT.format(root=root)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{NAME}: {root / sub} does not exist; expected {layout}")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{NAME}: {root / 'train'} has no class folder; expected {layout}")
    index = {c: i for i, c in enumerate(classes)}
    skipped: list[str] = []
    sets = []
    for sub in ("train", "val"):
        items = []
        loose = sorted(p.name for p in (root / sub).iterdir() if p.is_file() and p.suffix.lower() in EXTS)
        if loose:
            skipped.append(f"{sub}/: {_images_count(len(loose))} outside class folders left out (e.g. {loose[0]}); "
                           f"move them into {sub}/<class>/")
        for folder in sorted(d for d in (root / sub).iterdir() if d.is_dir() and not d.name.startswith(".")):
            images = _images(folder)
            if folder.name not in index:
                skipped.append(
                    f"{sub}/{folder.name}: not a class folder of train/, {_images_count(len(images))} left out"
                )
                continue
            items.extend(Item(p, index[folder.name], id=p.relative_to(root).as_posix()) for p in images)
        sets.append(items)
    return Listing(NAME, classes, [Split("test", sets[0], sets[1])], modality="image", skipped=skipped)
