"""Clip manifests: the one reader and validator of clip rows and their captions.

A manifest is JSONL, one clip per line, paths relative to its folder::

    {"video": "clips/a.mp4", "captions": [{"start": 1.0, "end": 3.2, "text": "cut the onion"}],
     "duration": 12.5, "labels": {"class": "cooking"}}

``captions`` may be empty (AudioSet-like clips); ``duration`` and ``labels`` are optional.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Caption:
    start: float
    end: float
    text: str


@dataclass
class ClipRow:
    video: Path
    captions: list[Caption]
    duration: float | None = None
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    rows: list[ClipRow]
    skipped: list[str]  # "line N: reason" for every row or caption left out


def load_manifest(path: str | Path) -> Manifest:
    """Read a JSONL manifest; paths are relative to its folder.

    Rows naming a missing file or malformed rows are skipped with a reason;
    captions with empty text or bad times are dropped from their row (the clip
    stays, as a clip without that caption).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: manifest {path} does not exist")
    rows, skipped = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            skipped.append(f"{where}: not JSON ({e.msg})")
            continue
        if not isinstance(item, dict) or not isinstance(item.get("video"), str):
            skipped.append(f"{where}: no 'video' path")
            continue
        video = path.parent / item["video"]
        if not video.is_file():
            skipped.append(f"{where}: missing file {item['video']}")
            continue
        captions = []
        for c in item.get("captions") or []:
            try:
                cap = Caption(float(c["start"]), float(c["end"]), str(c["text"]).strip())
            except (KeyError, TypeError, ValueError):
                skipped.append(f"{where}: caption without start/end/text dropped")
                continue
            if not cap.text or cap.end < cap.start:
                skipped.append(f"{where}: empty caption or end < start dropped")
                continue
            captions.append(cap)
        captions.sort(key=lambda c: c.start)
        duration = item.get("duration")
        rows.append(ClipRow(video, captions, float(duration) if duration else None, item.get("labels") or {}))
    if not rows:
        raise ValueError(f"data: manifest {path} has no usable row ({len(skipped)} skipped, e.g. {skipped[:3]})")
    if skipped:
        log.warning("%s: %d of %d rows/captions skipped, e.g. %s", path, len(skipped), len(rows) + len(skipped), skipped[:3])
    return Manifest(rows, skipped)
