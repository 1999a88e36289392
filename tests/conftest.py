"""Shared fixtures: small media files written with PyAV, and a small demo dataset."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def write_av(
    path: Path,
    frames: np.ndarray | None,
    fps: int = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    vcodec: str = "libx264",
    acodec: str = "aac",
) -> Path:
    """Write uint8 RGB ``frames [T, H, W, 3]`` and/or mono float ``audio [S]`` to ``path``."""
    with av.open(str(path), "w") as out:
        vs = as_ = None
        if frames is not None:
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height = frames.shape[2], frames.shape[1]
            vs.pix_fmt = "yuv420p"
            vs.options = {"g": str(fps)}
        if audio is not None:
            as_ = out.add_stream(acodec, rate=sample_rate)
            as_.layout = "mono"
        if vs is not None:
            for img in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
        if as_ is not None:
            step = as_.codec_context.frame_size or 1024
            for i in range(0, len(audio), step):
                chunk = audio[i : i + step].astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = i
                for packet in as_.encode(frame):
                    out.mux(packet)
            for packet in as_.encode(None):
                out.mux(packet)
    return path


def flash_and_click(path: Path, flash_time: float = 1.2, duration: float = 3.0, fps: int = 25, sample_rate: int = 16000) -> Path:
    """A black clip, white for 0.1 s from ``flash_time``, with a click (a 5 ms burst) at ``flash_time``."""
    n = int(round(duration * fps))
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    first = int(round(flash_time * fps))
    frames[first : first + int(round(0.1 * fps))] = 255
    audio = np.zeros(int(duration * sample_rate), np.float32)
    at = int(round(flash_time * sample_rate))
    audio[at : at + sample_rate // 200] = 0.8
    return write_av(path, frames, fps, audio, sample_rate)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small copy of the demo dataset (16 train / 8 val clips)."""
    from vatt.data.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, num_train=16, num_val=8, workers=2, progress=False)
    return root
