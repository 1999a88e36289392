"""The inputs of each corpus (manifest, HowTo100M, AudioSet) as entries, with the checks the parent makes."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from ..layouts import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    MalformedRow,
    audioset_file_stems,
    index_media_folder,
    read_audioset_segments,
)
from ..manifest import clean_captions, manifest_lines
from .common import R_BAD_ENTRY, R_DUPLICATE, R_MISSING, R_NO_CAPTIONS


def _clean_captions(raw: Any) -> tuple[list[dict[str, Any]], int]:
    """``clean_captions`` (the project's one caption rule) as the JSON rows stored in a shard, and the number dropped."""
    kept, dropped = clean_captions(raw)
    return [{"start": c.start, "end": c.end, "text": c.text} for c in kept], len(dropped)


def _entry(index: int, name: str, id: str | None = None, path: Path | None = None, *, where: str | None = None,
           captions: list | None = None, labels: dict | None = None, need_video: bool = True,
           caption_note: str = "", skip: tuple[str, str] | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "input": name,
        "where": where,
        "id": id,
        "path": str(path) if path is not None else None,
        "captions": captions or [],
        "labels": labels or {},
        "need_video": need_video,
        "caption_note": caption_note,
        "skip": list(skip) if skip else None,
    }


# --------------------------------------------------------------------------- listing the inputs (parent)


def list_manifest(manifest: Path) -> list[dict[str, Any]]:
    entries = []
    for lineno, item, problem in manifest_lines(manifest):
        where, index = f"{manifest.name}:{lineno}", len(entries)
        if item is None:
            entries.append(_entry(index, where, where=where, skip=(R_BAD_ENTRY, problem)))
            continue
        rel = item["video"]
        given_id = item.get("id")
        clip_id = given_id if isinstance(given_id, str) and given_id else str(PurePosixPath(rel).with_suffix(""))
        path = manifest.parent / rel
        captions, dropped = _clean_captions(item.get("captions"))
        labels = item.get("labels") if isinstance(item.get("labels"), dict) else {}
        note = f"{dropped} caption(s) without text or with bad times" if dropped else "no captions"
        skip = None if path.is_file() else (R_MISSING, f"{path} does not exist")
        entries.append(_entry(index, rel, clip_id, path, where=where, captions=captions, labels=labels,
                              caption_note=note, skip=skip))
    return entries


def list_howto100m(videos: Path, captions_file: Path) -> list[dict[str, Any]]:
    if not captions_file.is_file():
        raise FileNotFoundError(f"captions file {captions_file} does not exist")
    with captions_file.open(encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f"{captions_file}: expected an object mapping video id -> {{start, end, text}}")
    files = index_media_folder(videos, VIDEO_EXTS)
    entries: list[dict[str, Any]] = []
    for vid in sorted(set(table) | set(files)):
        paths = files.get(vid, [])
        raw = table.get(vid)
        note = "no entry in the captions file"
        captions: list[dict[str, Any]] = []
        if raw is not None:
            try:
                triples = zip(raw["start"], raw["end"], raw["text"], strict=False)
                captions, dropped = _clean_captions([{"start": s, "end": e, "text": t} for s, e, t in triples])
                note = f"{dropped} caption(s) without text or with bad times" if dropped else "no captions"
            except (KeyError, TypeError):
                note = "malformed captions entry (needs start/end/text lists)"
        if not paths:
            names = "/".join(VIDEO_EXTS)
            entries.append(_entry(len(entries), vid, vid, skip=(R_MISSING, f"no {vid}.{{{names}}} under {videos}")))
            continue
        entries.append(_entry(len(entries), str(paths[0]), vid, paths[0], captions=captions, caption_note=note))
        for extra in paths[1:]:
            entries.append(_entry(len(entries), str(extra), vid,
                                  skip=(R_DUPLICATE, f"{paths[0].name} is used for id {vid}")))
    return entries


def list_audioset(videos: Path, segments: Path, need_video: bool = False) -> list[dict[str, Any]]:
    if not segments.is_file():
        raise FileNotFoundError(f"segments file {segments} does not exist")
    files = index_media_folder(videos, VIDEO_EXTS + AUDIO_EXTS)
    entries: list[dict[str, Any]] = []
    claimed: dict[str, str] = {}  # file -> id using it
    for seg in read_audioset_segments(segments):
        where = f"{segments.name}:{seg.line}"
        if isinstance(seg, MalformedRow):
            entries.append(_entry(len(entries), seg.text, where=where, skip=(R_BAD_ENTRY, seg.reason)))
            continue
        clip_id = seg.clip_id
        name = f"{seg.ytid},{seg.start_text},{seg.end_text}"
        stems = audioset_file_stems(seg.ytid, seg.start_text)
        paths = [p for stem in stems for p in files.get(stem, [])]
        if not paths:
            entries.append(_entry(len(entries), name, clip_id, where=where,
                                  skip=(R_MISSING, f"none of {', '.join(stems)} (any extension) under {videos}")))
            continue
        if str(paths[0]) in claimed:
            entries.append(_entry(len(entries), name, clip_id, where=where,
                                  skip=(R_DUPLICATE, f"{paths[0].name} is already used by {claimed[str(paths[0])]}")))
            continue
        claimed[str(paths[0])] = clip_id
        entries.append(_entry(len(entries), name, clip_id, paths[0], where=where,
                              labels={"audioset": list(seg.labels)}, need_video=need_video))
        for extra in paths[1:]:
            if str(extra) not in claimed:
                claimed[str(extra)] = clip_id
                entries.append(_entry(len(entries), str(extra), clip_id, where=where,
                                      skip=(R_DUPLICATE, f"{paths[0].name} is used for id {clip_id}")))
    return entries


def apply_parent_checks(entries: list[dict[str, Any]], require_captions: bool) -> None:
    """Duplicate ids and missing captions, in input order (the first of an id wins)."""
    seen: dict[str, str] = {}
    for e in entries:
        if e["skip"]:
            continue
        if e["id"] in seen:
            e["skip"] = [R_DUPLICATE, f"id {e['id']} already comes from {seen[e['id']]}"]
            continue
        seen[e["id"]] = e["input"]
        if require_captions and not e["captions"]:
            e["skip"] = [R_NO_CAPTIONS, e["caption_note"]]


# --------------------------------------------------------------------------- the worker side


