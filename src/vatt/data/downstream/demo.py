"""The project's demo dataset (:mod:`vatt.data.demo`) as a downstream benchmark.

Layout written by ``python -m vatt.data.demo --out data/demo``: ``train.jsonl`` and
``val.jsonl`` manifests (read with :func:`vatt.data.manifest.load_manifest`) next to
``train/*.mp4`` and ``val/*.mp4``. Every row has ``labels`` =
``{"colour": one of red/yellow/green/cyan/blue/magenta, "shape": circle/square/triangle/cross,
"motion": left/right/up/down}`` (the motion of the longest segment) and ~85 % of
the rows have captions.

- ``task="classify"``: one split ``test``, ``train.jsonl`` as train and ``val.jsonl``
  as test, labelled by the ``label`` key; classes are its sorted values over the rows
  of both files whose clip exists.
- ``task="retrieval"``: the captioned clips of ``val.jsonl``, each with its
  first caption (the earliest), as the test set of split ``test``; no classes, no
  train items (zero-shot, like MSR-VTT and YouCook2).

``missing`` holds the manifest rows whose clip is absent; ``skipped`` everything
else :func:`load_manifest` left out (malformed rows, dropped captions) and rows
without the ``label`` key. The split counts the absent ``train.jsonl`` rows as
``missing_train`` and the absent ``val.jsonl`` rows as ``missing_test``; with
``task="retrieval"`` (no train part) ``missing_train`` is 0 and ``missing_test``
counts every absent ``val.jsonl`` row, captioned or not.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..layouts import require_dir, require_file
from ..manifest import ClipRow, load_manifest
from . import Item, Listing, Split, register

NAME = "demo"
TASKS = ("classify", "retrieval")
LAYOUT = (
    "{root}/train.jsonl and {root}/val.jsonl with the clips in {root}/train/ and {root}/val/ "
    "(written by `python -m vatt.data.demo --out {root}`)"
)
_MISSING = re.compile(r"^(?P<where>.+ line \d+): missing file (?P<path>.+)$")


def _read(path: Path, missing: list[str], skipped: list[str]) -> list[ClipRow]:
    manifest = load_manifest(path)
    for line in manifest.skipped:
        match = _MISSING.match(line)
        if match:
            missing.append(f"{match['where']}: {match['path']}")
        else:
            skipped.append(line)
    return manifest.rows


@register("demo", options=("label", "task"))
def list_demo(root: str | Path, label: str = "colour", task: str = "classify") -> Listing:
    """List the demo dataset for classification by ``label`` or for text-video retrieval (see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"{NAME}: task must be one of {', '.join(TASKS)}, got {task!r}")
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    layout = LAYOUT.format(root=root)
    missing: list[str] = []
    skipped: list[str] = []
    rows: dict[str, list[ClipRow]] = {}
    lost: dict[str, int] = {}  # per manifest: rows left out because their clip is absent
    for split in ("train", "val"):
        before = len(missing)
        rows[split] = _read(require_file(root / f"{split}.jsonl", NAME, layout), missing, skipped)
        lost[split] = len(missing) - before

    def ident(row: ClipRow) -> str:
        return row.video.relative_to(root).as_posix()

    if task == "retrieval":
        items = [Item(r.video, None, caption=r.captions[0].text, id=ident(r)) for r in rows["val"] if r.captions]
        return Listing(NAME, [], [Split("test", [], items, missing_test=lost["val"])], missing=missing, skipped=skipped)

    keys = sorted({k for split_rows in rows.values() for r in split_rows for k in r.labels})
    if label not in keys:
        raise ValueError(f"{NAME}: no row has the label {label!r}; the labels present are {', '.join(keys) or 'none'}")
    classes = sorted({str(r.labels[label]) for split_rows in rows.values() for r in split_rows if label in r.labels})
    index = {c: i for i, c in enumerate(classes)}
    sets = []
    for split, split_rows in rows.items():
        items = []
        for r in split_rows:
            if label not in r.labels:
                skipped.append(f"{split}.jsonl {ident(r)}: no {label!r} in its labels, left out")
                continue
            items.append(Item(r.video, index[str(r.labels[label])], id=ident(r)))
        sets.append(items)
    split = Split("test", sets[0], sets[1], lost["train"], lost["val"])
    return Listing(NAME, classes, [split], missing=missing, skipped=skipped)
