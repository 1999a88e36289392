"""What an evaluation measured: the ``protocol`` object of every downstream ``metrics.json``.

A number alone does not say whether it compares with the paper's: MSR-VTT 1k-A or the
full test set, split 1 or the mean of three, 12 views or one, files lost from a
re-downloaded dataset. :func:`build` records, next to the metrics:

- ``task``, ``dataset``, ``splits`` (the splits/folds evaluated) and the official ones;
- ``items``: for every evaluated part (``split1/test``, ``fold3/train``, ...) the number
  of items the official split has (``official``, from :data:`OFFICIAL_COUNTS`; null
  where unknown), the number its index lists on disk (``listed``), the index entries
  whose file is missing (``missing``), the files that could not be read
  (``unreadable``), the items evaluated, and ``ids_sha256``; ``items_evaluated``,
  ``items_official``, ``items_missing``, ``items_unreadable`` sum the test parts;
- ``ids_sha256``: SHA-256 over the evaluated test ids (see :func:`ids_sha256`), so two
  runs or two labs can tell whether they scored the same items;
- ``views`` (windows x crops and how they were combined), ``feature``, ``classifier``,
  ``checkpoint`` (path and SHA-256 of the weights file) and the clip geometry;
- ``comparable_to_paper`` and ``reasons``: false, with one reason per difference, when
  the paper has no such number (:data:`PAPER`), items are missing or unreadable, the
  views, feature, classifier or splits differ from the paper's, or the weights are
  random.

The counts and their sources are in ``docs/protocols.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vatt.pretrained import weights_sha256

# dataset -> split -> part -> the number of items of the official split (docs/protocols.md gives each source);
# None: the official list has no fixed size (a train set that shrinks as videos disappear) or is not used here
OFFICIAL_COUNTS: dict[str, dict[str, dict[str, int | None]]] = {
    "ucf101": {"split1": {"train": 9537, "test": 3783}, "split2": {"train": 9586, "test": 3734},
               "split3": {"train": 9624, "test": 3696}},
    "hmdb51": {f"split{k}": {"train": 3570, "test": 1530} for k in (1, 2, 3)},
    "esc50": {f"fold{k}": {"train": 1600, "test": 400} for k in range(1, 6)},
    "kinetics400": {"test": {"train": None, "test": 20_000}},
    "kinetics600": {"test": {"train": None, "test": 30_000}},
    "kinetics700": {"test": {"train": None, "test": 35_000}},
    "mit": {"test": {"train": None, "test": 33_900}},
    "audioset": {"test": {"train": None, "test": 20_383}},
    "msrvtt": {"test": {"test": 1_000}},
    "youcook2": {"test": {"test": 3_350}},
    "imagenet": {"test": {"train": 1_281_167, "test": 50_000}},
}

# What the paper measured (paper Sec. 4; docs/vatt.md Sec. 7): task -> dataset -> protocol.
# splits "all": the mean over every official split/fold; views: (windows, crops); None: not judged.
_PROBE = {"splits": "all", "views": (4, 1), "feature": "agg", "classifier": "authors"}
_FINETUNED_VIDEO = {"splits": "all", "views": (4, 3), "feature": "logits", "classifier": "fine-tuned"}
_FINETUNED_AUDIO = {**_FINETUNED_VIDEO, "views": (4, 1)}
_RETRIEVAL = {"splits": "all", "views": (4, 1), "feature": "vt", "classifier": None}
PAPER: dict[str, dict[str, dict[str, Any]]] = {
    "linear_probe": {"ucf101": _PROBE, "hmdb51": _PROBE, "esc50": _PROBE},
    "retrieval": {"msrvtt": _RETRIEVAL, "youcook2": _RETRIEVAL},
    "classifier": {"kinetics400": _FINETUNED_VIDEO, "kinetics600": _FINETUNED_VIDEO,
                   "kinetics700": _FINETUNED_VIDEO, "mit": _FINETUNED_VIDEO, "audioset": _FINETUNED_AUDIO},
    "finetune": {"kinetics400": _FINETUNED_VIDEO, "kinetics600": _FINETUNED_VIDEO, "kinetics700": _FINETUNED_VIDEO,
                 "mit": _FINETUNED_VIDEO, "audioset": _FINETUNED_AUDIO, "imagenet": {**_FINETUNED_VIDEO, "views": None}},
    "zero_shot": {},  # the paper evaluates no zero-shot classification
}
CLIP_KEYS = ("num_frames", "fps", "image_size", "sample_rate")  # the clip geometry a record states
TASK_NAMES = {"linear_probe": "linear probe", "retrieval": "zero-shot retrieval", "classifier": "classifier test",
              "finetune": "fine-tuning", "zero_shot": "zero-shot classification"}


def ids_sha256(ids: Iterable[str]) -> str:
    """SHA-256 (hex) of the sorted ids, each followed by a newline, in UTF-8.

    ``printf '%s\\n' <ids> | LC_ALL=C sort | sha256sum`` gives the same for ASCII ids.
    """
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


@dataclass
class Part:
    """One evaluated part of one split: what its index lists and which items were scored."""

    split: str  # split1 | fold3 | test
    part: str  # train | test
    listed: int  # items the lister kept (their files are on disk)
    missing: int  # index entries left out because their file is missing
    evaluated_ids: Sequence[str]  # the ids of the items read and scored

    @property
    def unreadable(self) -> int:
        return self.listed - len(self.evaluated_ids)


def view_record(windows: int, crops: int, combined: str) -> dict[str, Any]:
    """The ``views`` entry: ``windows`` x ``crops`` per item and how their scores were combined."""
    return {"windows": int(windows), "crops": int(crops), "combined": combined}


def build(
    task: str,
    dataset: str,
    parts: Sequence[Part],
    all_splits: Sequence[str],
    views: dict[str, Any],
    feature: str,
    classifier: str | None,
    checkpoint: str | Path | None,
    clip: dict[str, Any] | None = None,
    random_init: str | None = None,
) -> dict[str, Any]:
    """The ``protocol`` object (see the module docstring).

    ``parts``: every part the task read (a probe: train and test of each split);
    ``all_splits``: the listing's splits; ``views``: :func:`view_record`; ``checkpoint``:
    the weights file or folder evaluated (None: not saved); ``random_init``: set when the
    weights are random, e.g. ``"tiny, seed 42"`` (never comparable).
    """
    official = OFFICIAL_COUNTS.get(dataset, {})
    items: dict[str, dict[str, Any]] = {}
    for p in parts:
        items[f"{p.split}/{p.part}"] = {
            "official": official.get(p.split, {}).get(p.part), "listed": p.listed, "missing": p.missing,
            "unreadable": p.unreadable, "evaluated": len(p.evaluated_ids), "ids_sha256": ids_sha256(p.evaluated_ids)}
    tests = [p for p in parts if p.part == "test"]
    splits = list(dict.fromkeys(p.split for p in parts))
    several = len(splits) > 1
    test_ids = [f"{p.split}/{i}" if several else i for p in tests for i in p.evaluated_ids]
    test_official = [items[f"{p.split}/test"]["official"] for p in tests]
    record: dict[str, Any] = {
        "task": task,
        "dataset": dataset,
        "splits": splits,
        "official_splits": list(all_splits),
        "items_evaluated": len(test_ids),
        "items_official": None if None in test_official or not tests else sum(test_official),
        "items_missing": sum(p.missing for p in tests),
        "items_unreadable": sum(p.unreadable for p in tests),
        "ids_sha256": ids_sha256(test_ids),
        "ids_sha256_of": ("sorted '<split>/<id>' lines of the evaluated test items" if several
                          else "sorted ids of the evaluated test items, one per line"),
        "items": items,
        "views": views,
        "feature": feature,
        "classifier": classifier,
        "checkpoint": {"path": None if checkpoint is None else str(checkpoint),
                       "sha256": None if checkpoint is None else weights_sha256(checkpoint),
                       **({"random_init": random_init} if random_init else {})},
        "clip": clip or {},
    }
    reasons = differences(record, PAPER.get(task, {}).get(dataset))
    record["comparable_to_paper"] = not reasons
    record["reasons"] = reasons
    return record


def differences(record: dict[str, Any], paper: dict[str, Any] | None) -> list[str]:
    """Why ``record`` does not measure what the paper measured (empty: it does)."""
    task, dataset = record["task"], record["dataset"]
    if paper is None:
        return [f"the paper reports no {TASK_NAMES.get(task, task)} on {dataset}"]
    reasons = []
    if record["checkpoint"].get("random_init"):
        reasons.append(f"random weights ({record['checkpoint']['random_init']}), not a pretrained model")
    if paper["splits"] == "all" and set(record["splits"]) != set(record["official_splits"]):
        reasons.append(f"splits {', '.join(record['splits'])} evaluated; the paper reports the mean over "
                       f"{', '.join(record['official_splits'])}")
    for name, part in record["items"].items():
        n, official = part["evaluated"], part["official"]
        if official is None or n == official:
            continue
        if n < official:
            why = [f"{part[k]} {k}" for k in ("missing", "unreadable") if part[k]]
            gap = official - part["listed"] - part["missing"]
            if gap > 0:
                why.append(f"{gap} not in the index files")
            reasons.append(f"{name}: {n} of the official {official} items evaluated ({', '.join(why)})")
        else:
            reasons.append(f"{name}: {n} items evaluated, more than the official {official}: not the official list")
    v = record["views"]
    if paper["views"] is not None and (v["windows"], v["crops"]) != tuple(paper["views"]):
        reasons.append(f"views {v['windows']} windows x {v['crops']} crops; the paper's {paper['views'][0]} x "
                       f"{paper['views'][1]}")
    if record["feature"] != paper["feature"]:
        reasons.append(f"feature {record['feature']}; the paper's {paper['feature']}")
    if paper["classifier"] is not None and record["classifier"] != paper["classifier"]:
        reasons.append(f"classifier {record['classifier']}; the paper's {paper['classifier']}"
                       + (" (probe.classifier=authors)" if task == "linear_probe" else ""))
    return reasons
