"""The one function that decodes audio-video clips, for every dataset.

``read_clip`` seeks to a time window and returns frames sampled at a target
frame rate plus the mono waveform of the same window at a target sample rate.
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


class MediaError(ValueError):
    """A media file that cannot be decoded; the message names the source and the reason."""


@dataclass
class Clip:
    video: np.ndarray  # uint8 [num_frames, H, W, 3]
    audio: np.ndarray  # float32 [num_samples], mono
    has_audio: bool  # False when the file has no audio stream (audio is zeros)
    padded: bool  # the window ran past the end: last frame repeated / audio zero-filled


def _name(src: str | Path | bytes) -> str:
    return f"<{len(src)} bytes>" if isinstance(src, (bytes, bytearray)) else str(src)


def probe_duration(src: str | Path | bytes) -> float:
    """Duration in seconds from the container header (0.0 when unknown)."""
    try:
        with av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else str(src)) as container:
            if container.duration is not None:
                return container.duration / av.time_base
            durations = [float(s.duration * s.time_base) for s in container.streams if s.duration]
            return max(durations, default=0.0)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{_name(src)}: cannot read ({e})") from e


def _resize_dims(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    # even sizes keep swscale's chroma handling exact; never below the short side
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def _audio_array(frame: av.AudioFrame) -> np.ndarray:
    """Decoded audio frame -> float32 mono ``[n]`` (channels averaged)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        arr = (arr.astype(np.float32) - (info.min + info.max + 1) / 2) / (info.max + 1)
    return arr.astype(np.float32, copy=False).mean(axis=0)


def read_clip(
    src: str | Path | bytes,
    start: float,
    num_frames: int,
    fps: float,
    sample_rate: int,
    num_samples: int,
    short_side: int | None = None,
) -> Clip:
    """Decode the window ``[start, start + num_frames / fps)`` of a media file.

    - ``src``: a path or the file's bytes (decoded from memory).
    - Frames: for each target time ``start + i / fps``, the frame displayed at that
      time, resized so the short side is ``short_side`` (None keeps the size).
    - Audio: ``num_samples`` mono samples at ``sample_rate`` from ``start``,
      resampled with torchaudio; zeros where the file has no audio.
    - ``num_frames=0`` reads audio only (files without video are then valid).
    Raises ``MediaError`` for unreadable input.
    """
    name = _name(src)
    try:
        container = av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{name}: cannot open ({e})") from e
    with container:
        vstream = container.streams.video[0] if container.streams.video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        if num_frames > 0 and vstream is None:
            raise MediaError(f"{name}: no video stream")
        if num_frames == 0 and astream is None:
            raise MediaError(f"{name}: no audio stream")
        window = num_frames / fps if num_frames > 0 else num_samples / sample_rate
        streams = [s for s in (vstream if num_frames > 0 else None, astream) if s is not None]
        for s in streams:
            s.thread_type = "AUTO"
        try:
            seek_to = max(0.0, start - _SEEK_MARGIN_S)
            if seek_to > 0:
                container.seek(int(seek_to * av.time_base), backward=True, any_frame=False)
            rate = float(vstream.average_rate or vstream.guessed_rate or 25) if vstream is not None else 25.0
            video, v_padded = _VideoSampler(start, num_frames, fps, short_side, rate), False
            audio = _AudioCollector(start, window, astream.rate if astream else sample_rate)
            for packet in container.demux(streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        video.add(frame)
                    else:
                        audio.add(frame)
                if video.done and (astream is None or audio.done):
                    break
        except av.error.FFmpegError as e:
            raise MediaError(f"{name}: decoding failed ({e})") from e
        if num_frames > 0:
            frames, v_padded = video.result(name)
        else:
            frames = np.zeros((0, 0, 0, 3), np.uint8)
        if astream is not None:
            wave, a_padded = audio.result(sample_rate, num_samples)
        else:
            wave, a_padded = np.zeros(num_samples, np.float32), False
    return Clip(video=frames, audio=wave, has_audio=astream is not None, padded=v_padded or a_padded)


class _VideoSampler:
    """Keeps, for each target time, the last frame whose timestamp is <= that time."""

    def __init__(self, start: float, num_frames: int, fps: float, short_side: int | None, stream_rate: float) -> None:
        self.stream_rate = stream_rate
        self.times = start + np.arange(num_frames) / fps
        self.short_side = short_side
        self.out: list[np.ndarray | None] = [None] * num_frames
        self.next = 0  # first target not yet assigned
        self.last: av.VideoFrame | None = None
        self.last_rgb: np.ndarray | None = None
        self.last_time = -math.inf
        self.count = 0
        self.frame_dur = 0.0
        # one reformatter per clip: it caches the swscale context, which is costly to build per frame
        self.reformatter = av.video.reformatter.VideoReformatter()

    @property
    def done(self) -> bool:
        return self.next >= len(self.times)

    def _rgb(self) -> np.ndarray:
        if self.last_rgb is None:
            w, h = _resize_dims(self.last.width, self.last.height, self.short_side)
            rgb = self.reformatter.reformat(self.last, width=w, height=h, format="rgb24", interpolation="BILINEAR")
            self.last_rgb = rgb.to_ndarray()
        return self.last_rgb

    def add(self, frame: av.VideoFrame) -> None:
        t = frame.time
        if t is None:  # no timestamp (old MPEG-PS): place by index and the stream's rate
            t = self.count / self.stream_rate
        self.count += 1
        if self.done:
            return
        # targets strictly before this frame's time are showing the previous frame
        while not self.done and self.times[self.next] + 1e-6 < t:
            if self.last is None:  # the window starts before the first frame: use the first one
                self.last, self.last_rgb = frame, None
            self.out[self.next] = self._rgb()
            self.next += 1
        self.last, self.last_rgb, self.last_time = frame, None, t
        self.frame_dur = float(frame.duration * frame.time_base) if frame.duration else 0.0

    def result(self, name: str) -> tuple[np.ndarray, bool]:
        if self.last is None:
            raise MediaError(f"{name}: no decodable video frame in the window")
        padded = False
        end = self.last_time + max(self.frame_dur, 1e-3)
        while not self.done:
            padded = padded or self.times[self.next] >= end
            self.out[self.next] = self._rgb()
            self.next += 1
        return np.stack(self.out), padded


class _AudioCollector:
    """Places decoded audio by timestamp into the window at the native rate."""

    def __init__(self, start: float, window: float, rate: int) -> None:
        self.start, self.rate = start, rate
        self.n = int(math.ceil(window * rate)) + 1
        self.buf = np.zeros(self.n, np.float32)
        self.filled_to = 0  # last native sample index written (exclusive)
        self.cursor: float | None = None  # expected time of the next frame when timestamps are missing
        self.done = False

    def add(self, frame: av.AudioFrame) -> None:
        if self.done:
            return
        t = frame.time if frame.time is not None else self.cursor
        if t is None:
            t = 0.0
        samples = _audio_array(frame)
        self.cursor = t + len(samples) / frame.sample_rate
        offset = int(round((t - self.start) * self.rate))
        lo, hi = max(0, offset), min(self.n, offset + len(samples))
        if hi > lo:
            self.buf[lo:hi] = samples[lo - offset : hi - offset]
            self.filled_to = max(self.filled_to, hi)
        if offset + len(samples) >= self.n:
            self.done = True

    def result(self, sample_rate: int, num_samples: int) -> tuple[np.ndarray, bool]:
        padded = self.filled_to < self.n - 1
        wave = torch.from_numpy(self.buf)
        if self.rate != sample_rate:
            wave = AF.resample(wave, self.rate, sample_rate)
        wave = wave[:num_samples]
        if wave.shape[0] < num_samples:
            wave = torch.nn.functional.pad(wave, (0, num_samples - wave.shape[0]))
        return wave.numpy().astype(np.float32, copy=False), padded
