"""How the loaders' input decodes: x264's default tuning vs ``fastdecode`` (what ``prepare --transcode`` writes), JPEG.

    .venv/bin/python bench/codecs.py

Encodes an 8 s synthetic 720p clip (``vatt.data.bench.synthetic_video``) to 256p at 10 fps with
``prepare``'s transcoder under each x264 tuning, and reports its size, the luma PSNR against the
source scaled to the same size by FFmpeg, and the decode time per frame on one thread; then the
same frames as JPEG (quality 90, as DMVR stores frames) decoded by ``torchvision.io.decode_jpeg``.
The README's figures for ``--x264-tune`` and for JPEG frames come from this command.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from vatt.data.bench import synthetic_video
from vatt.data.prepare.worker import _transcode


def _frames(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as c:
        return list(c.decode(video=0))


def _decode_ms(data: bytes, repeat: int = 3) -> float:
    n, t = 0, time.perf_counter()
    for _ in range(repeat):
        n += len(_frames(data))
    return (time.perf_counter() - t) / n * 1e3


def _luma(frame: av.VideoFrame) -> np.ndarray:
    p = frame.planes[0]
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width].astype(np.float64)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = synthetic_video(Path(tmp) / "src.mp4", 1280, 720, 8.0)
        encoded = {tune or "none": _transcode(str(src), 256, Path(tmp) / f"{tune}.mp4", 10.0, tune)
                   for tune in (None, "fastdecode")}
        first = _frames(encoded["none"])[0]
        size = (first.width, first.height)
        with av.open(str(src)) as c:  # the source at the transcode's size, every 2.5th frame (25 -> 10 fps)
            source = [f.reformat(width=size[0], height=size[1], format="yuv420p") for f in c.decode(video=0)]
        for tune, data in encoded.items():
            frames = _frames(data)
            ref = [source[min(len(source) - 1, int(i * 2.5))] for i in range(len(frames))]
            mse = np.mean([np.mean((_luma(a) - _luma(b)) ** 2) for a, b in zip(frames, ref)])
            print(f"x264 tune {tune:10s}: {len(data) / 1e3:7.0f} KB, luma PSNR {10 * np.log10(255 ** 2 / mse):.2f} dB, "
                  f"decode {_decode_ms(data):.3f} ms/frame")
        h264 = _frames(encoded["fastdecode"])
        rgb = [torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous() for f in h264[:32]]
        jpegs = [encode_jpeg(x, quality=90) for x in rgb]
        decode_jpeg(jpegs)
        t = time.perf_counter()
        for _ in range(3):
            decode_jpeg(jpegs)
        ms = (time.perf_counter() - t) / (3 * len(jpegs)) * 1e3
        print(f"JPEG q90 frames      : {sum(len(j) for j in jpegs) / len(jpegs) / 1e3:7.1f} KB/frame "
              f"(H.264 fastdecode {len(encoded['fastdecode']) / len(h264) / 1e3:.1f}), decode_jpeg {ms:.3f} ms/frame")


if __name__ == "__main__":
    main()
