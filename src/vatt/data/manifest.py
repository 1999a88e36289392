"""Clip manifests: the one reader and validator of clip rows and their captions.

A manifest is JSONL, one clip per line, paths relative to its folder::

    {"video": "clips/a.mp4", "captions": [{"start": 1.0, "end": 3.2, "text": "cut the onion"}],
     "duration": 12.5, "labels": {"class": "cooking"}}

``captions`` may be empty (AudioSet-like clips); ``duration`` and ``labels`` are optional.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
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


CAPTION_UNUSABLE = "caption without start/end/text dropped"
CAPTION_EMPTY = "empty caption or end < start dropped"


def clean_captions(raw: Any) -> tuple[list[Caption], list[str]]:
    """The one caption rule of the project (manifests, ``prepare``, shards): usable captions and why others went.

    A caption needs numeric, finite ``start`` <= ``end`` and a non-empty string
    ``text`` (stripped). Kept captions are sorted by (start, end); every dropped one
    gives a reason. ``raw`` that is not a list (or None) keeps nothing.
    """
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"captions must be a list, got {type(raw).__name__}"]
    kept, dropped = [], []
    for c in raw:
        try:
            start, end, text = float(c["start"]), float(c["end"]), c["text"]
        except (KeyError, TypeError, ValueError):
            dropped.append(CAPTION_UNUSABLE)
            continue
        if not isinstance(text, str) or not math.isfinite(start) or not math.isfinite(end):
            dropped.append(CAPTION_UNUSABLE)
            continue
        if not text.strip() or end < start:
            dropped.append(CAPTION_EMPTY)
            continue
        kept.append(Caption(start, end, text.strip()))
    kept.sort(key=lambda c: (c.start, c.end))
    return kept, dropped


def manifest_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """The one JSONL manifest parser: ``(line number, row, None)`` or ``(line number, None, why it is unusable)``.

    A usable row is a JSON object whose ``video`` is a non-empty string; blank
    lines are passed over. Raises ``FileNotFoundError`` when ``path`` is no file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, None, f"not JSON ({e.msg})"
            continue
        if not isinstance(item, dict) or not isinstance(item.get("video"), str) or not item["video"].strip():
            yield lineno, None, "no 'video' path"
            continue
        yield lineno, item, None


def load_manifest(path: str | Path) -> Manifest:
    """Read a JSONL manifest; paths are relative to its folder.

    Rows naming a missing file or malformed rows are skipped with a reason;
    captions with empty text or bad times are dropped from their row (the clip
    stays, as a clip without that caption).
    """
    path = Path(path)
    rows, skipped = [], []
    for lineno, item, problem in manifest_lines(path):
        where = f"{path.name} line {lineno}"
        if item is None:
            skipped.append(f"{where}: {problem}")
            continue
        video = path.parent / item["video"]
        if not video.is_file():
            skipped.append(f"{where}: missing file {item['video']}")
            continue
        captions, dropped = clean_captions(item.get("captions"))
        skipped.extend(f"{where}: {reason}" for reason in dropped)
        duration = item.get("duration")
        rows.append(ClipRow(video, captions, float(duration) if duration else None, item.get("labels") or {}))
    if not rows:
        raise ValueError(f"data: manifest {path} has no usable row ({len(skipped)} skipped, e.g. {skipped[:3]})")
    if skipped:
        log.warning("%s: %d of %d rows/captions skipped, e.g. %s", path, len(skipped), len(rows) + len(skipped), skipped[:3])
    return Manifest(rows, skipped)
