"""The one function that decodes audio-video clips, for every dataset.

``read_clip`` seeks to a time window and returns frames sampled at a target
frame rate plus the mono waveform of the same window at a target sample rate.

Times: ``start`` is seconds from the beginning of the media, i.e. from the
container's start time.  MPEG-TS/PS files usually start at 0.5-1.4 s, mp4 edit
lists and encoder priming move streams too; every timestamp is taken relative
to ``container.start_time`` so that ``start=0`` is the first thing in the file
and audio and video keep their relative offset (audio that starts 1 s after
the video gives 1 s of zeros).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import av
import av.video.reformatter
import numpy as np
import torch
import torchaudio.functional as AF

# Seek this far before the window: audio packets near a video keyframe can start
# slightly after it, and some demuxers land just past the requested time.
_SEEK_MARGIN_S = 0.5
# When a seek still lands after the window (demuxers without an index bisect by
# timestamp and then wait for the next keyframe), retry this much earlier; after
# the last one decode from the beginning, which is always right.
_SEEK_RETRY_S = (3.0, 15.0)
# Once every video target is filled, keep demuxing (for audio) at most this far past
# the window: interleaving in real files stays well within it, and audio that ended
# early must not make us read the rest of a long file.
_DEMUX_SLACK_S = 5.0
# Tail of the audio window that may be missing without calling the clip padded
# (codecs trim their last frame to the sample, containers round to the ms).
_AUDIO_PAD_TOL_S = 0.005
# A header that claims this much more media than the data holds means a truncated file.
_TRUNCATION_TOL_S = 1.0

_NO_TIMESTAMPS = av.format.Flags.no_timestamps.value
_SEEK_UNRELIABLE = {"mpeg"}  # MPEG-PS demuxer (.mpg/.vob): see read_clip
# Demuxers whose duration is an estimate (raw streams, MPEG-PS/TS): no truncation check.
_ESTIMATED_DURATION = _NO_TIMESTAMPS | av.format.Flags.generic_index.value | av.format.Flags.ts_discont.value


class MediaError(ValueError):
    """A media file that cannot be decoded; the message names the source and the reason."""


@dataclass
class Clip:
    video: np.ndarray  # uint8 [num_frames, H, W, 3] RGB; with output="yuv420p" the luma plane [num_frames, H, W]
    audio: np.ndarray  # float32 [num_samples], mono
    has_audio: bool  # False when the file has no audio stream (audio is zeros)
    padded: bool  # the window ran past the end: last frame repeated / audio zero-filled
    # output="yuv420p": the chroma planes, uint8 [num_frames, 2 (U, V), ceil(H/2), ceil(W/2)], limited range
    chroma: np.ndarray | None = None
    bt709: bool = False  # output="yuv420p": the frames' colour matrix is BT.709 (else BT.601, FFmpeg's default)


OUTPUTS = ("rgb", "yuv420p")


def media_name(src: str | Path | bytes) -> str:
    """How messages name a source: its path, or ``<N bytes>`` for media in memory."""
    return f"<{len(src)} bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)


def open_media(src: str | Path | bytes, name: str) -> av.container.InputContainer:
    """``av.open`` a path or bytes; an empty or unopenable source raises ``MediaError`` naming it."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:  # FFmpeg's probe reports an empty buffer as a bare EOF
            raise MediaError(f"{name}: cannot open (empty input)")
        source: str | io.BytesIO = io.BytesIO(src)
    else:
        source = str(src)
        if Path(source).is_file() and Path(source).stat().st_size == 0:
            raise MediaError(f"{name}: cannot open (empty file)")
    try:
        return av.open(source)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{name}: cannot open ({e})") from e


def probe_duration(src: str | Path | bytes) -> float:
    """Duration in seconds from the container header (0.0 when unknown)."""
    name = media_name(src)
    with open_media(src, name) as container:
        if container.duration is not None:
            return container.duration / av.time_base
        durations = [float(s.duration * s.time_base) for s in container.streams if s.duration]
        return max(durations, default=0.0)


def _resize_dims(width: int, height: int, short_side: int | None,
                 stretch: tuple[float, float] | None = None) -> tuple[int, int]:
    if stretch is not None:  # (height, width) factors: an aspect-ratio change before the short-side resize
        height, width = height * stretch[0], width * stretch[1]
    if short_side is None:
        return round(width), round(height)
    scale = short_side / min(width, height)
    # never below the short side (rounding could make the long side 1 pixel short)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def audio_array(frame: av.AudioFrame) -> np.ndarray:
    """Decoded audio frame -> float32 mono ``[n]`` (channels averaged)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        arr = (arr.astype(np.float32) - (info.min + info.max + 1) / 2) / (info.max + 1)
    arr = arr.astype(np.float32, copy=False)
    return arr[0] if len(arr) == 1 else arr.mean(axis=0)  # mono: no averaging pass


def real_stream(streams):
    """The first stream that is not an attached picture (cover art in audio files is a one-picture "video")."""
    for s in streams:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    return None


class _Retry(Exception):
    """The decode landed after the window (or cannot be placed in time): seek earlier."""


def read_clip(
    src: str | Path | bytes,
    start: float,
    num_frames: int,
    fps: float,
    sample_rate: int,
    num_samples: int,
    short_side: int | None = None,
    stretch: tuple[float, float] | None = None,
    output: str = "rgb",
) -> Clip:
    """Decode the window ``[start, start + num_frames / fps)`` of a media file.

    - ``src``: a path or the file's bytes (decoded from memory).
    - ``start``: seconds from the beginning of the media (the container start time
      is subtracted, see the module docstring).
    - Frames: for each target time ``start + i / fps``, the frame displayed at that
      time, resized so the short side is ``short_side`` (None keeps the size);
      ``stretch=(fh, fw)`` first scales height and width by independent factors (the
      aspect-ratio jitter of training), in the same resize.
      Frames without timestamps (raw streams) are placed by index and stream rate.
    - Audio: ``num_samples`` mono samples at ``sample_rate`` from ``start``,
      downmixed and resampled with torchaudio; zeros where the file has no audio.
    - ``output="yuv420p"``: the decoded planes as they are (no colour conversion, no
      resize: what a loader worker hands over when the crop, resize and colour
      conversion run batched on the training device, ``vatt.data.clip.finish_batch``);
      ``short_side`` is then a cap (larger frames are shrunk to it, smaller kept) and
      ``stretch`` must be None. Frames stored otherwise (other pixel formats, full
      range) are converted to limited-range yuv420p.
    - ``num_frames=0`` reads audio only (files without video are then valid).
    - ``padded``: part of the window lies past the end (last frame repeated, audio zeros).
    Raises ``MediaError`` naming the source for unreadable input.
    """
    name = media_name(src)
    if num_frames < 0 or num_samples < 0 or (num_frames > 0 and fps <= 0) or sample_rate <= 0:
        raise ValueError(f"read_clip: bad window (num_frames={num_frames}, fps={fps}, num_samples={num_samples})")
    if output not in OUTPUTS or (output == "yuv420p" and stretch is not None):
        raise ValueError(f"read_clip: output={output!r} (choose one of {OUTPUTS}; yuv420p takes no stretch)")
    container = open_media(src, name)
    try:
        vstream = real_stream(container.streams.video)
        astream = real_stream(container.streams.audio)
        if num_frames > 0 and vstream is None:
            raise MediaError(f"{name}: no video stream")
        if num_frames == 0 and astream is None:
            raise MediaError(f"{name}: no audio stream")
        for s in (vstream if num_frames > 0 else None, astream):
            if s is not None and s.codec_context.codec is None:
                raise MediaError(f"{name}: no decoder for {s.type} codec {s.codec_context.name!r}")
        # Raw elementary streams (.h264, .m2v) carry no timestamps: the parser invents
        # some, often off by a frame. Place their frames by index from the beginning
        # (byte seeks cannot tell where they land).
        untimed = bool(container.format.flags & _NO_TIMESTAMPS)
        # MPEG program streams have no index: a seek bisects by timestamp, and the parser
        # then stamps frames a frame late, depending on where it landed. Read
        # those from the beginning, skipping (not decoding) what lies before the window.
        seekable = not untimed and container.format.name not in _SEEK_UNRELIABLE
        # Seek targets, earliest last; None reads from the beginning, which never retries.
        tries = [start - back for back in (_SEEK_MARGIN_S, *_SEEK_RETRY_S) if seekable and start - back > 0]
        for seek_to in (*tries, None):
            try:
                return _decode(container, name, vstream, astream, seek_to, untimed,
                               start, num_frames, fps, short_side, sample_rate, num_samples, stretch, output)
            except _Retry:
                # reopen rather than seek again: the demuxer may sit at EOF after a bad landing
                container.close()
                container = open_media(src, name)
                vstream = real_stream(container.streams.video)
                astream = real_stream(container.streams.audio)
        raise AssertionError("unreachable: decoding from the beginning does not retry")
    finally:
        container.close()


def _decode(container, name, vstream, astream, seek_to, untimed, start, num_frames, fps, short_side,
            sample_rate, num_samples, stretch=None, output="rgb") -> Clip:
    """One decode of the window, after seeking to ``seek_to`` (None: from the beginning)."""
    origin = container.start_time / av.time_base if container.start_time is not None else 0.0
    want_video = num_frames > 0
    streams = [s for s in (vstream if want_video else None, astream) if s is not None]
    for s in streams:
        s.thread_type = "AUTO"
    v_end = start + num_frames / fps if want_video else start
    a_end = start + num_samples / sample_rate
    end = max(v_end, a_end)
    seeked = seek_to is not None
    video = _VideoSampler(vstream, origin, start, num_frames, fps, short_side, untimed, seeked, stretch,
                          output) if want_video else None
    audio = _AudioCollector(astream, origin, start, num_samples / sample_rate, seeked) if astream else None
    if seeked:
        try:
            # default stream (video when there is one): lands on a keyframe at or before
            container.seek(int((seek_to + origin) * av.time_base), backward=True, any_frame=False)
        except av.error.FFmpegError:
            raise _Retry() from None
    vindex = vstream.index if video is not None else -1
    aindex = astream.index if audio is not None else -1
    # Reading from the beginning, packets well before the window are demuxed but not
    # decoded: video packets since the last keyframe wait in `gop` until the window is
    # near; audio packets are dropped (they decode independently; 1 s of pre-roll
    # lets MDCT overlap settle). Untimed streams must decode every frame to count them.
    skip_video = skip_audio = not seeked and not untimed and start > _SEEK_MARGIN_S
    gop: list[av.Packet] = []
    # float time bases: Fraction arithmetic per packet costs more than the rest of the loop
    tbs = [float(s.time_base) if s.time_base else 0.0 for s in container.streams]
    data_end = -math.inf  # media time of the last packet demuxed, any stream (for the truncation check)
    at_eof, errors, audio_seen = True, [], False
    try:
        # all streams (av_read_frame reads them anyway) so data_end sees where the file really ends
        for packet in container.demux():
            index = packet.stream.index  # not packet.stream_index: 0 on the flush packets PyAV makes
            ts = packet.dts
            if ts is None:
                ts = packet.pts
            t = ts * tbs[index] - origin if ts is not None and index < len(tbs) else None
            if t is not None and t > data_end:
                data_end = t
            if index == vindex and not video.done:
                if skip_video:
                    if packet.is_keyframe:
                        gop.clear()
                    gop.append(packet)
                    if t is not None and t < start - _SEEK_MARGIN_S:
                        continue
                    skip_video = False  # near the window (or no timestamp, or the end): decode the GOP
                    todo, gop = gop, []
                else:
                    todo = [packet]
                for p in todo:
                    _decode_into(p, video, errors)
            elif index == aindex:
                audio_seen = audio_seen or packet.size > 0
                if skip_audio and packet.pts is not None and t is not None and t < start - 1.0:
                    continue
                skip_audio = False
                _decode_into(packet, audio, errors)
            if (video is None or video.done) and (audio is None or audio.done):
                at_eof = False
                break
            if (video is None or video.done) and data_end > end + _DEMUX_SLACK_S:
                at_eof = False  # the audio stream ended before the window end
                break
    except av.error.FFmpegError as e:
        raise MediaError(f"{name}: decoding failed ({e})") from e
    return _assemble(container, name, video, audio, astream is not None, seeked, at_eof, errors, audio_seen,
                     data_end, sample_rate, num_samples)


def _assemble(container, name: str, video: _VideoSampler | None, audio: _AudioCollector | None, has_audio: bool,
              seeked: bool, at_eof: bool, errors: list[str], audio_seen: bool, data_end: float, sample_rate: int,
              num_samples: int) -> Clip:
    """The clip from what one decode collected; a retry, or a ``MediaError`` naming what is wrong with the file."""
    reason = f" ({errors[0]})" if errors else " (no media data: only a header?)" if data_end == -math.inf else ""
    if seeked and ((video is not None and video.first is None) or (video is None and audio.first is None)):
        raise _Retry()  # nothing after the seek point: maybe it overshot (bisecting demuxers)
    chroma, bt709 = None, False
    if video is not None:
        if video.first is None:
            raise MediaError(f"{name}: no decodable video frame{reason}")
        frames, v_padded = video.result()
        if video.output == "yuv420p":
            chroma, bt709 = video.chroma, video.bt709
    else:
        frames, v_padded = np.zeros((0, 0, 0, 3), np.uint8), False
    if audio is not None:
        if video is None and audio.first is None and (errors or not audio_seen):  # else: all before the window
            raise MediaError(f"{name}: no decodable audio{reason}")
        wave, a_padded = audio.result(sample_rate, num_samples)
    else:
        wave, a_padded = np.zeros(num_samples, np.float32), False
    padded = v_padded or a_padded
    if padded and at_eof and container.duration is not None and not (container.format.flags & _ESTIMATED_DURATION):
        # the data stops inside the window while the header says the media goes on
        claimed = container.duration / av.time_base
        if claimed > data_end + _TRUNCATION_TOL_S:
            raise MediaError(f"{name}: truncated (data ends at {max(data_end, 0):.2f} s, header says {claimed:.2f} s)")
    return Clip(video=frames, audio=wave, has_audio=has_audio, padded=padded, chroma=chroma, bt709=bt709)


def _decode_into(packet: av.Packet, sink, errors: list[str]) -> None:
    try:
        frames = packet.decode()
    except av.error.InvalidDataError as e:  # a damaged packet: skip it, keep going
        errors.append(str(e))
        return
    for frame in frames:
        sink.add(frame)


def _tick_eps(stream) -> float:
    """Timestamps are rounded to the stream's tick (mkv/webm: 1 ms): compare with half a tick."""
    tick = float(stream.time_base) if stream.time_base else 1e-3
    return min(tick / 2, 1e-3) + 1e-9


class _VideoSampler:
    """Keeps, for each target time, the last frame whose timestamp is <= that time."""

    def __init__(self, stream, origin: float, start: float, num_frames: int, fps: float, short_side: int | None,
                 untimed: bool, seeked: bool, stretch: tuple[float, float] | None = None, output: str = "rgb") -> None:
        self.tb = float(stream.time_base) if stream.time_base else 0.0
        self.origin = origin
        self.stream_rate = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
        self.untimed, self.seeked = untimed, seeked
        self.eps = _tick_eps(stream)
        # a window that starts before the stream (video starting late) never "lands late"
        s0 = stream.start_time
        self.stream_start = float(s0 * stream.time_base) - origin if s0 is not None and not untimed else 0.0
        self.start = start
        self.times = start + np.arange(num_frames) / fps
        self.short_side, self.stretch = short_side, stretch
        self.out: list[np.ndarray | None] = [None] * num_frames
        self.output = output
        self.out_chroma: list[np.ndarray | None] = [None] * num_frames  # output="yuv420p"
        self.last_chroma: np.ndarray | None = None
        self.bt709 = False
        self.next = 0  # first target not yet assigned
        self.first: float | None = None  # time of the first decoded frame
        self.last: av.VideoFrame | None = None
        self.last_rgb: np.ndarray | None = None
        self.last_time = -math.inf
        self.count = 0
        self.frame_dur = 1.0 / self.stream_rate
        # one reformatter per clip: it caches the swscale context, which is costly to build per frame
        self.reformatter = av.video.reformatter.VideoReformatter()

    @property
    def done(self) -> bool:
        return self.next >= len(self.times)

    def _rgb(self) -> np.ndarray:
        if self.last_rgb is None:
            if self.output == "yuv420p":
                self.last_rgb, self.last_chroma = self._planes(self.last)
                return self.last_rgb
            w, h = _resize_dims(self.last.width, self.last.height, self.short_side, self.stretch)
            rgb = self.reformatter.reformat(self.last, width=w, height=h, format="rgb24", interpolation="BILINEAR")
            self.last_rgb = rgb.to_ndarray()
        return self.last_rgb

    def _planes(self, frame: av.VideoFrame) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The frame's luma ``[H, W]`` and chroma planes (U, V) ``[ceil(H/2), ceil(W/2)]`` (yuv420p, limited range)."""
        w, h = frame.width, frame.height
        if self.short_side is not None and min(w, h) > self.short_side:
            w, h = (2 * round(d / 2) for d in _resize_dims(w, h, self.short_side))  # even: whole chroma samples
        self.bt709 = frame.colorspace == av.video.reformatter.Colorspace.ITU709
        if (w, h) != (frame.width, frame.height) or frame.format.name != "yuv420p" \
                or frame.color_range == av.video.reformatter.ColorRange.JPEG:
            frame = self.reformatter.reformat(frame, width=w, height=h, format="yuv420p", interpolation="BILINEAR",
                                              dst_color_range=av.video.reformatter.ColorRange.MPEG)
        # copies: holding views would keep the decoder from reusing its frame buffers (measured slower)
        y, u, v = (np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width].copy() for p in frame.planes)
        return y, (u, v)

    def _time(self, frame: av.VideoFrame) -> float:
        if self.untimed:
            return self.count / self.stream_rate
        if frame.pts is None:
            if self.first is None:
                if self.seeked:
                    raise _Retry()  # cannot tell where the seek landed: decode from the start
                return self.stream_start
            return self.last_time + 1.0 / self.stream_rate  # a frame without a timestamp follows the last
        return frame.pts * self.tb - self.origin

    def add(self, frame: av.VideoFrame) -> None:
        t = self._time(frame)
        self.count += 1
        if self.first is None:
            self.first = t
            if self.seeked and t > max(self.start, self.stream_start) + self.eps:
                raise _Retry()  # the seek landed after the window starts
        if self.done:
            return
        # targets strictly before this frame's time are showing the previous frame
        while not self.done and self.times[self.next] + self.eps < t:
            if self.last is None:  # the window starts before the first frame: use the first one
                self.last, self.last_rgb = frame, None
            self.out[self.next] = self._rgb()
            self.out_chroma[self.next] = self.last_chroma
            self.next += 1
        self.last, self.last_rgb, self.last_time = frame, None, t
        dur = frame.duration * self.tb if frame.duration and not self.untimed else 0.0
        self.frame_dur = dur if dur > 0 else 1.0 / self.stream_rate

    def result(self) -> tuple[np.ndarray, bool]:
        padded = False
        end = self.last_time + self.frame_dur
        while not self.done:
            padded = padded or self.times[self.next] + self.eps >= end
            self.out[self.next] = self._rgb()
            self.out_chroma[self.next] = self.last_chroma
            self.next += 1
        if self.output == "yuv420p":
            self.chroma = np.empty((len(self.out), 2, *self.out_chroma[0][0].shape), np.uint8)
            for i, (u, v) in enumerate(self.out_chroma):
                self.chroma[i, 0], self.chroma[i, 1] = u, v
        return np.stack(self.out), padded


class _AudioCollector:
    """Places decoded audio by timestamp into the window at the stream's native rate."""

    def __init__(self, stream, origin: float, start: float, seconds: float, seeked: bool) -> None:
        self.tb = float(stream.time_base) if stream.time_base else 0.0
        self.origin, self.start, self.seconds, self.seeked = origin, start, seconds, seeked
        s0 = stream.start_time
        self.stream_start = float(s0 * stream.time_base) - origin if s0 is not None else 0.0
        self.eps = _tick_eps(stream)
        self.rate = 0  # from the first decoded frame: HE-AAC/Opus decode at a rate the header may not say
        self.buf = np.zeros(0, np.float32)
        self.data_until = -1  # window sample index where the decoded audio ends (may be past the buffer)
        self.cursor: float | None = None  # time of the next frame when timestamps are missing
        self.first: float | None = None
        self.done = False

    def add(self, frame: av.AudioFrame) -> None:
        if self.done:
            return
        if frame.pts is not None:
            t = frame.pts * self.tb - self.origin
        elif self.cursor is not None:  # no timestamp: it follows the previous frame
            t = self.cursor
        elif self.seeked:
            raise _Retry()  # cannot tell where the seek landed: decode from the start
        else:
            t = self.stream_start
        samples = audio_array(frame)
        if self.rate == 0:
            self.rate = frame.sample_rate
            self.buf = np.zeros(int(math.ceil(self.seconds * self.rate)) + 1, np.float32)
        elif frame.sample_rate != self.rate:  # the rate changed mid-stream: bring it to the first one
            samples = AF.resample(torch.from_numpy(samples), frame.sample_rate, self.rate).numpy()
        if self.first is None:
            self.first = t
            if self.seeked and t > max(self.start, self.stream_start) + max(self.eps, 1.0 / self.rate):
                raise _Retry()  # the seek landed after the window starts
        self.cursor = t + len(samples) / self.rate
        offset = int(round((t - self.start) * self.rate))
        n = len(self.buf)
        lo, hi = max(0, offset), min(n, offset + len(samples))
        if hi > lo:
            self.buf[lo:hi] = samples[lo - offset : hi - offset]
        self.data_until = max(self.data_until, offset + len(samples))
        if offset + len(samples) >= n:
            self.done = True

    def result(self, sample_rate: int, num_samples: int) -> tuple[np.ndarray, bool]:
        if self.rate == 0:  # no audio decoded in the window (the stream ended before it)
            return np.zeros(num_samples, np.float32), num_samples > 0
        # padded when the audio ends inside the window (zeros before a late start are not padding)
        needed = int(round(self.seconds * self.rate))
        padded = self.data_until < needed - int(_AUDIO_PAD_TOL_S * self.rate)
        wave = torch.from_numpy(self.buf)
        if self.rate != sample_rate:
            wave = AF.resample(wave, self.rate, sample_rate)
        wave = wave[:num_samples]
        if wave.shape[0] < num_samples:
            wave = torch.nn.functional.pad(wave, (0, num_samples - wave.shape[0]))
        return wave.numpy().astype(np.float32, copy=False), padded


def main(argv: list[str] | None = None) -> int:
    """``python -m vatt.data.media FILE...``: check that files decode; exit 1 if any fails."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    bad = 0
    for path in paths:
        try:
            duration = probe_duration(path)
            with open_media(path, path) as container:
                has_video = real_stream(container.streams.video) is not None
            # the first half second: frames when there is video, else the audio
            clip = read_clip(path, 0.0, 2 if has_video else 0, 4.0, 16000, 8000)
            print(f"ok  {path}: {duration:.2f} s, video {has_video}, audio {clip.has_audio}")
        except (MediaError, OSError) as e:
            bad += 1
            print(f"BAD {e}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
