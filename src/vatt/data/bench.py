"""Data-pipeline benchmark: ``python -m vatt.data.bench --shards DIR`` (``make bench-data``).

Clips per second, in one process (= one dataloader worker), of

- **pipeline**: the training pipeline as it was before the augmentation moved to the
  device (``per_clip_clip``: window -> seek + decode the window from memory -> scale
  jitter in FFmpeg's RGB resize, crop, flip, colour jitter -> audio resample + noise
  -> K captions -> tokens), one clip at a time on one core: the reference;
- **cpu part**: what a loader worker does of it (decode the window, cut each frame's
  crop box from its yuv420p planes, the augmentation's parameters); the rest (the
  box's resize to the crop size, colour conversion and jitter, [-1, 1], audio noise)
  runs batched on the training device
  (``device_part_seconds_per_clip``: that part on this CPU, per clip of a batch), and
- **baseline**: decoding every frame and all audio of the same file with PyAV,
  then subsampling the window's frames and resampling the audio (what a loader
  without seeking does), followed by the same augmentation.

Defaults are the paper's clip settings: 32 frames at 10 fps, 224², 48 kHz.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional as AF

from .clip import (
    Augment, ClipConfig, audio_to_tensor, caption_tokens, choose_window, collate_clips, draw_scale_jitter,
    draw_video_augment, finish_batch, video_to_tensor,
)
from .media import audio_array, probe_duration, read_clip
from .shards import ClipShardDataset, parse_meta
from .tokenizer import WordTokenizer


def baseline_clip(data: bytes, start: float, clip: ClipConfig, augment: Augment) -> tuple[np.ndarray, np.ndarray]:
    """Decode everything, then keep the window: frames at ``start + i/fps`` and resampled audio."""
    with av.open(io.BytesIO(data)) as container:
        frames, times, audio, rate = [], [], [], clip.sample_rate
        streams = [s for s in (container.streams.video[:1] + container.streams.audio[:1])]
        for frame in container.decode(*streams):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(frame.time or 0.0)
            else:
                audio.append(audio_array(frame))
                rate = frame.sample_rate
    times = np.asarray(times)
    targets = start + np.arange(clip.num_frames) / clip.fps
    idx = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(frames) - 1)
    video = torch.from_numpy(np.stack([frames[i] for i in idx])).permute(0, 3, 1, 2).float()
    video = torch.nn.functional.interpolate(video, size=(clip.image_size, clip.image_size), mode="bilinear")
    video = video.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    wave = torch.from_numpy(np.concatenate(audio)) if audio else torch.zeros(1)
    wave = wave[int(start * rate) : int((start + clip.seconds) * rate)]
    wave = AF.resample(wave, rate, clip.sample_rate).numpy()
    # the same augmentation as the pipeline, so only the decoding strategy differs
    return video_to_tensor(video, clip.image_size, augment).numpy(), audio_to_tensor(wave, augment).numpy()


def per_clip_clip(data: bytes, captions: list, duration: float | None, clip: ClipConfig, augment: Augment,
                  tokenizer: WordTokenizer, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The training pipeline as it was before the split, kept as the benchmark's reference ("today"): the window's
    frames resized with the scale jitter by FFmpeg's scaler to RGB, then crop, flip, colour jitter, [-1, 1] and
    the audio noise, one clip at a time on the CPU (the same draws as ``clip_sample``)."""
    start, anchor = choose_window(captions, duration or probe_duration(data), clip, True, gen)
    short, stretch = draw_scale_jitter(clip, augment, gen)
    media = read_clip(data, start, clip.num_frames, clip.fps, clip.sample_rate, clip.num_samples, short, stretch)
    text = caption_tokens(captions, start, anchor, clip, tokenizer)
    return {"video": video_to_tensor(media.video, clip.image_size, augment, gen),
            "audio": audio_to_tensor(media.audio, augment, gen), "text": text}


def run(shards: str, num_clips: int, clip: ClipConfig) -> dict[str, float]:
    """Clips per second of the pipeline and of the decode-all baseline on ``num_clips`` clips, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one dataloader worker's share of the machine
    try:
        return _run(shards, num_clips, clip)
    finally:
        torch.set_num_threads(threads)


def _run(shards: str, num_clips: int, clip: ClipConfig) -> dict[str, float]:
    tokenizer = WordTokenizer.from_words(["a"])
    ds = ClipShardDataset(shards, tokenizer, clip, Augment(), shuffle=False)
    n = min(num_clips, len(ds))
    raw = [ds.raw(i) for i in range(n)]
    finish_batch(collate_clips([ds[0]]))  # warm-up: imports, codec initialisation
    t = time.perf_counter()
    samples = [ds[i] for i in range(n)]  # what a loader worker does: decode, the crop box's planes, parameters
    cpu_part = time.perf_counter() - t
    batch = collate_clips(samples)
    t = time.perf_counter()
    finish_batch(batch)  # the device part, batched (here on the CPU; bench/gpu.sh times it on the GPU)
    device_part = time.perf_counter() - t
    metas = [parse_meta(item["meta"]) for item in raw]
    t = time.perf_counter()
    for i, (item, (captions, duration, _)) in enumerate(zip(raw, metas)):
        per_clip_clip(bytes(item["media"]), captions, duration, clip, Augment(), tokenizer, torch.Generator().manual_seed(i))
    pipeline = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for item, (_, duration, _) in zip(raw, metas):
        baseline_clip(bytes(item["media"]), max(0.0, (duration or clip.seconds) - clip.seconds) / 2, clip, Augment())
    baseline = n / (time.perf_counter() - t)
    return {"clips": n, "pipeline_clips_per_s": pipeline, "baseline_clips_per_s": baseline, "speedup": pipeline / baseline,
            "cpu_part_clips_per_s": n / cpu_part, "device_part_seconds_per_clip": device_part / n}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="a prepared shard folder (python -m vatt.data.prepare)")
    parser.add_argument("--num-clips", type=int, default=64)
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--sample-rate", type=int, default=48_000)
    args = parser.parse_args(argv)
    clip = ClipConfig(args.num_frames, args.fps, args.image_size, args.sample_rate)
    r = run(args.shards, args.num_clips, clip)
    print(
        f"{r['clips']} clips, {clip.num_frames} frames @ {clip.fps:g} fps, {clip.image_size}^2, {clip.sample_rate} Hz, one process:\n"
        f"  per-clip pipeline before the split (seek + window decode + augment on the CPU): "
        f"{r['pipeline_clips_per_s']:.1f} clips/s\n"
        f"  of it, the loader workers' part (decode, the crop box's yuv420p planes): "
        f"{r['cpu_part_clips_per_s']:.1f} clips/s\n"
        f"  baseline (decode every frame, subsample):  {r['baseline_clips_per_s']:.1f} clips/s\n"
        f"  ratio: {r['speedup']:.2f}x"
    )



# --------------------------------------------------------------------------- sources at real resolutions


def synthetic_video(path: Path, width: int, height: int, seconds: float, fps: int = 25, seed: int = 0) -> Path:
    """An H.264 + AAC clip with moving texture (compresses and decodes like camera footage, unlike flat colour)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    texture = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    base = np.kron(texture, np.ones((8, 8, 1), np.uint8))
    t = np.arange(int(seconds * 48000)) / 48000
    tone = (0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t)).astype(np.float32)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "veryfast", "g": str(2 * fps)}
        as_ = out.add_stream("aac", rate=48000)
        as_.layout = "mono"
        for i in range(n):
            dy, dx = (2 * i) % 8, (3 * i) % 8  # drift the texture a few pixels per frame
            img = np.ascontiguousarray(base[dy : dy + height, dx : dx + width])
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        step = as_.codec_context.frame_size or 1024
        for i in range(0, len(tone), step):
            frame = av.AudioFrame.from_ndarray(tone[i : i + step][None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i
            for packet in as_.encode(frame):
                out.mux(packet)
        for packet in as_.encode(None):
            out.mux(packet)
    return path


def data_report(quick: bool = False, clips: int = 6, seconds: float = 8.0) -> dict[str, dict[str, float]]:
    """Pipeline vs decode-everything clips/s per core from 256p (``prepare --transcode 256``; ``256p_10fps``: with
    ``--fps 10``, the training rate), 480p and 720p sources (25 fps)."""
    import json
    import tempfile

    from .prepare import prepare

    clip = ClipConfig(8, 10.0, 32, 16000) if quick else ClipConfig()
    sizes = {"480p": (854, 480), "720p": (1280, 720)} if not quick else {"480p": (96, 64), "720p": (128, 72)}
    n, secs = (2, 2.0) if quick else (clips, seconds)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for key, (w, h) in sizes.items():
            folder = tmp / key
            folder.mkdir()
            rows = []
            for i in range(n):
                synthetic_video(folder / f"c{i}.mp4", w, h, secs, seed=i)
                rows.append({"video": f"c{i}.mp4", "captions": [{"start": 0.0, "end": 1.0, "text": "a clip"}]})
            (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            prepare("manifest", str(tmp / f"shards_{key}"), manifest=folder / "m.jsonl", workers=2, progress=False)
        # what prepare --transcode 256 wrote from the 720p sources before (x264's default tuning, the source's
        # rate: the reference), and writes now at the training rate (fastdecode, --fps 10)
        prepare("manifest", str(tmp / "shards_256p"), manifest=tmp / "720p" / "m.jsonl", workers=2, progress=False,
                transcode=32 if quick else 256, x264_tune=None)
        prepare("manifest", str(tmp / "shards_256p_10fps"), manifest=tmp / "720p" / "m.jsonl", workers=2,
                progress=False, transcode=32 if quick else 256, fps=clip.fps)
        for key in ("256p", "256p_10fps", "480p", "720p"):
            results[key] = run(str(tmp / f"shards_{key}"), n, clip)
    return results


def device_part(device: str, batch: int = 32, clip: ClipConfig | None = None, repeat: int = 5) -> dict[str, float]:
    """Seconds per batch of the device part of the augmentation (``finish_batch``) at paper settings on ``device``."""
    clip = clip or ClipConfig()
    gen = torch.Generator().manual_seed(0)
    # the crop box of a 256p source (what prepare --transcode 256 writes): the full short side, square
    box = round(clip.image_size * 256 / 224) // 2 * 2
    samples = [{"video_y": torch.randint(0, 256, (clip.num_frames, box, box), dtype=torch.uint8, generator=gen),
                "video_uv": torch.randint(0, 256, (clip.num_frames, 2, box // 2, box // 2), dtype=torch.uint8,
                                          generator=gen),
                "video_box": torch.tensor([0.0, 0.0, box, box]), "video_bt709": torch.tensor(False),
                "video_crop": torch.tensor(clip.image_size),
                "video_colour": draw_video_augment(Augment(), gen)[1:], "audio": torch.randn(clip.num_samples, generator=gen),
                "audio_noise": torch.tensor(0.01), "noise_seed": torch.tensor(i)} for i in range(batch)]
    on_device = {k: v.to(device) for k, v in collate_clips(samples).items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    finish_batch(on_device)
    sync()
    t = time.perf_counter()
    for _ in range(repeat):
        finish_batch(on_device)
    sync()
    seconds = (time.perf_counter() - t) / repeat
    return {"batch": batch, "seconds_per_batch": seconds, "clips_per_s": batch / seconds}


def pipeline_256p(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Clips/s per core of the per-clip pipeline before the split (``today``), from ``--transcode 256`` shards as
    prepare wrote them before (the source's rate, x264's default tuning), vs the loader workers' part now
    (``cpu_part``), from ``--transcode 256 --fps 10`` shards (fastdecode)."""
    today, cpu_part = rows["256p"]["pipeline_clips_per_s"], rows["256p_10fps"]["cpu_part_clips_per_s"]
    return {"today": today, "cpu_part": cpu_part, "ratio": cpu_part / today}


if __name__ == "__main__":
    main()
