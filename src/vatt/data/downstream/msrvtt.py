"""MSR-VTT (Xu et al., 2016), the 1k-A test set (Yu et al., 2018) for text-video retrieval.

The 1k-A split is the one of JSFusion (https://github.com/yj-yu/lsmdc), whose
``MSRVTT_JSFUSION_test.csv`` is redistributed with the MSR-VTT data of CLIP4Clip
(``msrvtt_data.zip``) and Frozen in Time: header ``key,vid_key,video_id,sentence``,
1000 rows such as ``ret0,msr7020,video7020,a family is having coversation``.
The videos (``MSRVTT/videos/all/video7020.mp4`` in the same archives; the
original release has ``TestVideo/``) are looked for in ``<root>/videos/all/``,
``<root>/TestVideo/``, ``<root>/videos/`` and then anywhere under the root.

One split ``test`` (zero-shot retrieval: no train items); items carry the
sentence as ``caption`` and no label.
"""

from __future__ import annotations

from pathlib import Path

from ..layouts import VIDEO_EXTS, index_media_folder, read_csv, require_dir, require_file
from . import Item, Listing, Split, register

NAME = "msrvtt"
CSV_NAME = "MSRVTT_JSFUSION_test.csv"
LAYOUT = (
    "{root}/MSRVTT_JSFUSION_test.csv (header key,vid_key,video_id,sentence; from CLIP4Clip's msrvtt_data.zip) "
    "and the videos {root}/videos/all/<video_id>.mp4 (or in {root}/TestVideo/, {root}/videos/ or anywhere "
    "under {root})"
)
_FOLDERS = ("videos/all", "TestVideo", "videos")


@register("msrvtt")
def list_msrvtt(root: str | Path) -> Listing:
    """List the 1000 MSR-VTT 1k-A test pairs (see the module docstring for the layout)."""
    root = require_dir(root, NAME, LAYOUT.format(root="<root>"))
    path = require_file(root / CSV_NAME, NAME, LAYOUT.format(root=root))
    rows = read_csv(path)
    header = [h.strip() for h in rows[0][1]] if rows else []
    absent = [c for c in ("video_id", "sentence") if c not in header]
    if absent:
        raise ValueError(
            f"{NAME}: {path} has no column {', '.join(absent)} in its header {','.join(header)!r}; "
            f"use the official {CSV_NAME} (header key,vid_key,video_id,sentence)"
        )
    vid_col, text_col = header.index("video_id"), header.index("sentence")
    skipped: list[str] = []
    missing: list[str] = []
    anywhere: dict[str, list[Path]] | None = None  # built only if a video is not in the usual folders
    items = []
    for lineno, row in rows[1:]:
        where = f"{CSV_NAME} line {lineno}"
        vid = row[vid_col].strip() if len(row) > vid_col else ""
        sentence = row[text_col].strip() if len(row) > text_col else ""
        if not vid or not sentence:
            skipped.append(f"{where}: expected a video_id and a sentence, got {','.join(row)!r}")
            continue
        video = next((root / f / f"{vid}.mp4" for f in _FOLDERS if (root / f / f"{vid}.mp4").is_file()), None)
        if video is None:
            if anywhere is None:
                anywhere = index_media_folder(root, VIDEO_EXTS)
            video = anywhere[vid][0] if vid in anywhere else None
        if video is None:
            missing.append(f"{where}: videos/all/{vid}.mp4")
            continue
        items.append(Item(video, None, caption=sentence, id=vid))
    split = Split("test", [], items, missing_test=len(missing))  # every missing row is a test row
    return Listing(NAME, [], [split], missing=missing, skipped=skipped)
