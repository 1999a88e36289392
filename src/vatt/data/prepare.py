"""Pack media files + captions into streaming shards (litdata's optimized format).

Three input kinds, one sub-command each::

    python -m vatt.data.prepare manifest  --manifest data/demo/train.jsonl --out data/shards/demo-train
    python -m vatt.data.prepare howto100m --videos VIDEOS/ --captions caption.json --out s3://bucket/howto100m
    python -m vatt.data.prepare audioset  --videos CLIPS/ --segments balanced_train_segments.csv --out ...

Every sample of the output is ``{"id": str, "media": bytes, "meta": str}`` where
``meta`` is the JSON of ``{"captions": [{"start", "end", "text"}, ...] (sorted by
start), "labels": {...}, "duration": float (probed), "source": str, "has_video":
bool, "has_audio": bool}``; ``media`` is the file's bytes (or, with
``--transcode N``, an H.264/AAC MP4 with short side N and a keyframe every second).

The parent lists the inputs and does the cheap checks (missing file, duplicate
id, captions); litdata's worker processes probe each file (streams, duration),
test-decode its first and last half second with ``read_clip`` (as training will;
this catches truncated files) and read (or transcode) it. An input that fails is
never fatal: it is recorded with its reason (worker skips go to per-worker JSONL
files in ``OUT/.prepare-tmp/``, merged by the parent at the end).
The output folder gets, next to litdata's ``index.json`` and ``chunk-*.bin``:

- ``skipped.jsonl``: one ``{"input", "reason", "detail", ...}`` line per skipped input;
- ``summary.json`` (written last: it marks the dataset as finished): counts of
  inputs, kept and skipped by reason, the arguments and a fingerprint of the
  arguments and inputs.

Re-running with the same arguments and unchanged inputs does nothing. Other
arguments or changed inputs rebuild the dataset from scratch, after deleting the
old chunks, so the folder never mixes two runs. An interrupted run (killed,
crashed worker, Ctrl-C: no ``summary.json``) resumes when rerun with the same
arguments: every input a worker finished is recorded in ``.prepare-tmp/done/``
(its outcome, and the transcoded file), and the rerun re-emits those without
probing or transcoding them again, so the chunks come out exactly as an
uninterrupted run writes them. An input whose worker died twice is skipped as
"crashed a worker". litdata's ``use_checkpoint`` resume is not used: it counts
*written samples* as processed inputs, so with skipped inputs a resumed run would
process some inputs twice.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import av

from .layouts import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    MalformedRow,
    audioset_file_stems,
    index_media_folder,
    read_audioset_segments,
)
from .media import MediaError, probe_duration, read_clip
from .objectstore import allow_plain_http

PREPARE_VERSION = 1
KINDS = ("manifest", "howto100m", "audioset")

# skip reasons (the "reason" of skipped.jsonl and the keys of summary["skipped_by_reason"])
R_BAD_ENTRY = "bad entry"  # a manifest line / CSV row that cannot be parsed
R_MISSING = "missing file"
R_DUPLICATE = "duplicate id"
R_NO_CAPTIONS = "no usable captions"  # only with require_captions
R_UNREADABLE = "unreadable"  # MediaError / FFmpeg error; detail: the message
R_NO_VIDEO = "no video stream"  # manifest / howto100m need video
R_NO_STREAM = "no audio or video stream"
R_TOO_SHORT = "too short"
R_TRANSCODE = "transcode failed"
R_ERROR = "error"  # an unexpected exception in a worker; detail: type and message
R_CRASH = "crashed a worker"  # the process handling it died (e.g. in FFmpeg) on MAX_ATTEMPTS runs
MAX_ATTEMPTS = 2

SUMMARY = "summary.json"
SKIPPED = "skipped.jsonl"
TMP_DIR = ".prepare-tmp"
# what a local output folder may contain before we delete chunks in it
_OURS = {SUMMARY, SKIPPED, TMP_DIR, "index.json", ".checkpoints"}

_DECODE_CHECK_PACKETS = 2000  # packets demuxed at most to find the first frame of each stream


class PrepareError(RuntimeError):
    """The run cannot produce a dataset (no valid input, a worker died, ...)."""


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# --------------------------------------------------------------------------- small helpers


def parse_bytes(value: int | str) -> int:
    """``64MB`` -> 64_000_000 (litdata's units: decimal k/m/g/t, optional trailing B)."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"chunk size must be positive, got {value}")
        return value
    raw = str(value).strip().lower()
    units = {"t": 1000**4, "g": 1000**3, "m": 1000**2, "k": 1000, "": 1}
    number = raw[:-1] if raw.endswith("b") else raw
    unit = number[-1:] if number[-1:] in ("t", "g", "m", "k") else ""
    try:
        result = int(float(number[: len(number) - len(unit)]) * units[unit])
    except ValueError:
        raise ValueError(f"cannot read the size {value!r} (use e.g. 64MB, 1GB or a number of bytes)") from None
    if result <= 0:
        raise ValueError(f"chunk size must be positive, got {value!r}")
    return result


def _clean_captions(raw: Any) -> tuple[list[dict[str, Any]], int]:
    """Valid captions sorted by (start, end) and the number dropped (empty text, bad times)."""
    if not isinstance(raw, list):
        return [], 0 if raw is None else 1
    kept, dropped = [], 0
    for c in raw:
        try:
            start, end, text = float(c["start"]), float(c["end"]), c["text"]
        except (KeyError, TypeError, ValueError):
            dropped += 1
            continue
        finite = math.isfinite(start) and math.isfinite(end)
        if not isinstance(text, str) or not text.strip() or not finite or end < start:
            dropped += 1
            continue
        kept.append({"start": start, "end": end, "text": text.strip()})
    kept.sort(key=lambda c: (c["start"], c["end"]))
    return kept, dropped


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


def _list_manifest(manifest: Path) -> list[dict[str, Any]]:
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist")
    entries = []
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where, index = f"{manifest.name}:{lineno}", len(entries)
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            entries.append(_entry(index, where, where=where, skip=(R_BAD_ENTRY, f"not JSON ({e.msg})")))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("video"), str) or not item["video"].strip():
            entries.append(_entry(index, where, where=where, skip=(R_BAD_ENTRY, "no 'video' path")))
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


def _list_howto100m(videos: Path, captions_file: Path) -> list[dict[str, Any]]:
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


def _list_audioset(videos: Path, segments: Path) -> list[dict[str, Any]]:
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
                              labels={"audioset": list(seg.labels)}, need_video=False))
        for extra in paths[1:]:
            if str(extra) not in claimed:
                claimed[str(extra)] = clip_id
                entries.append(_entry(len(entries), str(extra), clip_id, where=where,
                                      skip=(R_DUPLICATE, f"{paths[0].name} is used for id {clip_id}")))
    return entries


def _apply_parent_checks(entries: list[dict[str, Any]], require_captions: bool) -> None:
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


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream (cover art in audio files does not count)."""
    for s in container.streams.video:
        if not int(s.disposition) & int(av.stream.Disposition.attached_pic):
            return s
    return None


def _probe(src: str | bytes) -> dict[str, Any]:
    """Duration (container header, else packet times), streams, and a decode check of the first frames."""
    duration = probe_duration(src)  # MediaError for unreadable files
    name = f"<{len(src)} bytes>" if isinstance(src, (bytes, bytearray)) else str(src)
    try:
        with av.open(_source(src)) as container:
            vstream = _video_stream(container)
            astream = container.streams.audio[0] if container.streams.audio else None
            wanted = [s for s in (vstream, astream) if s is not None]
            v_index = vstream.index if vstream is not None else None
            a_index = astream.index if astream is not None else None
            a_rate = astream.rate if astream is not None else None
            decoded: set[int] = set()
            end_time = 0.0
            for n, packet in enumerate(container.demux(wanted)):
                if packet.pts is not None and packet.time_base is not None:
                    end_time = max(end_time, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if packet.stream.index not in decoded:
                    with contextlib.suppress(av.error.InvalidDataError):
                        if packet.decode():
                            decoded.add(packet.stream.index)
                if duration > 0 and (len(decoded) == len(wanted) or n >= _DECODE_CHECK_PACKETS):
                    break
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{name}: cannot read ({e})") from e
    if v_index is not None and v_index not in decoded:
        raise MediaError(f"{name}: no decodable video frame")
    if duration <= 0:
        duration = end_time
    return {
        "duration": float(duration),
        "has_video": v_index is not None,
        "has_audio": a_index is not None and a_index in decoded,
        "sample_rate": a_rate,
    }


def _check_decodes(src: str | bytes, info: dict[str, Any]) -> None:
    """Decode a short window at the start and one at the end with the loader's ``read_clip``.

    The end window catches truncated files (the header promises more than the data
    holds) and both catch streams without a decoder: what passes here decodes in training.
    """
    rate = info["sample_rate"] if info["has_audio"] and info["sample_rate"] else 16000  # native: no resampling
    frames = 2 if info["has_video"] else 0
    for start in sorted({0.0, max(0.0, info["duration"] - 0.5)}):
        read_clip(src, start, num_frames=frames, fps=10.0, sample_rate=rate, num_samples=rate // 5)


def _source(src: str | bytes) -> Any:
    return io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else str(src)


def _even_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    def even(x: float) -> int:
        return max(2, 2 * round(x / 2))
    if width <= height:
        return short_side, even(height * scale)
    return even(width * scale), short_side


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _transcode(src: str, short_side: int, dst: Path) -> bytes:
    """Re-encode to MP4: H.264 (short side ``short_side``, a keyframe every second) + AAC."""
    try:
        with av.open(src) as inp, av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vin = _video_stream(inp)
            ain = inp.streams.audio[0] if inp.streams.audio else None
            vout = aout = None
            if vin is not None:
                rate = vin.average_rate or vin.guessed_rate or Fraction(25)
                rate = Fraction(rate).limit_denominator(1001)
                width, height = _even_size(vin.codec_context.width, vin.codec_context.height, short_side)
                # keyframes are forced at every whole second below; a longer GOP and no
                # scene-cut detection keep x264 from adding others
                gop = str(2 * max(1, round(float(rate))) + 1)
                vout = out.add_stream("libx264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
                vout.options = {"g": gop, "sc_threshold": "0", "preset": "veryfast", "crf": "23"}
                vout.codec_context.time_base = 1 / rate
            if ain is not None:
                channels = ain.layout.nb_channels or 1
                arate = ain.rate if ain.rate in _AAC_RATES else 48000
                aout = out.add_stream("aac", rate=arate)
                aout.layout = "mono" if channels == 1 else "stereo"
            streams = [s for s in (vin, ain) if s is not None]
            if not streams:
                raise MediaError(f"{src}: no audio or video stream")
            # times from the container start (MPEG-TS starts at ~1.4 s), as read_clip counts
            # them; audio and video keep their offset to each other
            origin = inp.start_time / av.time_base if inp.start_time is not None else 0.0
            last_pts, last_key_second, audio_next = -1, -1, None
            for packet in inp.demux(streams):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:  # a damaged packet: skip it, as read_clip does
                    continue
                for frame in frames:
                    if isinstance(frame, av.VideoFrame):
                        t = frame.time
                        pts = last_pts + 1 if t is None else max(last_pts + 1, round(max(0.0, t - origin) * rate))
                        last_pts = pts
                        f = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
                        f.pts, f.time_base = pts, 1 / rate
                        second = math.floor(pts / rate)
                        key = second > last_key_second
                        f.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
                        last_key_second = max(last_key_second, second)
                        out.mux(vout.encode(f))
                    else:
                        sr = frame.sample_rate
                        pts = audio_next if frame.time is None else round(max(0.0, frame.time - origin) * sr)
                        pts = max(pts or 0, audio_next or 0)  # never overlap the previous frame
                        frame.pts, frame.time_base = pts, Fraction(1, sr)
                        audio_next = pts + frame.samples
                        out.mux(aout.encode(frame))
            for s in (vout, aout):
                if s is not None:
                    out.mux(s.encode(None))
    except av.error.FFmpegError as e:
        raise _Skip(R_TRANSCODE, f"{src}: {e}") from e
    return dst.read_bytes()


def _build_sample(cfg: dict[str, Any], item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    path = item["path"]
    info = _probe(path)
    if item["need_video"] and not info["has_video"]:
        raise _Skip(R_NO_VIDEO, f"{path} has no video stream" + (" (audio only)" if info["has_audio"] else ""))
    if not info["has_video"] and not info["has_audio"]:
        raise _Skip(R_NO_STREAM, f"{path} has no decodable audio or video stream")
    if info["duration"] < cfg["min_duration"]:
        raise _Skip(R_TOO_SHORT, f"{info['duration']:.2f} s < {cfg['min_duration']:g} s")
    _check_decodes(path, info)
    if cfg["transcode"]:
        tmp = Path(cfg["work_dir"]) / f"transcode-{os.getpid()}-{uuid.uuid4().hex}.mp4"
        try:
            media = _transcode(path, cfg["transcode"], tmp)
        finally:
            tmp.unlink(missing_ok=True)
        try:
            info = _probe(media)
            _check_decodes(media, info)
        except MediaError as e:
            raise _Skip(R_TRANSCODE, str(e)) from e
    else:
        with open(path, "rb") as f:
            media = f.read()
    meta = {
        "captions": item["captions"],
        "labels": item["labels"],
        "duration": info["duration"],
        "source": cfg["source"],
        "has_video": info["has_video"],
        "has_audio": info["has_audio"],
    }
    record = {
        "duration": info["duration"],
        "has_video": info["has_video"],
        "has_audio": info["has_audio"],
        "captions": len(item["captions"]),
        "bytes": len(media),
    }
    return {"id": item["id"], "media": media, "meta": json.dumps(meta)}, record


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _process(cfg: dict[str, Any], item_json: str) -> dict[str, Any] | None:
    """litdata's ``fn``: one sample, or None (litdata writes nothing) for a skipped input.

    Never raises (an exception in ``fn`` would stop the whole run): every outcome is
    appended to this worker's log file, which the parent merges at the end, and kept
    in ``done/<index>.json`` (+ ``done/<index>.media`` for a transcoded input) so that
    a rerun after an interruption re-emits it without probing or transcoding again.
    An input whose worker died on ``MAX_ATTEMPTS`` earlier attempts is skipped.
    """
    item = json.loads(item_json)
    done = Path(cfg["work_dir"]) / "done"
    result, cached = done / f"{item['index']}.json", done / f"{item['index']}.media"
    record: dict[str, Any] = {"index": item["index"], "id": item["id"], "input": item["input"], "where": item["where"]}
    sample = None
    if result.exists():  # finished by an earlier, interrupted run
        saved = json.loads(result.read_text(encoding="utf-8"))
        record = saved["record"] | {"resumed": True}
        if record["status"] == "kept":
            media = cached.read_bytes() if cfg["transcode"] else Path(item["path"]).read_bytes()
            sample = {"id": item["id"], "media": media, "meta": saved["meta"]}
    else:
        attempts = Path(cfg["work_dir"]) / "attempts" / str(item["index"])
        earlier = attempts.stat().st_size if attempts.exists() else 0
        with open(attempts, "ab") as f:
            f.write(b"x")
        try:
            if earlier >= MAX_ATTEMPTS:
                raise _Skip(R_CRASH, f"the worker processing it died on {earlier} earlier attempts (e.g. a decoder crash)")
            sample, info = _build_sample(cfg, item)
            record.update(status="kept", **info)
        except _Skip as e:
            record.update(status="skipped", reason=e.reason, detail=e.detail)
        except MediaError as e:
            record.update(status="skipped", reason=R_UNREADABLE, detail=str(e))
        except Exception as e:  # noqa: BLE001 - a bad file must never stop the run
            record.update(status="skipped", reason=R_ERROR, detail=f"{type(e).__name__}: {e}")
        if record["status"] == "kept" and cfg["transcode"]:
            _atomic_write(cached, sample["media"])
        _atomic_write(result, json.dumps({"record": record, "meta": sample and sample["meta"]}).encode())
    line = json.dumps(record) + "\n"
    with open(Path(cfg["log_dir"]) / f"worker-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
        f.write(line)
    return sample if record["status"] == "kept" else None


# --------------------------------------------------------------------------- output folder (local or object store)


class _Out:
    def __init__(self, out: str | Path) -> None:
        self.spec = str(out)
        self.remote = "://" in self.spec
        if self.remote:
            from litdata.streaming.fs_provider import _get_fs_provider

            self.url = self.spec.rstrip("/")
            self.fs = _get_fs_provider(self.url, {})
            self.path = None
        else:
            self.path = Path(out).absolute()

    def read_text(self, name: str) -> str | None:
        try:
            if not self.remote:
                return (self.path / name).read_text(encoding="utf-8")
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, name)
                if not self.fs.exists(f"{self.url}/{name}"):
                    return None
                self.fs.download_file(f"{self.url}/{name}", local)
                return Path(local).read_text(encoding="utf-8")
        except (OSError, ValueError):
            return None

    def exists(self, name: str) -> bool:
        return (self.path / name).exists() if not self.remote else self.fs.exists(f"{self.url}/{name}")

    def write_text(self, name: str, text: str) -> None:
        if not self.remote:
            partial = self.path / f"{name}.partial"
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, self.path / name)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            Path(local).write_text(text, encoding="utf-8")
            self.fs.upload_file(local, f"{self.url}/{name}")

    def delete(self, name: str) -> None:
        if not self.remote:
            (self.path / name).unlink(missing_ok=True)
            (self.path / f"{name}.partial").unlink(missing_ok=True)
        elif self.fs.exists(f"{self.url}/{name}"):
            self.fs.delete_file_or_directory(f"{self.url}/{name}")

    def check_ours(self) -> None:
        """Refuse to delete chunks in a local folder that holds other things."""
        if self.remote or not self.path.exists():
            return
        if not self.path.is_dir():
            raise NotADirectoryError(f"--out {self.path} is a file")
        foreign = sorted(
            p.name for p in self.path.iterdir()
            if p.name not in _OURS and not p.name.endswith((".bin", ".partial", "index.json"))
        )
        if foreign:
            raise FileExistsError(
                f"--out {self.path} holds files that prepare did not write ({', '.join(foreign[:5])}); "
                "use an empty or new folder"
            )

    def work_dir(self, fingerprint: str) -> Path:
        """The local scratch folder (worker logs, finished inputs, litdata's cache, transcode files).

        ``<out>/.prepare-tmp`` (a remote ``out``: a folder in the system's temp dir named
        after it). Kept from an interrupted run with the same ``fingerprint`` (same
        arguments and inputs), so its finished inputs are not processed again;
        emptied otherwise.
        """
        if self.remote:
            key = hashlib.sha256(self.spec.encode()).hexdigest()[:16]
            tmp = Path(tempfile.gettempdir()) / f"vatt-prepare-{key}"
        else:
            tmp = self.path / TMP_DIR
        stamp = tmp / "fingerprint"
        if not (stamp.is_file() and stamp.read_text() == fingerprint):
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp / "cache", ignore_errors=True)  # litdata's own, per run
        for sub in ("logs", "done", "attempts"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        return tmp


# --------------------------------------------------------------------------- reporting


def _report(console: Any, summary: dict[str, Any], skipped: list[dict[str, Any]], examples: int = 3) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]{summary['kind']}[/bold] -> {escape(summary['out'])}: {summary['inputs']} inputs, "
        f"[green]{summary['kept']} kept[/green], [yellow]{summary['skipped']} skipped[/yellow]"
        + (f" ({_fmt_duration(summary['kept_seconds'])} of media)" if summary.get("kept_seconds") else "")
    )
    if not skipped:
        return
    table = Table(title="skipped inputs", show_lines=False)
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column(f"first {examples} examples", overflow="fold")
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in skipped:
        by_reason[r["reason"]].append(r)
    for reason, records in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        lines = [f"{r['input']}: {r['detail']}" if r.get("detail") else r["input"] for r in records[:examples]]
        table.add_row(reason, str(len(records)), escape("\n".join(lines)))
    console.print(table)
    console.print(f"every skipped input is listed in {summary['out'].rstrip('/')}/{SKIPPED}", markup=False)


def _fmt_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _skip_record(e: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    record = {"input": e["input"], "reason": reason, "detail": detail, "id": e["id"]}
    if e.get("where"):
        record["where"] = e["where"]
    return record


# --------------------------------------------------------------------------- the API


def _default_start_method() -> str | None:
    # fork starts the workers in a fraction of a second (spawn re-imports torch in each).
    # The workers use PyAV and read_clip's few single-threaded torch ops (the check reads
    # audio at its native rate: no resampling), as forked DataLoader workers do.
    return "fork" if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _index_count(out: _Out) -> int:
    text = out.read_text("index.json")
    if text is None:
        raise PrepareError(f"{out.spec}: litdata wrote no index.json")
    return sum(int(c["chunk_size"]) for c in json.loads(text)["chunks"])


def prepare(
    kind: str,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    videos: str | Path | None = None,
    captions: str | Path | None = None,
    segments: str | Path | None = None,
    workers: int = 1,
    chunk_bytes: int | str = "64MB",
    require_captions: bool = False,
    min_duration: float = 1.0,
    transcode: int | None = None,
    source: str | None = None,
    progress: bool = True,
    start_method: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the litdata dataset for one input kind into ``out``; return the summary.

    The returned dict is the content of ``out/summary.json`` plus ``up_to_date``
    (True when an identical finished dataset was already there and nothing was done).

    - ``workers``: litdata worker processes; ``start_method``: how they start (default
      fork on Linux, which starts them in milliseconds; spawn re-imports torch in each).
    - ``chunk_bytes``: shard size, e.g. ``"64MB"`` (decimal units, as litdata's).
    - ``transcode``: None stores the original bytes; an even N re-encodes to MP4
      (H.264, short side N, a keyframe every second; AAC audio).
    - ``force``: rebuild even when the output is up to date.
    Raises ``ValueError`` for bad arguments, ``FileExistsError`` when a local ``out``
    holds files prepare did not write, ``PrepareError`` when no input is usable or a
    worker died (the output is then left unfinished: no ``summary.json``).
    """
    from rich.console import Console

    t0 = time.perf_counter()
    console = Console(highlight=False, soft_wrap=True)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    needs = {"manifest": {"manifest": manifest}, "howto100m": {"videos": videos, "captions": captions},
             "audioset": {"videos": videos, "segments": segments}}[kind]
    missing = [f"--{k}" for k, v in needs.items() if v is None]
    if missing:
        raise ValueError(f"{kind} needs {' and '.join(missing)}")
    if kind == "audioset" and require_captions:
        raise ValueError("AudioSet clips have no captions: --require-captions would skip them all")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if transcode is not None and (int(transcode) < 2 or int(transcode) % 2):
        raise ValueError(f"--transcode needs an even short side >= 2 (H.264 4:2:0), got {transcode}")
    if not (min_duration >= 0):
        raise ValueError(f"min_duration must be >= 0, got {min_duration}")
    chunk = parse_bytes(chunk_bytes)
    source = source or kind
    args = {
        "kind": kind, "out": str(out), "manifest": manifest and str(manifest), "videos": videos and str(videos),
        "captions": captions and str(captions), "segments": segments and str(segments), "workers": int(workers),
        "chunk_bytes": chunk, "require_captions": bool(require_captions), "min_duration": float(min_duration),
        "transcode": int(transcode) if transcode is not None else None, "source": source,
    }

    # 1. list the inputs, cheap checks in the parent
    if kind == "manifest":
        entries = _list_manifest(Path(manifest))
    elif kind == "howto100m":
        entries = _list_howto100m(Path(videos), Path(captions))
    else:
        entries = _list_audioset(Path(videos), Path(segments))
    _apply_parent_checks(entries, require_captions)
    todo = [e for e in entries if not e["skip"]]

    # 2. fingerprint: everything the output depends on (not workers / progress)
    def stat(p: str | None) -> list[int] | None:
        if p is None:
            return None
        s = os.stat(p)
        return [s.st_size, s.st_mtime_ns]

    fp_args = {k: v for k, v in args.items() if k not in ("out", "workers")}
    fp_args.update({k: str(Path(v).absolute()) for k, v in needs.items()})
    hasher = hashlib.sha256(json.dumps({"version": PREPARE_VERSION, "args": fp_args}, sort_keys=True).encode())
    for e in entries:  # one at a time: HowTo100M's captions are gigabytes as one string
        row = [e["id"], e["input"], e["path"], stat(e["path"]) if not e["skip"] else None, e["captions"],
               e["labels"], e["need_video"], e["skip"]]
        hasher.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    fingerprint = hasher.hexdigest()

    allow_plain_http()  # an http:// AWS_ENDPOINT_URL (set after import)
    dest = _Out(out)
    old = None if force else dest.read_text(SUMMARY)
    if old is not None:
        with contextlib.suppress(ValueError):
            summary = json.loads(old)
            if summary.get("fingerprint") == fingerprint and summary.get("complete") and dest.exists("index.json"):
                console.print(
                    f"{dest.spec}: up to date ({summary['kept']} clips kept, {summary['skipped']} inputs skipped, "
                    f"same arguments and inputs as the finished run there); nothing to do (--force rebuilds)",
                    markup=False,
                )
                return {**summary, "up_to_date": True}

    parent_skips = [_skip_record(e, *e["skip"]) | {"_index": e["index"]} for e in entries if e["skip"]]
    if not todo:
        summary = {"kind": kind, "out": dest.spec, "inputs": len(entries), "kept": 0, "skipped": len(entries)}
        _report(console, summary, parent_skips)
        raise PrepareError(f"{kind}: no usable input ({len(entries)} inputs, all skipped); {dest.spec} is unchanged")

    # 3. build: invalidate the old dataset first (summary.json marks a finished one),
    #    then litdata deletes the old index and chunks (mode="overwrite")
    dest.check_ours()
    dest.delete(SUMMARY)
    dest.delete(SKIPPED)
    if dest.path is not None:
        dest.path.mkdir(parents=True, exist_ok=True)
    work = dest.work_dir(fingerprint)
    log_dir = work / "logs"
    finished_before = {int(p.stem) for p in (work / "done").glob("*.json")}
    resumed = sum(1 for e in todo if e["index"] in finished_before)
    if resumed:
        console.print(f"resuming an interrupted run: {resumed} of {len(todo)} inputs were finished before and are "
                      "not processed again", markup=False)
    cfg = {"log_dir": str(log_dir), "work_dir": str(work), "min_duration": float(min_duration),
           "transcode": args["transcode"], "source": source}
    n_workers = min(int(workers), len(todo))
    console.print(
        f"{kind}: {len(entries)} inputs, {len(entries) - len(todo)} skipped by the first checks, "
        f"{len(todo)} to probe{' and transcode' if transcode else ''} with {n_workers} worker(s) -> {dest.spec}",
        markup=False,
    )
    finished = False
    try:
        # litdata sets the process-wide start method and a SIGINT handler: put both back afterwards
        old_sigint, old_method = signal.getsignal(signal.SIGINT), mp.get_start_method(allow_none=True)
        import litdata

        try:
            with _environ(DATA_OPTIMIZER_CACHE_FOLDER=str(work / "cache" / "chunks"),
                          DATA_OPTIMIZER_DATA_CACHE_FOLDER=str(work / "cache" / "data")):
                litdata.optimize(
                    fn=functools.partial(_process, cfg),
                    inputs=[json.dumps(e) for e in todo],
                    output_dir=dest.spec if dest.remote else str(dest.path),
                    chunk_bytes=chunk,
                    num_workers=n_workers,
                    mode="overwrite",
                    verbose=progress,
                    start_method=start_method or _default_start_method(),
                )
        finally:
            signal.signal(signal.SIGINT, old_sigint)
            mp.set_start_method(old_method, force=True)

        # 4. merge the workers' logs, check that nothing got lost, write the reports
        records: dict[int, dict[str, Any]] = {}
        for log_file in sorted(log_dir.glob("worker-*.jsonl")):
            for line in log_file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    records[r["index"]] = r
        lost = [e["input"] for e in todo if e["index"] not in records]
        kept = [r for r in records.values() if r["status"] == "kept"]
        written = _index_count(dest) if kept else 0
        if lost or written != len(kept):
            dest.delete("index.json")  # so nothing streams the partial dataset; the next run starts over
            raise PrepareError(
                f"{dest.spec}: incomplete run ({len(lost)} inputs without a result, e.g. {lost[:3]}; "
                f"{written} samples written for {len(kept)} kept); rerun the same command: inputs finished so far are "
                "not processed again"
            )
        worker_skips = [_skip_record(r, r["reason"], r["detail"]) | {"_index": r["index"]}
                        for r in records.values() if r["status"] == "skipped"]
        skipped = sorted(parent_skips + worker_skips, key=lambda r: r.pop("_index"))
        counts = Counter(r["reason"] for r in skipped)
        summary = {
            "version": PREPARE_VERSION,
            "complete": True,
            "fingerprint": fingerprint,
            "kind": kind,
            "source": source,
            "out": dest.spec,
            "args": args,
            "inputs": len(entries),
            "kept": len(kept),
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(counts.items())),
            "kept_seconds": round(sum(r["duration"] for r in kept), 3),
            "kept_with_captions": sum(1 for r in kept if r["captions"]),
            "kept_audio_only": sum(1 for r in kept if not r["has_video"]),
            "kept_without_audio": sum(1 for r in kept if not r["has_audio"]),
            "media_bytes": sum(r["bytes"] for r in kept),
            "resumed_inputs": resumed,
            "elapsed_s": round(time.perf_counter() - t0, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {"skipped": SKIPPED},
        }
        dest.write_text(SKIPPED, "".join(json.dumps(r) + "\n" for r in skipped))
        _report(console, summary, skipped)
        if not kept:
            dest.delete("index.json")  # litdata's empty index: nothing to stream
            raise PrepareError(f"{kind}: every input was skipped; see {dest.spec.rstrip('/')}/{SKIPPED}")
        dest.write_text(SUMMARY, json.dumps(summary, indent=2) + "\n")  # last: marks the dataset as finished
        finished = True
        return {**summary, "up_to_date": False}
    finally:
        if finished:
            shutil.rmtree(work, ignore_errors=True)  # an unfinished run keeps it: the rerun resumes from it


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> dict[str, Any]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder or object-store URL (s3://bucket/prefix)")
    common.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all CPUs)")
    common.add_argument("--chunk-bytes", default="64MB", help="shard size (default: 64MB)")
    common.add_argument("--require-captions", action="store_true", help="skip clips without a usable caption")
    common.add_argument("--min-duration", type=float, default=1.0, help="skip shorter clips (seconds, default 1.0)")
    common.add_argument("--transcode", type=int, default=None, metavar="SHORT_SIDE",
                        help="re-encode to H.264 (short side SHORT_SIDE, a keyframe per second) + AAC; "
                             "default: store the original bytes")
    common.add_argument("--source", default=None, help="name stored in every record (default: the sub-command)")
    common.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default=None,
                        help="how workers start (default: fork on Linux)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--force", action="store_true", help="rebuild even when --out is up to date")

    parser = argparse.ArgumentParser(prog="python -m vatt.data.prepare", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("manifest", parents=[common], help="our JSONL manifest")
    p.add_argument("--manifest", required=True, help="JSONL file; video paths relative to its folder")
    p = sub.add_parser("howto100m", parents=[common], help="HowTo100M videos + caption.json")
    p.add_argument("--videos", required=True, help="folder of <id>.<mp4|mkv|webm|mov|avi>")
    p.add_argument("--captions", required=True, help="caption.json: id -> {start: [..], end: [..], text: [..]}")
    p = sub.add_parser("audioset", parents=[common], help="AudioSet clips + segments CSV")
    p.add_argument("--videos", required=True, help="folder of <YTID>_<start>.<ext> (video or audio files)")
    p.add_argument("--segments", required=True, help="AudioSet segments CSV (YTID, start, end, labels)")
    a = parser.parse_args(argv)

    try:
        return prepare(
            a.kind, a.out, manifest=getattr(a, "manifest", None), videos=getattr(a, "videos", None),
            captions=getattr(a, "captions", None), segments=getattr(a, "segments", None), workers=a.workers,
            chunk_bytes=a.chunk_bytes, require_captions=a.require_captions, min_duration=a.min_duration,
            transcode=a.transcode, source=a.source, progress=not a.no_progress, start_method=a.start_method,
            force=a.force,
        )
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PrepareError) as e:
        parser.exit(2, f"prepare: error: {e}\n")


if __name__ == "__main__":
    main()
