"""YouCook2 (Zhou et al., 2018): cooking videos with captioned procedure segments, for text-video retrieval.

Official release (http://youcook2.eecs.umich.edu/, ``YouCookII.tar.gz``):
``youcookii_annotations_trainval.json`` =
``{"database": {"<video_id>": {"subset": "training" | "validation", "recipe_type": "101",
"duration": 241.62, "annotations": [{"id": 0, "segment": [90, 102], "sentence": "..."}, ...]}}}``.
The official download script stores the videos as
``raw_videos/<subset>/<recipe_type>/<video_id>.<ext>``; they are found by name
anywhere under the root.

As in the VATT paper (and Miech et al., 2019), retrieval is evaluated on the
validation subset: one item per annotated segment, with ``start``/``end`` the
segment in seconds, ``caption`` its sentence and ``id`` ``<video_id>_<annotation id>``.
One split ``test``, no train items.

A JSON file has no meaningful line numbers (the official one is a single line),
so ``missing`` and ``skipped`` name the entry: ``"<json> entry <video_id>: ..."``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..layouts import VIDEO_EXTS, index_media_folder, require_dir, require_file
from . import Item, Listing, Split, register

NAME = "youcook2"
JSON_NAME = "youcookii_annotations_trainval.json"
LAYOUT = (
    "{root}/youcookii_annotations_trainval.json (from YouCookII.tar.gz) and the videos <video_id>.<mp4|mkv|webm> "
    "anywhere under {root} (the official layout: {root}/raw_videos/validation/<recipe_type>/<video_id>.<ext>)"
)


def _segment(ann: Any) -> tuple[int, float, float, str] | str:
    """(annotation id, start, end, sentence), or why the annotation is unusable."""
    if not isinstance(ann, dict):
        return "an annotation is not an object"
    seg, text, ann_id = ann.get("segment"), ann.get("sentence"), ann.get("id")
    if not isinstance(ann_id, int) or isinstance(ann_id, bool):
        return f"annotation without an integer 'id': {ann!r}"
    try:
        start, end = (float(x) for x in seg)
    except (TypeError, ValueError):
        return f"annotation {ann_id}: 'segment' is not [start, end] in seconds: {seg!r}"
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        return f"annotation {ann_id}: bad segment {seg!r} (needs 0 <= start < end)"
    if not isinstance(text, str) or not text.strip():
        return f"annotation {ann_id}: no 'sentence'"
    return ann_id, start, end, text.strip()


@register("youcook2")
def list_youcook2(root: str | Path) -> Listing:
    """List the YouCook2 validation segments for retrieval (see the module docstring)."""
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    path = require_file(root / JSON_NAME, NAME, LAYOUT.format(root=root))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{NAME}: {path} is not valid JSON ({e}); download YouCookII.tar.gz again") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise ValueError(f"{NAME}: {path} has no 'database' object mapping video ids to their annotations; "
                         "use the official youcookii_annotations_trainval.json")
    files = index_media_folder(root, VIDEO_EXTS)
    skipped: list[str] = []
    missing: list[str] = []
    items = []
    lost = 0  # segments of the missing videos: the test items a missing video takes with it
    for vid, entry in database.items():
        where = f"{JSON_NAME} entry {vid}"
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list):
            skipped.append(f"{where}: expected an object with 'subset' and an 'annotations' list")
            continue
        if entry.get("subset") != "validation":
            continue
        segments = []
        for ann in entry["annotations"]:
            parsed = _segment(ann)
            if isinstance(parsed, str):
                skipped.append(f"{where}: {parsed}")
            else:
                segments.append(parsed)
        if not segments:
            continue
        if vid not in files:
            missing.append(f"{where}: raw_videos/validation/{entry.get('recipe_type', '<recipe_type>')}/{vid}.*")
            lost += len(segments)
            continue
        video = files[vid][0]
        items.extend(Item(video, None, caption=text, start=start, end=end, id=f"{vid}_{ann_id}")
                     for ann_id, start, end, text in segments)
    split = Split("test", [], items, missing_test=lost)  # items are segments: a missing video loses all of its own
    return Listing(NAME, [], [split], missing=missing, skipped=skipped)
