"""What a worker does with one input: probe, test-decode, transcode, build the sample, record the outcome."""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ...interrupts import obey_parent_only
from ..media import MediaError, media_name, open_media, probe_duration, read_clip, real_stream
from .common import (
    DECODE_CHECK_PACKETS,
    MAX_ATTEMPTS,
    STOP_FLAG,
    R_CRASH,
    R_ERROR,
    R_NO_STREAM,
    R_NO_VIDEO,
    R_TOO_SHORT,
    R_TRANSCODE,
    R_UNREADABLE,
    Skip,
)


def _probe(src: str | bytes) -> dict[str, Any]:
    """Duration (container header, else packet times), streams, and a decode check of the first frames."""
    duration = probe_duration(src)  # MediaError for unreadable files
    name = media_name(src)
    try:
        with open_media(src, name) as container:
            vstream = real_stream(container.streams.video)
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
                if duration > 0 and (len(decoded) == len(wanted) or n >= DECODE_CHECK_PACKETS):
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


def _even_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    def even(x: float) -> int:
        return max(2, 2 * round(x / 2))
    if width <= height:
        return short_side, even(height * scale)
    return even(width * scale), short_side


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class _Retimer:
    """Frames at a constant new rate: at each tick ``k / rate``, the source frame shown then.

    The frame shown at a time is the last one whose timestamp is at or before it
    (what ``read_clip`` takes for a target time), so decoding the re-timed stream at
    that rate gives the frames decoding the source would. Ticks start at the first
    frame (a stream that starts late keeps its offset); the last frame lasts its
    duration. ``eps``: timestamps within it of a tick count as on the tick.
    """

    def __init__(self, rate: Fraction, eps: float = 1e-3) -> None:
        self.rate, self.eps = rate, eps
        self.tick: int | None = None
        self.held: av.VideoFrame | None = None
        self.emitted = 0

    def _until(self, t: float) -> list[tuple[av.VideoFrame, int]]:
        out = []
        while self.held is not None and self.tick / self.rate + self.eps < t:
            out.append((self.held, self.tick))
            self.tick += 1
        self.emitted += len(out)
        return out

    def push(self, frame: av.VideoFrame, t: float) -> list[tuple[av.VideoFrame, int]]:
        """The (frame, tick) pairs that end where ``frame`` starts showing, at ``t``."""
        if self.tick is None:
            self.tick = max(0, math.ceil((t - self.eps) * self.rate))
        out = self._until(t)
        self.held = frame
        return out

    def flush(self, end: float) -> list[tuple[av.VideoFrame, int]]:
        """The ticks before ``end``, when the last frame stops showing (at least one tick in all)."""
        out = self._until(end)
        if not self.emitted and self.held is not None:  # shorter than a tick: keep one frame
            out, self.tick, self.emitted = [(self.held, self.tick)], self.tick + 1, 1
        return out


def _transcode(src: str, short_side: int, dst: Path, fps: float | None = None, tune: str | None = "fastdecode") -> bytes:
    """Re-encode to MP4: H.264 (short side ``short_side``, a keyframe every second) + AAC.

    ``tune``: x264's ``fastdecode`` (the default: CAVLC instead of CABAC, no deblocking filter): at the
    same CRF the same PSNR for ~11 % more bytes, and a loader decodes it ~2.4x
    faster (``bench/codecs.py``).

    ``fps``: the video at this constant frame rate (``_Retimer``), e.g. the training
    rate, so that a loader decodes only frames it keeps; None keeps the source's rate.
    """
    try:
        with av.open(src) as inp, av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vin = real_stream(inp.streams.video)
            ain = inp.streams.audio[0] if inp.streams.audio else None
            vout = aout = retimer = None
            if vin is not None:
                src_rate = Fraction(vin.average_rate or vin.guessed_rate or Fraction(25)).limit_denominator(1001)
                rate = src_rate if fps is None else Fraction(fps).limit_denominator(1001)
                retimer = _Retimer(rate) if fps is not None else None
                width, height = _even_size(vin.codec_context.width, vin.codec_context.height, short_side)
                # keyframes are forced at every whole second below; a longer GOP and no
                # scene-cut detection keep x264 from adding others
                gop = str(2 * max(1, round(float(rate))) + 1)
                vout = out.add_stream("libx264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
                vout.options = {"g": gop, "sc_threshold": "0", "preset": "veryfast", "crf": "23", **({"tune": tune} if tune else {})}
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
            last_time, frame_dur = None, 1 / float(src_rate) if vin is not None else 0.0

            def encode(frame: av.VideoFrame, pts: int) -> None:
                nonlocal last_key_second
                f = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
                f.pts, f.time_base = pts, 1 / rate
                second = math.floor(pts / rate)
                key = second > last_key_second
                f.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
                last_key_second = max(last_key_second, second)
                out.mux(vout.encode(f))

            for packet in inp.demux(streams):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:  # a damaged packet: skip it, as read_clip does
                    continue
                for frame in frames:
                    if isinstance(frame, av.VideoFrame):
                        t = frame.time
                        if retimer is not None:
                            # a frame without a timestamp follows the last one
                            t = (last_time + frame_dur if last_time is not None else 0.0) if t is None else t - origin
                            last_time = t
                            for held, tick in retimer.push(frame, t):
                                encode(held, tick)
                            continue
                        pts = last_pts + 1 if t is None else max(last_pts + 1, round(max(0.0, t - origin) * rate))
                        last_pts = pts
                        encode(frame, pts)
                    else:
                        sr = frame.sample_rate
                        pts = audio_next if frame.time is None else round(max(0.0, frame.time - origin) * sr)
                        pts = max(pts or 0, audio_next or 0)  # never overlap the previous frame
                        frame.pts, frame.time_base = pts, Fraction(1, sr)
                        audio_next = pts + frame.samples
                        out.mux(aout.encode(frame))
            if retimer is not None and last_time is not None:
                for held, tick in retimer.flush(last_time + frame_dur):
                    encode(held, tick)
            for s in (vout, aout):
                if s is not None:
                    out.mux(s.encode(None))
    except av.error.FFmpegError as e:
        raise Skip(R_TRANSCODE, f"{src}: {e}") from e
    return dst.read_bytes()


def _build_sample(cfg: dict[str, Any], item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    path = item["path"]
    info = _probe(path)
    if item["need_video"] and not info["has_video"]:
        raise Skip(R_NO_VIDEO, f"{path} has no video stream" + (" (audio only)" if info["has_audio"] else ""))
    if not info["has_video"] and not info["has_audio"]:
        raise Skip(R_NO_STREAM, f"{path} has no decodable audio or video stream")
    if info["duration"] < cfg["min_duration"]:
        raise Skip(R_TOO_SHORT, f"{info['duration']:.2f} s < {cfg['min_duration']:g} s")
    _check_decodes(path, info)
    if cfg["transcode"]:
        tmp = Path(cfg["work_dir"]) / f"transcode-{os.getpid()}-{uuid.uuid4().hex}.mp4"
        try:
            media = _transcode(path, cfg["transcode"], tmp, cfg.get("fps"), cfg.get("x264_tune", "fastdecode"))
        finally:
            tmp.unlink(missing_ok=True)
        try:
            info = _probe(media)
            _check_decodes(media, info)
        except MediaError as e:
            raise Skip(R_TRANSCODE, str(e)) from e
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


_SIGNALS_SET = False  # per worker process


def process_input(cfg: dict[str, Any], item_json: str) -> dict[str, Any] | None:
    """litdata's ``fn``: one sample, or None (litdata writes nothing) for a skipped input.

    Never raises (an exception in ``fn`` would stop the whole run): every outcome is
    appended to this worker's log file, which the parent merges at the end, and kept
    in ``done/<index>.json`` (+ ``done/<index>.media`` for a transcoded input) so that
    a rerun after an interruption re-emits it without probing or transcoding again.
    An input whose worker died on ``MAX_ATTEMPTS`` earlier attempts is skipped.
    """
    global _SIGNALS_SET
    if not _SIGNALS_SET:  # this worker was started with the stop signals blocked: its parent may still end it
        obey_parent_only()
        _SIGNALS_SET = True
    if (Path(cfg["work_dir"]) / STOP_FLAG).exists():
        return None  # a stop signal: take no new input (no record, so the rerun does it)
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
                raise Skip(R_CRASH, f"the worker processing it died on {earlier} earlier attempts (e.g. a decoder crash)")
            sample, info = _build_sample(cfg, item)
            record.update(status="kept", **info)
        except Skip as e:
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


