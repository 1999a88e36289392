"""The synthetic demo dataset: real decodable media, manifests, determinism, reruns, and content."""

from __future__ import annotations

import colorsys
import dataclasses
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from vatt.data.demo import (
    BEEP_HZ,
    COLOURS,
    MOTION_WORDS,
    MOTIONS,
    SHAPE_WORDS,
    SHAPES,
    clip_spec,
    encode_clip,
    generate_demo,
    hue_to_colour,
    main,
    render_audio,
    render_video,
)

SMALL = dict(num_train=6, num_val=3, seed=3)
SIZE, FPS, DURATION, SR = 80, 10, 4.0, 16000


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def decode(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        info = {
            "video_codec": v.codec_context.name,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "pix_fmt": v.codec_context.pix_fmt,
            "rate": v.average_rate,
            "audio_codec": a.codec_context.name,
            "channels": a.codec_context.channels,
            "sample_rate": a.codec_context.sample_rate,
            "duration_s": float(container.duration / av.time_base),
        }
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    return frames, audio, info


def dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    x = (x - x.mean()) * np.hanning(len(x))
    n = 1 << 18  # zero padding: sub-Hz bin spacing for short windows
    spectrum = np.abs(np.fft.rfft(x, n))
    return float(np.argmax(spectrum) * sample_rate / n)


def _flat_segments(spec):
    return [s for s in spec.segments if s.motion in ("left", "right")]


def hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo")
    summary = generate_demo(root, **SMALL, workers=2, progress=False)
    return root, summary


def test_clip_specs_statistics():
    specs = [clip_spec(0, "train", i) for i in range(1000)]
    uncaptioned = sum(not s.captions for s in specs) / len(specs)
    assert 0.11 < uncaptioned < 0.19
    assert {s.colour for s in specs} == set(COLOURS)
    assert {s.shape for s in specs} == set(SHAPES)
    assert {s.labels["motion"] for s in specs} == set(MOTIONS)
    assert {len(s.segments) for s in specs} == {2, 3, 4}
    for s in specs:
        assert s.colour == hue_to_colour(s.hue) and 0.0 <= s.hue < 1.0
        assert 22.0 <= s.object_size <= 30.0
        assert s.segments[0].start == 0.0 and s.segments[-1].end == DURATION
        for a, b in zip(s.segments, s.segments[1:]):
            assert a.end == b.start and a.motion != b.motion
        lengths = [seg.end_frame - seg.start_frame for seg in s.segments]
        assert min(lengths) >= 0.8 * FPS and sum(lengths) == DURATION * FPS
        # The label is the motion of the (first) longest segment.
        assert s.labels["motion"] == s.segments[lengths.index(max(lengths))].motion


def test_hue_bins():
    assert [hue_to_colour(h) for h in (0.0, 0.99, 1 / 6, 2 / 6, 0.5, 4 / 6, 5 / 6)] == [
        "red", "red", "yellow", "green", "cyan", "blue", "magenta"
    ]
    assert hue_to_colour(1 / 12 - 1e-6) == "red" and hue_to_colour(1 / 12 + 1e-6) == "yellow"


def test_files_decode_with_both_streams(dataset):
    root, summary = dataset
    assert summary["counts"] == {"train": 6, "val": 3}
    assert sorted(p.name for p in (root / "train").iterdir()) == [f"{i:06d}.mp4" for i in range(6)]
    assert sorted(p.name for p in (root / "val").iterdir()) == [f"{i:06d}.mp4" for i in range(3)]
    for path in [root / "train" / "000000.mp4", root / "val" / "000002.mp4"]:
        frames, audio, info = decode(path)
        assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
        assert (info["width"], info["height"], info["rate"]) == (SIZE, SIZE, FPS)
        assert info["audio_codec"] == "aac" and info["channels"] == 1 and info["sample_rate"] == SR
        assert info["duration_s"] == pytest.approx(DURATION, abs=0.06)
        assert frames.shape == (int(DURATION * FPS), SIZE, SIZE, 3)
        # AAC pads the last frame; the padding is beyond the clip and may stay in the decode.
        assert int(DURATION * SR) <= len(audio) <= int(DURATION * SR) + 1024
        rms = float(np.sqrt(np.mean(audio[: int(DURATION * SR)] ** 2)))
        assert rms > 0.05


def test_manifests(dataset):
    root, summary = dataset
    for split, count in summary["counts"].items():
        records = read_manifest(root / f"{split}.jsonl")
        assert len(records) == count
        for i, record in enumerate(records):
            assert set(record) == {"video", "duration", "captions", "labels"}
            assert record["video"] == f"{split}/{i:06d}.mp4" and (root / record["video"]).is_file()
            assert record["duration"] == DURATION
            spec = clip_spec(SMALL["seed"], split, i)
            assert record["labels"] == spec.labels
            assert set(record["labels"]) == {"colour", "shape", "motion"}
            captions = record["captions"]
            if not captions:
                continue
            assert len(captions) == len(spec.segments)
            assert captions[0]["start"] == 0.0 and captions[-1]["end"] == DURATION
            for a, b in zip(captions, captions[1:]):
                assert a["end"] == b["start"]
            for caption, segment in zip(captions, spec.segments):
                assert set(caption) == {"start", "end", "text"}
                assert 0.0 <= caption["start"] < caption["end"] <= DURATION
                text = caption["text"]
                assert re.search(rf"\b{record['labels']['colour']}\b", text), text
                assert any(w in text for w in SHAPE_WORDS[record["labels"]["shape"]]), text
                assert any(re.search(rf"\b{w}\b", text) for w in MOTION_WORDS[segment.motion]), text
    assert any(r["captions"] for r in read_manifest(root / "train.jsonl"))


def test_object_colour_matches_hue(dataset):
    root, summary = dataset
    for split, count in summary["counts"].items():
        for i in range(count):
            spec = clip_spec(SMALL["seed"], split, i)
            frames, _, _ = decode(root / split / f"{i:06d}.mp4")
            rgb = frames.reshape(-1, 3).astype(np.float64) / 255.0
            mx, mn = rgb.max(axis=1), rgb.min(axis=1)
            saturated = (mx > 0.5) & ((mx - mn) / np.maximum(mx, 1e-6) > 0.5)
            # The object covers a few percent of the frame; the dark background none.
            assert 0.03 < saturated.mean() < 0.3
            hue = colorsys.rgb_to_hsv(*np.median(rgb[saturated], axis=0))[0]
            assert hue_distance(hue, spec.hue) < 0.03, (split, i, hue, spec.hue)
            if min(hue_distance(spec.hue, (k + 0.5) / 6) for k in range(6)) > 0.03:
                assert hue_to_colour(hue) == spec.colour


def test_audio_pitch_follows_hue(dataset):
    root, summary = dataset
    measured = []
    for i in range(summary["counts"]["train"]):
        spec = clip_spec(SMALL["seed"], "train", i)
        _, audio, _ = decode(root / "train" / f"{i:06d}.mp4")
        # Left/right segments have no pitch glide, so their peak is the hue's pitch.
        flat = _flat_segments(spec)
        if not flat:
            continue
        seg = max(flat, key=lambda s: s.end - s.start)
        hz = dominant_hz(audio[int(seg.start * SR) : int(seg.end * SR)], SR)
        assert hz == pytest.approx(220.0 * 2.0 ** (2.0 * spec.hue), rel=0.02)
        measured.append((spec.hue, hz))
    measured.sort()
    assert len(measured) >= 3
    assert all(a[1] < b[1] for a, b in zip(measured, measured[1:]))
    assert len({hue_to_colour(h) for h, _ in measured}) >= 2


def test_audio_red_below_cyan_after_encoding(tmp_path):
    # The first clip with a left/right segment: those have no pitch glide.
    base = next(s for s in map(lambda i: clip_spec(0, "train", i), range(100)) if _flat_segments(s))
    flat = max(_flat_segments(base), key=lambda s: s.end - s.start)
    measured = {}
    for hue in (0.0, 0.5):
        spec = dataclasses.replace(base, hue=hue, colour=hue_to_colour(hue))
        rng = np.random.default_rng(0)
        video, audio = render_video(spec, rng, SIZE, FPS), render_audio(spec, rng, FPS, SR)
        path = tmp_path / f"{hue}.mp4"
        encode_clip(path, video, audio, FPS, SR)
        _, decoded, _ = decode(path)
        measured[spec.colour] = dominant_hz(decoded[int(flat.start * SR) : int(flat.end * SR)], SR)
    assert measured["red"] == pytest.approx(220.0, rel=0.01)
    assert measured["cyan"] == pytest.approx(440.0, rel=0.01)


def test_audio_motion_and_shape_cues():
    checked = {m: 0 for m in MOTIONS}
    for i in range(12):
        spec = clip_spec(1, "train", i)
        audio = render_audio(spec, np.random.default_rng(0), FPS, SR)
        assert len(audio) == int(DURATION * SR)
        assert 0.2 < np.abs(audio).max() <= 0.8
        # The beep rate is the strongest envelope modulation above the slow loudness ramps.
        envelope = np.abs(audio).reshape(-1, SR // 200).mean(axis=1)  # 200 Hz envelope
        spectrum = np.abs(np.fft.rfft(envelope - envelope.mean(), 200 * 64))
        freqs = np.fft.rfftfreq(200 * 64, 1 / 200)
        band = (freqs > 1.5) & (freqs < 12)
        assert freqs[band][np.argmax(spectrum[band])] == pytest.approx(BEEP_HZ[spec.shape], abs=0.3)
        for seg in spec.segments:
            x = audio[int(seg.start * SR) : int(seg.end * SR)]
            quarter = len(x) // 4
            first, last = x[:quarter], x[-quarter:]
            if seg.motion in ("left", "right"):
                louder = np.sqrt(np.mean(last**2)) > np.sqrt(np.mean(first**2))
                assert louder == (seg.motion == "right")
            else:
                higher = dominant_hz(last, SR) > dominant_hz(first, SR)
                assert higher == (seg.motion == "up")
            checked[seg.motion] += 1
    assert all(checked.values())


def test_same_seed_same_bytes_different_seed_differs(tmp_path, dataset):
    root, _ = dataset
    again = tmp_path / "again"
    generate_demo(again, **SMALL, workers=1, progress=False)  # serial vs the fixture's 2 workers
    for name in ["train.jsonl", "val.jsonl", "demo.json", "train/000004.mp4", "val/000001.mp4"]:
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    other = tmp_path / "other"
    generate_demo(other, **{**SMALL, "seed": 4}, workers=2, progress=False)
    assert (other / "train.jsonl").read_bytes() != (root / "train.jsonl").read_bytes()
    assert (other / "train/000000.mp4").read_bytes() != (root / "train/000000.mp4").read_bytes()


def test_rerun_is_skipped_and_changes_regenerate(tmp_path):
    root = tmp_path / "demo"
    kwargs = dict(num_train=4, num_val=2, seed=0, duration=2.0, workers=1, progress=False)
    first = generate_demo(root, **kwargs)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    assert generate_demo(root, **{**kwargs, "workers": 2}) == first
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    # A missing clip makes the dataset incomplete: it is regenerated.
    (root / "train" / "000001.mp4").unlink()
    assert generate_demo(root, **kwargs) == first
    assert (root / "train" / "000001.mp4").is_file()

    # Different parameters regenerate and drop clips beyond the new counts.
    second = generate_demo(root, **{**kwargs, "num_train": 3, "seed": 1})
    assert second["params"]["seed"] == 1 and second["counts"] == {"train": 3, "val": 2}
    assert json.loads((root / "demo.json").read_text()) == second
    assert sorted(p.name for p in (root / "train").iterdir()) == ["000000.mp4", "000001.mp4", "000002.mp4"]
    assert len(read_manifest(root / "train.jsonl")) == 3
    assert not list(root.rglob("*.partial"))


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["--out", str(out), "--num-train", "2", "--num-val", "1", "--duration", "1.0", "--no-progress"])
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "2 train + 1 val clips" in line
    summary = json.loads((out / "demo.json").read_text())
    assert summary["params"]["duration"] == 1.0
    frames, _, _ = decode(out / "val" / "000000.mp4")
    assert frames.shape == (round(1.0 * FPS), SIZE, SIZE, 3)  # 1 s at the default rate


def test_invalid_parameters(tmp_path):
    with pytest.raises(ValueError):
        generate_demo(tmp_path, num_train=1, num_val=0, size=81, progress=False)
    with pytest.raises(ValueError):
        generate_demo(tmp_path, num_train=1, num_val=0, duration=0.5, progress=False)
    assert not (tmp_path / "demo.json").exists()
