"""read_clip across containers, codecs and awkward files, on media written here with PyAV.

Every video frame encodes its own index as 12 black/white blocks (robust to any lossy
codec at 64x48), so a test can tell exactly which frame read_clip returned for each
target time. A white strip at the bottom (the "flash") and a 5 ms click mark the
same instant for the audio/video alignment checks.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vatt.data import media
from vatt.data.media import MediaError, read_clip

W, H = 64, 48
FPS = 25
BITS = 12  # 2 rows x 6 blocks: frame indices up to 4095
FLASH = (1.2, 1.3)  # seconds: bottom strip white, click at FLASH[0]
SR = 16000


# --------------------------------------------------------------------------- writing media


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def need(*encoders: str | None) -> None:
    missing = [e for e in encoders if e is not None and not has_encoder(e)]
    if missing:
        pytest.skip(f"this PyAV/FFmpeg build has no {', '.join(missing)} encoder")


def frame_image(i: int, width: int = W, height: int = H, flash: bool = False) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    bw, bh = width // 6, height // 3
    for b in range(BITS):
        if (i >> b) & 1:
            r, c = divmod(b, 6)
            img[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 255
    if flash:
        img[2 * bh :] = 255
    return img


def frame_index(img: np.ndarray) -> int:
    """Inverse of frame_image on a decoded (possibly resized) RGB frame: block centres only."""
    h, w = img.shape[:2]
    bw, bh = w / 6, h / 3
    luma = img.astype(np.float32).mean(axis=2)
    i = 0
    for b in range(BITS):
        r, c = divmod(b, 6)
        y0, y1 = int(r * bh + bh / 4), int((r + 1) * bh - bh / 4)
        x0, x1 = int(c * bw + bw / 4), int((c + 1) * bw - bw / 4)
        if luma[y0:y1, x0:x1].mean() > 128:
            i |= 1 << b
    return i


def is_flash(img: np.ndarray) -> bool:
    return img[int(img.shape[0] * 0.8) :].mean() > 128


def indices(video: np.ndarray) -> list[int]:
    return [frame_index(f) for f in video]


def tone(seconds: float, rate: int, hz: float = 440.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.repeat((amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None], channels, axis=0)


def click(seconds: float, rate: int, at: float = FLASH[0], amps: tuple[float, ...] = (0.8,)) -> np.ndarray:
    """Silence with a 5 ms burst at ``at``; one amplitude per channel."""
    audio = np.zeros((len(amps), int(round(seconds * rate))), np.float32)
    i = int(round(at * rate))
    for c, a in enumerate(amps):
        audio[c, i : i + rate // 200] = a
    return audio


def _audio_frame(chunk: np.ndarray, fmt: av.AudioFormat, layout: str) -> av.AudioFrame:
    """float ``[C, n]`` -> an AudioFrame in the encoder's sample format."""
    if fmt.name.startswith("s16"):
        data = np.clip(np.round(chunk * 32767), -32768, 32767).astype(np.int16)
    elif fmt.name.startswith("s32"):
        data = np.clip(np.round(chunk.astype(np.float64) * 2147483647), -(2**31), 2**31 - 1).astype(np.int32)
    else:
        data = chunk.astype(np.float32)
    if not fmt.is_planar:
        data = data.T.reshape(1, -1)
    return av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.name, layout=layout)


def make_media(
    path: Path,
    *,
    vcodec: str | None = "libx264",
    acodec: str | None = "aac",
    fmt: str | None = None,
    fps: int = FPS,
    duration: float = 3.0,
    size: tuple[int, int] = (W, H),
    gop: int | None = None,
    pts_ms: list[int] | None = None,
    flash: tuple[float, float] | None = FLASH,
    audio: np.ndarray | None = None,
    sample_rate: int = SR,
    audio_start: float = 0.0,
    t0: float = 0.0,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write index-coded frames plus audio ``[C, S]`` (default: a click at the flash).

    ``pts_ms``: explicit frame times in ms (variable frame rate). ``audio_start``: the
    audio stream's first sample is at this time. ``t0``: every timestamp is shifted by
    this much (streams that do not start at 0). ``gop``: frames between keyframes.
    Packets are muxed in decode order after encoding, as the ffmpeg command line does,
    so encoder delays (LAME's negative priming timestamps) shift all streams together.
    """
    need(vcodec, acodec)
    width, height = size
    times = [t / 1000 for t in pts_ms] if pts_ms is not None else [i / fps for i in range(int(round(duration * fps)))]
    events = []  # (time, order, stream, frame): encode in time order
    with av.open(str(path), "w", format=fmt) as out:
        if vcodec is not None:
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
            tb = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
            vs.codec_context.time_base = tb
            opts = {"g": str(gop or fps)}
            if vcodec == "libx265":
                opts["x265-params"] = "log-level=error"
            vs.codec_context.options = opts
            for i, t in enumerate(times):
                lit = flash is not None and flash[0] - 1e-6 <= t < flash[1] - 1e-6
                frame = av.VideoFrame.from_ndarray(frame_image(i, width, height, lit), format="rgb24")
                frame.time_base = tb
                frame.pts = pts_ms[i] if pts_ms is not None else i
                frame.pts += int(round(t0 / tb))
                events.append((t, 1, vs, frame))
        if acodec is not None:
            if audio is None:
                audio = click(duration - audio_start, sample_rate, at=FLASH[0] - audio_start)
            layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
            as_ = out.add_stream(acodec, rate=sample_rate, layout=layout)
            as_.codec_context.options = {"strict": "experimental"}  # FFmpeg's own vorbis encoder
            as_.codec_context.open(strict=False)
            step = as_.codec_context.frame_size or 1024
            first = int(round((audio_start + t0) * sample_rate))
            for i in range(0, audio.shape[1], step):
                chunk = audio[:, i : i + step]
                if chunk.shape[1] < step and as_.codec_context.frame_size:
                    chunk = np.pad(chunk, ((0, 0), (0, step - chunk.shape[1])))
                frame = _audio_frame(chunk, as_.codec_context.format, layout)
                frame.sample_rate = sample_rate
                frame.time_base, frame.pts = Fraction(1, sample_rate), first + i
                events.append((audio_start + i / sample_rate, 0, as_, frame))
        events.sort(key=lambda e: (e[0], e[1]))
        packets = []
        for _, _, stream, frame in events:
            packets += stream.encode(frame)
        for stream in out.streams:
            packets += stream.encode(None)

        def decode_time(p: av.Packet) -> float:
            ts = p.dts if p.dts is not None else p.pts
            return float(ts * p.time_base) if ts is not None else 0.0

        for packet in sorted(packets, key=decode_time):
            out.mux(packet)
    return path


# --------------------------------------------------------------------------- reference


def reference(src: Path) -> tuple[np.ndarray, list[int], float | None]:
    """Plain decode of every frame from the start: (times from the media start, indices, first flash time)."""
    with av.open(str(src)) as c:
        origin = c.start_time / av.time_base if c.start_time is not None else 0.0
        times, idx, flash = [], [], None
        for frame in c.decode(video=0):
            t = frame.time - origin
            img = frame.to_ndarray(format="rgb24")
            times.append(t)
            idx.append(frame_index(img))
            if flash is None and is_flash(img):
                flash = t
    return np.array(times), idx, flash


def expected(times: np.ndarray, idx: list[int], targets: np.ndarray) -> list[int]:
    """The frame displayed at each target time (the first frame before the stream starts)."""
    pos = np.searchsorted(times, targets + 1e-4, side="right") - 1
    return [idx[max(p, 0)] for p in pos]


def targets(start: float, n: int, fps: float = FPS) -> np.ndarray:
    return start + np.arange(n) / fps


def on_grid(times: np.ndarray, fps: float = FPS, last: int = 74) -> list[int]:
    """Frame index on screen at each time for a constant-rate file starting at 0."""
    return [min(int(np.floor(t * fps + 1e-6)), last) for t in times]


def click_time(clip_audio: np.ndarray, start: float, rate: int = SR) -> float:
    return start + int(np.abs(clip_audio).argmax()) / rate


# --------------------------------------------------------------------------- containers x codecs

COMBOS = [
    # (extension, video encoder, audio encoder, audio rate, audio channels)
    ("mp4", "libx264", "aac", 16000, 1),
    ("mp4", "libx265", "aac", 44100, 2),
    ("mp4", "libsvtav1", "libmp3lame", 44100, 1),
    ("mp4", "libaom-av1", "aac", 16000, 1),
    ("mkv", "libx264", "flac", 16000, 1),
    ("mkv", "libx265", "vorbis", 44100, 2),
    ("mkv", "libsvtav1", "libopus", 48000, 1),
    ("webm", "libvpx-vp9", "libopus", 48000, 2),
    ("webm", "libvpx-vp9", "vorbis", 44100, 2),
    ("avi", "mpeg4", "libmp3lame", 44100, 1),
    ("avi", "mpeg4", "pcm_s16le", 16000, 1),
    ("mov", "libx264", "aac", 16000, 1),
    ("mov", "libx264", "pcm_s16le", 48000, 2),
    ("mpg", "mpeg1video", "mp2", 44100, 1),
    ("mpg", "mpeg2video", "mp2", 48000, 2),
    ("ts", "libx264", "aac", 16000, 1),
    ("ts", "mpeg2video", "mp2", 48000, 1),
]


@pytest.mark.parametrize("ext,vcodec,acodec,rate,channels", COMBOS, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in COMBOS])
def test_container_codec_combination(tmp_path, ext, vcodec, acodec, rate, channels):
    path = make_media(
        tmp_path / f"clip.{ext}", vcodec=vcodec, acodec=acodec, sample_rate=rate,
        audio=click(3.0, rate, amps=(0.8,) * channels),
    )
    times, idx, flash = reference(path)
    assert idx == list(range(75)), "the file itself must hold every frame"
    # Audio encoder delay (MP2/MP3 priming in containers without gapless info) can make the
    # audio start a few ms before the video: the media then starts there. LAME's negative
    # priming timestamps even shift that AVI's video by a frame. Otherwise times are exact.
    # MPEG-TS has no edit lists either: AAC priming puts the audio ahead there too.
    assert 0 <= times[0] < 0.1
    if (ext, acodec) != ("avi", "libmp3lame"):
        assert np.allclose(times - times[0], np.arange(75) / FPS, atol=1e-3)
        assert flash - times[0] == pytest.approx(FLASH[0], abs=1e-3)
    if ext in ("mp4", "mkv", "webm", "mov") or acodec == "pcm_s16le":
        assert times[0] == 0.0

    start, n = 0.9, 20
    clip = read_clip(path, start, num_frames=n, fps=FPS, sample_rate=SR, num_samples=int(n / FPS * SR))
    assert clip.video.dtype == np.uint8 and clip.video.shape == (n, H, W, 3)
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (int(n / FPS * SR),)
    assert clip.has_audio and not clip.padded
    assert indices(clip.video) == expected(times, idx, targets(start, n))
    # the click sounds while the flash is on screen: within one frame (1/fps) of it
    assert click_time(clip.audio, start) == pytest.approx(flash, abs=1 / FPS)
    assert 0.5 < np.abs(clip.audio).max() < 1.0

    from_bytes = read_clip(path.read_bytes(), start, n, FPS, SR, int(n / FPS * SR))
    assert np.array_equal(from_bytes.video, clip.video) and np.allclose(from_bytes.audio, clip.audio, atol=1e-6)

    # past the end: the last frame repeats, audio is zero-filled, and the clip says so
    tail = read_clip(path, 2.6, 20, FPS, SR, int(0.8 * SR))
    assert tail.padded
    assert indices(tail.video) == expected(times, idx, targets(2.6, 20))
    assert indices(tail.video)[-1] == 74 and np.abs(tail.audio[int(0.5 * SR) :]).max() == 0.0
    beyond = read_clip(path, 4.0, 4, FPS, SR, SR // 10)  # wholly past the end
    assert beyond.padded and indices(beyond.video) == [74] * 4 and not beyond.audio.any()

    # num_frames=0: audio only, same samples
    audio_only = read_clip(path, 1.0, 0, FPS, SR, SR // 2)
    assert audio_only.video.shape[0] == 0 and audio_only.audio.shape == (SR // 2,)
    assert click_time(audio_only.audio, 1.0) == pytest.approx(click_time(clip.audio, start), abs=1e-3)


# --------------------------------------------------------------------------- seeking


def _count_decoded(monkeypatch) -> list[list[float]]:
    """Instrument read_clip: per decode attempt, the times of the video frames it decoded."""
    attempts: list[list[float]] = []
    init, add = media._VideoSampler.__init__, media._VideoSampler.add

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        attempts.append([])

    def counting_add(self, frame):
        attempts[-1].append(frame.time)
        return add(self, frame)

    monkeypatch.setattr(media._VideoSampler, "__init__", counting_init)
    monkeypatch.setattr(media._VideoSampler, "add", counting_add)
    return attempts


LONG_GOP = [
    ("mp4", "libx264", "aac"),
    ("mkv", "libx264", "libopus"),
    ("webm", "libvpx-vp9", "libopus"),
    ("avi", "mpeg4", "pcm_s16le"),
    ("mov", "libx264", "pcm_s16le"),
    ("ts", "libx264", "aac"),
    ("mpg", "mpeg1video", "mp2"),
]


@pytest.mark.parametrize("ext,vcodec,acodec", LONG_GOP, ids=[f"{c[0]}-{c[1]}" for c in LONG_GOP])
def test_long_gop_seek_lands_on_the_keyframe_before_the_window(tmp_path, monkeypatch, ext, vcodec, acodec):
    rate = 48000
    path = make_media(
        tmp_path / f"long.{ext}", vcodec=vcodec, acodec=acodec, duration=20.0, gop=5 * FPS,
        flash=(12.4, 12.44), sample_rate=rate, audio=click(20.0, rate, at=12.4),
    )
    times, idx, flash = reference(path)
    keyframes = _keyframe_times(path)
    # keyframes every 5 s (plus the audio priming offset of TS/PS), none between 10 s and the window
    assert len(idx) == 500 and [round(k) for k in keyframes] == [0, 5, 10, 15]
    attempts = _count_decoded(monkeypatch)
    clip = read_clip(path, 12.3, num_frames=5, fps=FPS, sample_rate=SR, num_samples=SR // 5)
    assert indices(clip.video) == expected(times, idx, targets(12.3, 5))
    assert abs(indices(clip.video)[0] - 307) <= 1  # 12.3 s (up to the audio encoder's priming offset)
    assert [is_flash(f) for f in clip.video] == [i == 310 for i in indices(clip.video)] and 310 in indices(clip.video)
    assert click_time(clip.audio, 12.3) == pytest.approx(flash, abs=1 / FPS)
    assert not clip.padded
    if ext == "mpg":  # MPEG-PS is read from the start, but only the window's GOP is decoded
        assert len(attempts) == 1
    else:  # the decode that made the clip started at the keyframe at 10 s, not at 0
        assert attempts[-1][0] - _origin(path) == pytest.approx(keyframes[2], abs=1e-3)
    assert sum(len(a) for a in attempts) < 130  # from the beginning it would take 310+


def _keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        origin = c.start_time / av.time_base
        return [float(f.time - origin) for f in c.decode(video=0) if f.key_frame]


def _origin(path: Path) -> float:
    with av.open(str(path)) as c:
        return c.start_time / av.time_base if c.start_time is not None else 0.0


def test_seek_that_lands_after_the_window_retries_earlier(tmp_path, monkeypatch):
    """A demuxer that lands past the window (as bisecting MPEG-TS/PS ones can) must not shift frames."""
    path = make_media(tmp_path / "long.mp4", fps=10, duration=20.0, gop=50, flash=None, acodec=None)
    real_seek = av.container.InputContainer.seek
    calls = []

    def overshooting_seek(self, offset, **kwargs):
        calls.append(offset)
        # the first seek lands 3 s late (on the keyframe at 15 s); later ones behave
        return real_seek(self, offset + (3 * av.time_base if len(calls) == 1 else 0), **kwargs)

    monkeypatch.setattr(av.container.InputContainer, "seek", overshooting_seek)
    clip = read_clip(path, 12.3, 5, 10, SR, SR // 2)
    assert indices(clip.video) == [123, 124, 125, 126, 127]
    assert len(calls) == 2 and calls[1] < calls[0]


# --------------------------------------------------------------------------- variable frame rate


@pytest.mark.parametrize("ext,vcodec", [("mkv", "libx264"), ("mp4", "libx264"), ("webm", "libvpx-vp9")])
def test_variable_frame_rate_gives_the_frame_on_screen_at_each_target(tmp_path, ext, vcodec):
    gaps = [30, 50, 70] * 20
    pts_ms = np.concatenate([[0], np.cumsum(gaps)]).tolist()
    path = make_media(tmp_path / f"vfr.{ext}", vcodec=vcodec, acodec=None, pts_ms=pts_ms, flash=None)
    for start in (0.2, 1.234):  # 1.234: after a seek
        clip = read_clip(path, start, num_frames=40, fps=100, sample_rate=SR, num_samples=SR // 10)
        want = [int(np.searchsorted(pts_ms, round(t * 1000, 6), side="right")) - 1 for t in targets(start, 40, 100)]
        assert indices(clip.video) == want
        assert len(set(want)) > 5  # the grid really crosses irregular frame boundaries


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    "ext,vcodec,acodec,rate",
    [("mp4", "libx264", "aac", 16000), ("mkv", "libx264", "flac", 16000), ("mov", "libx264", "pcm_s16le", 16000),
     ("webm", "libvpx-vp9", "libopus", 48000), ("ts", "libx264", "aac", 16000)],
)
def test_audio_that_starts_late_is_silent_before(tmp_path, ext, vcodec, acodec, rate):
    path = make_media(tmp_path / f"late.{ext}", vcodec=vcodec, acodec=acodec, sample_rate=rate,
                      audio_start=1.0, audio=tone(2.0, rate), flash=None)
    times, idx, _ = reference(path)
    for start in (0.5, 0.8, 1.3):
        clip = read_clip(path, start, 10, 10, SR, SR)
        assert indices(clip.video) == expected(times, idx, targets(start, 10, 10))
        assert clip.has_audio and not clip.padded
        onset = int(round((1.0 - start) * SR))
        tol = int(SR / FPS)  # codecs smear the onset by less than a frame
        if onset > tol:
            assert np.abs(clip.audio[: onset - tol]).max() < 0.01  # silence (AAC pre-echo < 1% of the tone)
        assert np.abs(clip.audio[max(onset, 0) + tol :]).max() > 0.3


@pytest.mark.parametrize(
    "ext,vcodec,acodec,rate",
    [("mp4", "libx264", "aac", 16000), ("mkv", "libx264", "libopus", 48000), ("avi", "mpeg4", "pcm_s16le", 16000)],
)
def test_audio_that_ends_early_is_zero_filled_and_padded(tmp_path, ext, vcodec, acodec, rate):
    path = make_media(tmp_path / f"short.{ext}", vcodec=vcodec, acodec=acodec, sample_rate=rate,
                      audio=tone(1.5, rate), flash=None)
    clip = read_clip(path, 1.0, 10, 10, SR, SR)
    assert indices(clip.video) == on_grid(targets(1.0, 10, 10))
    assert clip.padded and clip.has_audio
    tol = int(SR / FPS)
    assert np.abs(clip.audio[: SR // 2 - tol]).max() > 0.3
    assert np.abs(clip.audio[SR // 2 + tol :]).max() < 1e-3
    # the window ending before the audio does is not padded
    assert not read_clip(path, 0.2, 10, 10, SR, SR).padded


@pytest.mark.parametrize("ext,acodec", [("mov", "pcm_s16le"), ("mkv", "flac"), ("mp4", "aac")])
def test_44k_stereo_is_downmixed_and_resampled_to_16k(tmp_path, ext, acodec):
    rate = 44100
    audio = click(3.0, rate, amps=(0.8, 0.4))  # mono = mean of the channels = 0.6
    path = make_media(tmp_path / f"stereo.{ext}", acodec=acodec, sample_rate=rate, audio=audio)
    clip = read_clip(path, 1.0, 10, FPS, SR, int(0.4 * SR))
    assert clip.audio.shape == (int(0.4 * SR),) and clip.audio.dtype == np.float32
    assert click_time(clip.audio, 1.0) == pytest.approx(FLASH[0], abs=1 / FPS)
    assert [is_flash(f) for f in clip.video] == [1.2 <= t < 1.3 - 1e-6 for t in targets(1.0, 10)]
    burst = np.median(np.abs(clip.audio)[np.abs(clip.audio) > 0.3])  # not the peak: resampling rings
    assert burst == pytest.approx(0.6, abs=0.08 if acodec == "aac" else 0.02)


@pytest.mark.parametrize(
    "ext,vcodec,acodec", [("wav", None, "pcm_s16le"), ("mp4", "libx264", "aac"), ("mkv", "libx264", "flac")]
)
def test_8k_audio_is_upsampled_to_48k(tmp_path, ext, vcodec, acodec):
    rate = 8000
    audio = tone(3.0, rate, hz=440) + click(3.0, rate)
    path = make_media(tmp_path / f"narrow.{ext}", vcodec=vcodec, acodec=acodec, sample_rate=rate, audio=audio)
    clip = read_clip(path, 1.0, 0 if vcodec is None else 10, FPS, 48000, 48000)
    assert clip.audio.shape == (48000,)
    assert click_time(clip.audio, 1.0, 48000) == pytest.approx(FLASH[0], abs=1 / FPS)
    quiet = clip.audio[int(0.4 * 48000) :]  # after the click: the tone alone, at 440 Hz
    spectrum = np.abs(np.fft.rfft(quiet * np.hanning(len(quiet))))
    assert np.fft.rfftfreq(len(quiet), 1 / 48000)[spectrum.argmax()] == pytest.approx(440, abs=3)


AUDIO_FILES = [
    ("wav", "pcm_s16le", None, 16000, 1),
    ("flac", "flac", None, 44100, 2),
    ("ogg", "libopus", None, 48000, 1),
    ("ogg", "vorbis", None, 44100, 2),
    ("mp3", "libmp3lame", None, 44100, 1),
    ("aac", "aac", "adts", 48000, 1),  # ADTS cannot signal priming: 1024 samples late (21 ms)
]


@pytest.mark.parametrize("ext,acodec,fmt,rate,channels", AUDIO_FILES, ids=[f"{a[0]}-{a[1]}" for a in AUDIO_FILES])
def test_audio_only_files(tmp_path, ext, acodec, fmt, rate, channels):
    path = make_media(tmp_path / f"sound.{ext}", vcodec=None, acodec=acodec, fmt=fmt, sample_rate=rate,
                      audio=click(3.0, rate, amps=(0.8,) * channels))
    for start in (0.4, 1.0):  # from the start, and after a seek
        clip = read_clip(path, start, 0, FPS, SR, SR)
        assert clip.has_audio and clip.video.shape[0] == 0 and clip.audio.shape == (SR,)
        assert click_time(clip.audio, start) == pytest.approx(FLASH[0], abs=1 / FPS)
        assert not clip.padded
    end = read_clip(path.read_bytes(), 2.5, 0, FPS, SR, SR)
    assert end.padded and np.abs(end.audio[SR // 2 + SR // FPS :]).max() == 0.0
    beyond = read_clip(path, 4.0, 0, FPS, SR, SR)  # wholly past the end: silence, not an error
    assert beyond.padded and not beyond.audio.any()
    with pytest.raises(MediaError, match=f"{re.escape(str(path))}: no video stream"):
        read_clip(path, 0.0, 4, FPS, SR, SR)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize("ext,vcodec,fmt", [("h264", "libx264", "h264"), ("m2v", "mpeg2video", "mpeg2video"),
                                            ("m1v", "mpeg1video", "mpeg1video"), ("hevc", "libx265", "hevc")])
def test_raw_streams_place_frames_by_index_and_rate(tmp_path, ext, vcodec, fmt):
    path = make_media(tmp_path / f"raw.{ext}", vcodec=vcodec, acodec=None, fmt=fmt)
    for start in (0.0, 1.0, 2.5):
        clip = read_clip(path, start, 12, 12.5, SR, SR // 10)
        assert indices(clip.video) == on_grid(targets(start, 12, 12.5))
        assert clip.padded == (start == 2.5) and not clip.has_audio


@pytest.mark.parametrize(
    "ext,vcodec,acodec,t0",
    [("ts", "libx264", "aac", 1.4), ("ts", "mpeg2video", "mp2", 1.4), ("mpg", "mpeg1video", "mp2", 0.0),
     ("mp4", "libx264", "aac", 1.4), ("mkv", "libx264", "flac", 1.4)],
)
def test_start_counts_from_the_beginning_of_the_media(tmp_path, ext, vcodec, acodec, t0):
    """Streams whose timestamps start at 1.4 s (or 0.5 s for MPEG-PS): start=0 is the first frame."""
    rate = 48000 if acodec == "mp2" else SR
    path = make_media(tmp_path / f"late.{ext}", vcodec=vcodec, acodec=acodec, t0=t0, sample_rate=rate,
                      audio=click(3.0, rate))
    with av.open(str(path)) as c:
        assert c.start_time / av.time_base > 0.4  # the file really starts late
    times, idx, flash = reference(path)
    assert times[0] < 0.1 and flash == pytest.approx(FLASH[0] + times[0], abs=1e-3)  # (+ AAC/MP2 priming in TS/PS)
    for start in (0.0, 1.0):
        clip = read_clip(path, start, 10, FPS, SR, int(0.4 * SR))
        assert indices(clip.video) == expected(times, idx, targets(start, 10))
        assert abs(indices(clip.video)[-1] - (start * FPS + 9)) <= 2  # not 1.4 s (35 frames) off
    assert click_time(clip.audio, 1.0) == pytest.approx(flash, abs=1 / FPS)
    assert [is_flash(f) for f in clip.video] == [i in (30, 31, 32) for i in indices(clip.video)]  # [1.2, 1.3)


@pytest.mark.parametrize("vcodec,ext,pix_fmt", [("libvpx-vp9", "webm", "yuv420p"), ("libx264", "mkv", "yuv444p"),
                                                ("mpeg4", "avi", "yuv420p")])
def test_odd_frame_sizes(tmp_path, vcodec, ext, pix_fmt):
    path = make_media(tmp_path / f"odd.{ext}", vcodec=vcodec, acodec=None, size=(99, 57), pix_fmt=pix_fmt, flash=None)
    clip = read_clip(path, 1.0, 5, FPS, SR, SR // 10)
    assert clip.video.shape == (5, 57, 99, 3)
    assert indices(clip.video) == [25, 26, 27, 28, 29]
    small = read_clip(path, 1.0, 5, FPS, SR, SR // 10, short_side=32)
    assert small.video.shape == (5, 32, 56, 3)  # 99x57 -> short side 32
    assert indices(small.video) == [25, 26, 27, 28, 29]


# --------------------------------------------------------------------------- errors


def _header_only(tmp_path: Path) -> Path:
    """An mp4 whose index (moov, written first) is intact but whose media data is missing."""
    full = tmp_path / "whole.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        for i in range(50):
            for p in vs.encode(av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    data = full.read_bytes()
    mdat = data.index(b"mdat") + 4
    path = tmp_path / "header_only.mp4"
    path.write_bytes(data[:mdat])
    return path


def _truncated(tmp_path: Path, ext: str) -> Path:
    data = make_media(tmp_path / f"whole.{ext}", vcodec="libx264", acodec="aac").read_bytes()
    path = tmp_path / f"truncated.{ext}"
    path.write_bytes(data[: len(data) // 3])
    return path


ERRORS = {  # case -> the reason the message must give
    "garbage": "cannot open",
    "garbage-bytes": "cannot open",
    "empty": "cannot open (empty file)",
    "empty-bytes": "cannot open (empty input)",
    "header-only": "no decodable video frame (no media data: only a header?)",
    "truncated-mkv": "truncated (data ends at",
    "truncated-mp4": "cannot open",  # the index (moov) is at the end, cut off
    "audio-file-asked-for-frames": "no video stream",
    "video-file-asked-for-audio": "no audio stream",
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_unreadable_input_raises_media_error_naming_the_source(tmp_path, case):
    num_frames = 4
    if case == "garbage":
        src = tmp_path / "junk.mkv"
        src.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)))
    elif case == "garbage-bytes":
        src = b"\x00\x01 definitely not media " * 50
    elif case == "empty":
        src = tmp_path / "empty.mp4"
        src.write_bytes(b"")
    elif case == "empty-bytes":
        src = b""
    elif case == "header-only":
        src = _header_only(tmp_path)
    elif case == "truncated-mkv":
        src = _truncated(tmp_path, "mkv")
    elif case == "truncated-mp4":
        src = _truncated(tmp_path, "mp4")
    elif case == "audio-file-asked-for-frames":
        src = make_media(tmp_path / "sound.wav", vcodec=None, acodec="pcm_s16le")
    else:
        src = make_media(tmp_path / "silent.mp4", acodec=None)
        num_frames = 0
    name = f"<{len(src)} bytes>" if isinstance(src, bytes) else str(src)
    with pytest.raises(MediaError, match=f"^{re.escape(name)}: {re.escape(ERRORS[case])}"):
        read_clip(src, 2.0, num_frames, FPS, SR, SR // 2)


# --------------------------------------------------------------------------- internals


def test_audio_frames_without_timestamps_follow_each_other(tmp_path):
    """Frames with no pts are placed after the previous one; after a seek they force a re-read."""
    path = make_media(tmp_path / "sound.wav", vcodec=None, acodec="pcm_s16le")
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        collector = media._AudioCollector(stream, origin=0.0, start=0.5, seconds=1.0, seeked=False)
        for i in range(20):  # 0.1 s each, value i/100, no timestamps
            frame = av.AudioFrame.from_ndarray(np.full((1, 1600), i / 100, np.float32), format="flt", layout="mono")
            frame.sample_rate = SR
            assert frame.pts is None
            collector.add(frame)
        wave, padded = collector.result(SR, SR)
        assert not padded
        assert wave[0] == pytest.approx(0.05) and wave[SR // 2] == pytest.approx(0.10)
        assert wave[-1] == pytest.approx(0.14)
        after_seek = media._AudioCollector(stream, origin=0.0, start=0.5, seconds=1.0, seeked=True)
        with pytest.raises(media._Retry):
            after_seek.add(frame)


def test_command_line_check(tmp_path, capsys):
    good = make_media(tmp_path / "good.mp4")
    sound = make_media(tmp_path / "sound.flac", vcodec=None, acodec="flac")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk" * 100)
    assert media.main([str(good), str(sound)]) == 0
    assert media.main([str(good), str(junk)]) == 1
    out = capsys.readouterr().out
    assert f"ok  {good}: 3.0" in out and f"ok  {sound}" in out and f"BAD {junk}: cannot open" in out
