"""prepare: media + captions -> litdata shards; every skip reported, re-runs, transcode, CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import av
import litdata
import numpy as np
import pytest

import vatt.data.prepare as prep
import vatt.data.prepare.worker  # noqa: F401 - prep.worker: the code a worker runs
from conftest import flash_and_click, read_dataset, write_av
from vatt.data.media import read_clip
from vatt.data.prepare import PrepareError, main, prepare

FPS, SR = 10, 16000


def clip(path: Path, seconds: float, video: bool = True, audio: bool = True, acodec: str = "aac", seed: int = 0,
         ) -> Path:
    """A tiny 64x48 clip at 10 fps with a 16 kHz tone."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (round(seconds * FPS), 48, 64, 3), dtype=np.uint8) if video else None
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * SR)) / SR)).astype(np.float32) if audio else None
    return write_av(path, frames, FPS, wave, SR, acodec=acodec)


def garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a media file " * 40)
    return path


def skipped_reasons(out: Path) -> dict[str, str]:
    lines = (out / "skipped.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    reasons = {r["input"]: r["reason"] for r in records}
    assert len(reasons) == len(records), "an input is listed twice"
    return reasons


def check_meta(meta: dict, duration: float, source: str, has_video: bool = True, has_audio: bool = True,
               tol: float = 0.1) -> None:
    assert set(meta) == {"captions", "labels", "duration", "source", "has_video", "has_audio"}
    assert meta["duration"] == pytest.approx(duration, abs=tol)
    assert meta["source"] == source
    assert meta["has_video"] is has_video and meta["has_audio"] is has_audio


def decodes(media: bytes, video: bool = True) -> None:
    c = read_clip(media, 0.5, num_frames=4 if video else 0, fps=FPS, sample_rate=SR, num_samples=SR // 2)
    if video:
        assert c.video.shape == (4, 48, 64, 3) and c.video.std() > 10  # real, varying frames
    assert c.has_audio and np.abs(c.audio).max() > 0.1  # the 0.3-amplitude tone


def write_manifest(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- manifest


def test_manifest_keeps_exactly_the_valid_clips_and_reports_every_defect(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    clip(src / "clips" / "a.mp4", 3.0, seed=1)
    clip(src / "clips" / "b.mp4", 2.0, audio=False, seed=2)
    clip(src / "clips" / "short.mp4", 0.5)
    clip(src / "clips" / "nocap.mp4", 2.0)
    clip(src / "voice.m4a", 2.0, video=False)
    garbage(src / "clips" / "junk.mp4")
    cap = lambda s, e, t: {"start": s, "end": e, "text": t}  # noqa: E731
    manifest = write_manifest(src / "train.jsonl", [
        {"video": "clips/a.mp4", "captions": [cap(2.0, 3.0, "then this"), cap(0.0, 1.0, "first this"), cap(1, 2, "  ")],
         "labels": {"colour": "red"}, "duration": 99.0},
        {"video": "clips/b.mp4", "captions": [cap(0.5, 1.5, "silent clip")]},
        {"video": "clips/missing.mp4", "captions": [cap(0, 1, "gone")]},
        {"video": "clips/junk.mp4", "captions": [cap(0, 1, "junk")]},
        {"video": "clips/short.mp4", "captions": [cap(0, 0.5, "short")]},
        {"video": "clips/nocap.mp4", "captions": [cap(0, 1, ""), cap(1, 2, "   ")]},
        {"video": "voice.m4a", "captions": [cap(0, 1, "audio only")]},
        {"video": "clips/a.mp4", "captions": [cap(0, 1, "listed twice")]},
        "this line is not JSON",
    ])
    out = tmp_path / "out"
    summary = prepare("manifest", out, manifest=manifest, workers=2, require_captions=True, progress=False)

    samples = read_dataset(out)
    assert sorted(samples) == ["clips/a", "clips/b"]
    a, b = samples["clips/a"], samples["clips/b"]
    assert a["media"] == (src / "clips" / "a.mp4").read_bytes()  # original bytes, unchanged
    check_meta(a["meta"], 3.0, "manifest")  # probed, not the manifest's 99
    assert a["meta"]["captions"] == [cap(0.0, 1.0, "first this"), cap(2.0, 3.0, "then this")]
    assert a["meta"]["labels"] == {"colour": "red"}
    check_meta(b["meta"], 2.0, "manifest", has_audio=False)
    assert b["meta"]["captions"] == [cap(0.5, 1.5, "silent clip")] and b["meta"]["labels"] == {}
    decodes(a["media"])
    assert read_clip(b["media"], 0.0, 4, FPS, SR, 800).video.shape == (4, 48, 64, 3)

    expected = {
        "clips/missing.mp4": "missing file",
        "clips/junk.mp4": "unreadable",
        "clips/short.mp4": "too short",
        "clips/nocap.mp4": "no usable captions",
        "voice.m4a": "no video stream",
        "clips/a.mp4": "duplicate id",
        "train.jsonl:9": "bad entry",
    }
    assert skipped_reasons(out) == expected
    on_disk = json.loads((out / "summary.json").read_text())
    assert summary["up_to_date"] is False and {**on_disk, "up_to_date": False} == summary
    assert (on_disk["inputs"], on_disk["kept"], on_disk["skipped"]) == (9, 2, 7)
    assert on_disk["skipped_by_reason"] == {reason: 1 for reason in expected.values()}
    assert on_disk["kept_seconds"] == pytest.approx(5.0, abs=0.2) and on_disk["kept_without_audio"] == 1
    assert on_disk["args"]["require_captions"] is True and on_disk["args"]["workers"] == 2
    junk = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines() if "junk" in x][0]
    assert "junk.mp4" in junk["detail"] and junk["where"] == "train.jsonl:4"
    others = sorted(p.name for p in out.iterdir() if not p.name.endswith(".bin"))
    assert others == ["index.json", "skipped.jsonl", "summary.json"]  # scratch files are gone
    screen = capsys.readouterr().out
    assert "9 inputs, 2 kept, 7 skipped" in screen
    for reason in expected.values():
        assert reason in screen
    assert "clips/missing.mp4" in screen


def test_rerun_is_skipped_changes_rebuild_and_interrupted_runs_are_redone(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    clip(src / "long.mp4", 3.0)
    clip(src / "brief.mp4", 0.7)
    rows = [{"video": "long.mp4", "captions": [{"start": 0, "end": 1, "text": "one"}]}, {"video": "brief.mp4"}]
    manifest = write_manifest(src / "m.jsonl", rows)
    out = tmp_path / "out"
    index = out / "index.json"

    first = prepare("manifest", out, manifest=manifest, workers=2, progress=False)
    assert sorted(read_dataset(out)) == ["long"] and skipped_reasons(out) == {"brief.mp4": "too short"}
    stamp = index.stat().st_mtime_ns
    capsys.readouterr()

    # same arguments and inputs (workers do not matter): nothing is done
    again = prepare("manifest", out, manifest=manifest, workers=1, progress=False)
    assert again["up_to_date"] is True and again["fingerprint"] == first["fingerprint"]
    assert index.stat().st_mtime_ns == stamp
    assert "up to date" in capsys.readouterr().out
    forced = prepare("manifest", out, manifest=manifest, workers=2, progress=False, force=True)
    assert forced["up_to_date"] is False and forced["fingerprint"] == first["fingerprint"]
    assert index.stat().st_mtime_ns != stamp and sorted(read_dataset(out)) == ["long"]
    stamp = index.stat().st_mtime_ns

    # another argument: rebuilt
    lower = prepare("manifest", out, manifest=manifest, workers=2, min_duration=0.5, progress=False)
    assert lower["up_to_date"] is False and lower["fingerprint"] != first["fingerprint"]
    assert sorted(read_dataset(out)) == ["brief", "long"] and lower["skipped"] == 0
    assert skipped_reasons(out) == {} and index.stat().st_mtime_ns != stamp

    # changed input (a caption): rebuilt
    rows[0]["captions"][0]["text"] = "uno"
    write_manifest(manifest, rows)
    changed = prepare("manifest", out, manifest=manifest, workers=2, min_duration=0.5, progress=False)
    assert changed["up_to_date"] is False
    assert read_dataset(out)["long"]["meta"]["captions"][0]["text"] == "uno"

    # an interrupted run (no summary.json, a stray chunk, scratch files): redone from scratch
    (out / "summary.json").unlink()
    (out / "chunk-7-3.bin").write_bytes(b"half-written chunk")
    (out / ".prepare-tmp").mkdir()
    (out / ".prepare-tmp" / "worker-1.jsonl").write_text('{"index": 0, "status": "skipped"}\n')
    redone = prepare("manifest", out, manifest=manifest, workers=2, min_duration=0.5, progress=False)
    assert redone["up_to_date"] is False and redone["kept"] == 2
    assert not (out / "chunk-7-3.bin").exists() and not (out / ".prepare-tmp").exists()
    assert sorted(read_dataset(out)) == ["brief", "long"]

    # a folder with foreign files is never cleared
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        prepare("manifest", foreign, manifest=manifest, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- HowTo100M


def test_howto100m_folder_and_caption_json(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    (videos / "part1").mkdir(parents=True)
    clip(videos / "vidA.mp4", 3.0, seed=1)
    garbage(videos / "vidA.webm")  # same id, less preferred extension
    clip(videos / "part1" / "vidB.mkv", 2.5, seed=2)  # sub-folders are searched
    garbage(videos / "vidJ.webm")
    clip(videos / "vidS.mov", 0.4)
    clip(videos / "vidE.mp4", 2.0)
    clip(videos / "vidN.mp4", 2.0)  # no entry in caption.json
    clip(videos / "vidX.mp4", 2.0)  # the worker hits an unexpected exception on this one
    whole = clip(tmp_path / "whole.mkv", 4.0).read_bytes()
    (videos / "vidT.mkv").write_bytes(whole[: len(whole) // 2])  # truncated: the header says 4 s
    (videos / "notes.txt").write_text("ignored")
    table = {
        "vidA": {"start": [4.0, 0.5], "end": [6.0, 2.0], "text": ["add the flour", "heat the pan"]},
        "vidB": {"start": [0.0], "end": [2.0], "text": ["whisk"]},
        "vidJ": {"start": [0.0], "end": [1.0], "text": ["junk"]},
        "vidM": {"start": [0.0], "end": [1.0], "text": ["no such file"]},
        "vidS": {"start": [0.0], "end": [0.4], "text": ["short"]},
        "vidE": {"start": [0.0, 1.0], "end": [1.0, 2.0], "text": ["", " "]},
        "vidX": {"start": [0.0], "end": [1.0], "text": ["boom"]},
        "vidT": {"start": [0.0], "end": [1.0], "text": ["cut"]},
    }
    captions = tmp_path / "caption.json"
    captions.write_text(json.dumps(table))

    real_probe = prep.worker.probe_duration

    def flaky_probe(src):
        if "vidX" in str(src):
            raise ZeroDivisionError("simulated worker bug")
        return real_probe(src)

    monkeypatch.setattr(prep.worker, "probe_duration", flaky_probe)  # forked workers inherit the patch
    out = tmp_path / "out"
    summary = prepare("howto100m", out, videos=videos, captions=captions, workers=2, require_captions=True,
                      progress=True, start_method="fork", source="howto")

    samples = read_dataset(out)
    assert sorted(samples) == ["vidA", "vidB"]
    check_meta(samples["vidA"]["meta"], 3.0, "howto")
    assert [c["text"] for c in samples["vidA"]["meta"]["captions"]] == ["heat the pan", "add the flour"]
    assert samples["vidA"]["media"] == (videos / "vidA.mp4").read_bytes()
    check_meta(samples["vidB"]["meta"], 2.5, "howto")
    assert samples["vidB"]["meta"]["captions"] == [{"start": 0.0, "end": 2.0, "text": "whisk"}]
    decodes(samples["vidB"]["media"])

    assert skipped_reasons(out) == {
        str(videos / "vidA.webm"): "duplicate id",
        str(videos / "vidE.mp4"): "no usable captions",
        str(videos / "vidJ.webm"): "unreadable",
        "vidM": "missing file",
        str(videos / "vidN.mp4"): "no usable captions",
        str(videos / "vidS.mov"): "too short",
        str(videos / "vidT.mkv"): "unreadable",
        str(videos / "vidX.mp4"): "error",
    }
    assert (summary["inputs"], summary["kept"], summary["skipped"]) == (10, 2, 8)
    assert summary["skipped_by_reason"]["no usable captions"] == 2
    details = {r["id"]: r["detail"] for r in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert details["vidX"] == "ZeroDivisionError: simulated worker bug"
    assert "truncated" in details["vidT"] and "vidT.mkv" in details["vidT"]


# --------------------------------------------------------------------------- AudioSet

SEGMENTS = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=8, num_segs=8, num_unique_labels=527, num_positive_labels=9
# YTID, start_seconds, end_seconds, positive_labels
vidAAAAAAAA, 30.000, 40.000, "/m/09x0r,/m/04rlf"
wavBBBBBBBB, 12.500, 22.500, "/m/0jbk"
intCCCCCCCC, 20.000, 30.000, "/m/07rwj"
plnDDDDDDDD, 5.000, 15.000, "/m/03fwl"
misEEEEEEEE, 1.000, 11.000, "/m/01"
jnkFFFFFFFF, 2.000, 12.000, "/m/02"
shtGGGGGGGG, 3.000, 13.000, "/m/03"
not a row
"""


def test_audioset_name_variants_audio_only_files_and_transcode_rebuild(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    clip(clips / "vidAAAAAAAA_30.000.mp4", 3.0, seed=1)  # start as written
    clip(clips / "wavBBBBBBBB_12500.wav", 3.0, video=False, acodec="pcm_s16le")  # milliseconds, audio only
    clip(clips / "intCCCCCCCC_20.mkv", 2.0, seed=3)  # int(start)
    clip(clips / "plnDDDDDDDD.mp4", 2.0, seed=4)  # plain YTID
    garbage(clips / "jnkFFFFFFFF_2.000.mp4")
    clip(clips / "shtGGGGGGGG_3.mp4", 0.5)
    clip(clips / "unlisted_1.mp4", 2.0)  # not in the CSV: not an input
    segments = tmp_path / "balanced_train_segments.csv"
    segments.write_text(SEGMENTS)
    out = tmp_path / "out"

    summary = prepare("audioset", out, videos=clips, segments=segments, workers=2, progress=False)
    samples = read_dataset(out)
    assert sorted(samples) == ["intCCCCCCCC_20", "plnDDDDDDDD_5", "vidAAAAAAAA_30", "wavBBBBBBBB_12.5"]
    vid, wav = samples["vidAAAAAAAA_30"], samples["wavBBBBBBBB_12.5"]
    check_meta(vid["meta"], 3.0, "audioset")
    assert vid["meta"]["labels"] == {"audioset": ["/m/09x0r", "/m/04rlf"]} and vid["meta"]["captions"] == []
    check_meta(wav["meta"], 3.0, "audioset", has_video=False)
    assert wav["meta"]["labels"] == {"audioset": ["/m/0jbk"]}
    assert wav["media"] == (clips / "wavBBBBBBBB_12500.wav").read_bytes()
    decodes(vid["media"])
    decodes(wav["media"], video=False)
    assert samples["intCCCCCCCC_20"]["meta"]["labels"] == {"audioset": ["/m/07rwj"]}
    assert skipped_reasons(out) == {
        "misEEEEEEEE,1.000,11.000": "missing file",
        "jnkFFFFFFFF,2.000,12.000": "unreadable",
        "shtGGGGGGGG,3.000,13.000": "too short",
        "not a row": "bad entry",
    }
    assert (summary["inputs"], summary["kept"], summary["kept_audio_only"]) == (8, 4, 1)

    # another argument (transcode): rebuilt; audio-only stays audio-only, as AAC in MP4
    stamp = (out / "index.json").stat().st_mtime_ns
    again = prepare("audioset", out, videos=clips, segments=segments, workers=2, progress=False, transcode=32)
    assert again["up_to_date"] is False and (out / "index.json").stat().st_mtime_ns != stamp
    samples = read_dataset(out)
    assert len(samples) == 4
    wav = samples["wavBBBBBBBB_12.5"]
    with av.open(_bytes_io(wav["media"])) as c:
        assert not c.streams.video and c.streams.audio[0].codec_context.name == "aac"
    check_meta(wav["meta"], 3.0, "audioset", has_video=False)
    c = read_clip(wav["media"], 0.5, 0, FPS, SR, SR // 2)
    assert np.abs(c.audio).max() > 0.1
    with av.open(_bytes_io(samples["vidAAAAAAAA_30"]["media"])) as c:
        assert min(c.streams.video[0].width, c.streams.video[0].height) == 32

    with pytest.raises(ValueError, match="no captions"):
        prepare("audioset", out, videos=clips, segments=segments, require_captions=True, progress=False)

    # for pretraining (which needs video): --require-video leaves the audio-only clip out, saying why
    pretrain = prepare("audioset", tmp_path / "pretrain", videos=clips, segments=segments, require_video=True,
                       workers=2, progress=False)
    assert pretrain["kept"] == 3 and pretrain["kept_audio_only"] == 0
    assert skipped_reasons(tmp_path / "pretrain")["wavBBBBBBBB,12.500,22.500"] == "no video stream"


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


# --------------------------------------------------------------------------- transcode through the CLI


def test_cli_transcode_gives_small_h264_aac_with_a_keyframe_per_second(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    flash_and_click(src / "flash.mp4", flash_time=1.2, duration=3.0, fps=FPS, sample_rate=SR)
    flash_and_click(src / "flash.ts", flash_time=1.2, duration=3.0, fps=FPS, sample_rate=SR)  # starts at 1.4 s
    clip(src / "tall.mp4", 2.0, seed=5)
    manifest = write_manifest(src / "m.jsonl", [
        {"video": "flash.mp4", "captions": [{"start": 1.0, "end": 2.0, "text": "a flash and a click"}]},
        {"video": "tall.mp4"},
        {"video": "flash.ts", "id": "mpegts"},
    ])
    out = tmp_path / "shards"
    method = multiprocessing.get_start_method(allow_none=True)
    summary = main(["manifest", "--manifest", str(manifest), "--out", str(out), "--workers", "2",
                    "--transcode", "32", "--chunk-bytes", "1MB", "--source", "demo", "--no-progress",
                    "--start-method", "spawn"])  # spawn: the worker function and its arguments pickle
    assert multiprocessing.get_start_method(allow_none=True) == method  # litdata's global change is undone
    assert summary["kept"] == 3 and summary["args"]["transcode"] == 32 and summary["args"]["chunk_bytes"] == 1_000_000
    samples = read_dataset(out)
    flash = samples["flash"]
    assert flash["media"] != (src / "flash.mp4").read_bytes()
    check_meta(flash["meta"], 3.0, "demo")
    assert flash["meta"]["captions"] == [{"start": 1.0, "end": 2.0, "text": "a flash and a click"}]
    # times count from the container start (1.4 s in the .ts); audio starts 0.07 s before video there
    check_meta(samples["mpegts"]["meta"], 3.0, "demo", tol=0.15)
    for sample in samples.values():
        with av.open(_bytes_io(sample["media"])) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
            assert (v.width, v.height) == (42, 32)  # 64x48 -> short side 32, even sides
            keyframes = [round(float(p.pts * p.time_base), 2) for p in c.demux(v)
                         if p.is_keyframe and p.pts is not None]
        # the first frame (at 0.1 s in the .ts: its video starts after its audio), then every whole second
        assert keyframes[0] <= 0.1 and keyframes[1:] == [float(k) for k in range(1, len(keyframes))]
        assert len(keyframes) >= 2
    # decodes like the original: the flash and the click stay where they were
    for name, original in (("flash", src / "flash.mp4"), ("mpegts", src / "flash.ts")):
        got = read_clip(samples[name]["media"], 0.9, num_frames=8, fps=FPS, sample_rate=SR, num_samples=int(0.8 * SR))
        ref = read_clip(original, 0.9, num_frames=8, fps=FPS, sample_rate=SR, num_samples=int(0.8 * SR))
        assert got.video.shape == (8, 32, 42, 3)
        white = (got.video.reshape(8, -1).mean(axis=1) > 200).tolist()
        assert white == (ref.video.reshape(8, -1).mean(axis=1) > 200).tolist() and sum(white) == 1
        assert np.abs(got.audio).argmax() == pytest.approx(np.abs(ref.audio).argmax(), abs=SR // 100)
    d = read_clip(flash["media"], 0.9, num_frames=8, fps=FPS, sample_rate=SR, num_samples=int(0.8 * SR))
    assert (d.video.reshape(8, -1).mean(axis=1) > 200).tolist().index(True) == 3  # 1.2 s
    assert 0.9 + np.abs(d.audio).argmax() / SR == pytest.approx(1.2, abs=1 / FPS)
    assert "3 kept, 0 skipped" in capsys.readouterr().out


def test_bad_arguments_and_no_usable_input(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    manifest = write_manifest(src / "m.jsonl", [{"video": "nope.mp4"}])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="even"):
        prepare("manifest", out, manifest=manifest, transcode=33)
    with pytest.raises(ValueError, match="--manifest"):
        prepare("manifest", out)
    with pytest.raises(ValueError, match="--videos and --segments"):
        prepare("audioset", out)
    with pytest.raises(ValueError, match="size"):
        prepare("manifest", out, manifest=manifest, chunk_bytes="lots")
    with pytest.raises(PrepareError, match="no usable input"):
        prepare("manifest", out, manifest=manifest, progress=False)
    assert not out.exists()
    assert "missing file" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["howto100m", "--videos", str(src), "--out", str(out)])  # --captions missing
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["manifest", "--manifest", str(manifest), "--out", str(out), "--no-progress"])
    assert e.value.code == 2 and "no usable input" in capsys.readouterr().err
    # every input fails in the workers: reported, but no dataset
    garbage(src / "bad.mp4")
    write_manifest(manifest, [{"video": "bad.mp4"}])
    with pytest.raises(PrepareError, match="every input was skipped"):
        prepare("manifest", out, manifest=manifest, workers=2, progress=False)
    assert skipped_reasons(out) == {"bad.mp4": "unreadable"}
    assert not (out / "summary.json").exists() and not (out / "index.json").exists()
    assert prep.parse_bytes("64MB") == 64_000_000 and prep.parse_bytes("1.5g") == 1_500_000_000
    assert prep.parse_bytes(4096) == 4096


def test_a_dead_worker_leaves_no_finished_dataset(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(4):
        clip(src / f"c{i}.mp4", 2.0, seed=i)
        rows.append({"video": f"c{i}.mp4"})
    manifest = write_manifest(src / "m.jsonl", rows)
    real = prep.process_input

    def dies_on_c2(cfg, item_json):
        if "c2.mp4" in item_json:
            os._exit(3)  # a crash no try/except can catch (e.g. a segfault in a decoder)
        return real(cfg, item_json)

    monkeypatch.setattr(prep, "process_input", dies_on_c2)
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match="incomplete run"):
        prepare("manifest", out, manifest=manifest, workers=2, progress=False, start_method="fork")
    assert not (out / "summary.json").exists() and not (out / "index.json").exists()
    monkeypatch.setattr(prep, "process_input", real)
    summary = prepare("manifest", out, manifest=manifest, workers=2, progress=False, start_method="fork")
    assert summary["kept"] == 4 and sorted(read_dataset(out)) == ["c0", "c1", "c2", "c3"]


class FakeBucket:
    """Stands in for litdata's object-store client (no object store here): keys -> bytes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def upload_file(self, local_path: str, remote_path: str) -> None:
        self.objects[remote_path] = Path(local_path).read_bytes()

    def download_file(self, remote_path: str, local_path: str) -> None:
        Path(local_path).write_bytes(self.objects[remote_path])

    def exists(self, path: str) -> bool:
        return path in self.objects

    def delete_file_or_directory(self, path: str) -> None:
        for key in [k for k in self.objects if k == path or k.startswith(path.rstrip("/") + "/")]:
            del self.objects[key]


def test_object_store_output_reads_and_writes_its_reports_through_litdatas_client(tmp_path, monkeypatch):
    import litdata.streaming.fs_provider as fs_provider

    bucket = FakeBucket()
    monkeypatch.setattr(fs_provider, "_get_fs_provider", lambda url, options=None: bucket)
    store = prep.Output("s3://bucket/howto/")
    assert store.remote and store.read_text("summary.json") is None
    store.write_text("summary.json", '{"kept": 1}')
    assert bucket.objects == {"s3://bucket/howto/summary.json": b'{"kept": 1}'}
    assert store.exists("summary.json") and store.read_text("summary.json") == '{"kept": 1}'
    store.delete("summary.json")
    assert not bucket.objects

    # a finished dataset in the bucket with the same fingerprint: up to date, nothing is run
    src = tmp_path / "src"
    src.mkdir()
    clip(src / "a.mp4", 2.0)
    manifest = write_manifest(src / "m.jsonl", [{"video": "a.mp4"}])
    local = prepare("manifest", tmp_path / "local", manifest=manifest, progress=False)
    for name in ("summary.json", "index.json"):
        bucket.objects[f"s3://bucket/howto/{name}"] = (tmp_path / "local" / name).read_bytes()
    remote = prepare("manifest", "s3://bucket/howto", manifest=manifest, progress=False)
    assert remote["up_to_date"] is True and remote["fingerprint"] == local["fingerprint"]


def test_an_interrupted_run_resumes_with_only_the_remaining_inputs_and_the_same_shards(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    rows = [{"video": "brief.mp4"}]  # too short: a skipped input is remembered as well
    clip(src / "brief.mp4", 0.5)
    for i in range(5):
        clip(src / f"c{i}.mp4", 2.0, seed=i)
        rows.append({"video": f"c{i}.mp4", "captions": [{"start": 0, "end": 1, "text": f"clip {i}"}]})
    manifest = write_manifest(src / "m.jsonl", rows)
    full = prepare("manifest", tmp_path / "full", manifest=manifest, workers=1, progress=False)

    calls, crashes = tmp_path / "calls.txt", tmp_path / "crashes.txt"
    real = prep.worker._build_sample

    def crashing(cfg, item):  # runs in the worker process
        with open(calls, "a") as f:
            f.write(item["input"] + "\n")
        if item["input"] == "c2.mp4" and (cfg["crash_c2"] == "always" or not crashes.exists()):
            crashes.write_text("x")
            os._exit(3)  # the worker dies half-way (a decoder crash, an OOM kill)
        return real(cfg, item)

    monkeypatch.setattr(prep.worker, "_build_sample", crashing)
    for mode in ("once", "always"):
        out = tmp_path / f"out-{mode}"
        calls.unlink(missing_ok=True)
        crashes.unlink(missing_ok=True)
        # the crash mode reaches the worker through its cfg
        monkeypatch.setattr(prep, "process_input", lambda cfg, item, mode=mode, p=prep.process_input: p({**cfg, "crash_c2": mode}, item)
                            if "crash_c2" not in cfg else p(cfg, item))
        with pytest.raises(PrepareError, match="rerun the same command"):
            prepare("manifest", out, manifest=manifest, workers=1, progress=False, start_method="fork")
        assert calls.read_text().split() == ["brief.mp4", "c0.mp4", "c1.mp4", "c2.mp4"]
        if mode == "once":
            resumed = prepare("manifest", out, manifest=manifest, workers=1, progress=False, start_method="fork")
            # only the input in flight and those after it were processed again
            assert calls.read_text().split()[4:] == ["c2.mp4", "c3.mp4", "c4.mp4"]
            assert resumed["resumed_inputs"] == 3 and resumed["kept"] == full["kept"] == 5
            assert read_dataset(out) == read_dataset(tmp_path / "full")  # same ids, bytes and metadata
            chunks = sorted(p.name for p in out.glob("*.bin"))
            assert chunks == sorted(p.name for p in (tmp_path / "full").glob("*.bin"))
            assert all((out / c).read_bytes() == (tmp_path / "full" / c).read_bytes() for c in chunks)
            assert not (out / ".prepare-tmp").exists()
        else:
            with pytest.raises(PrepareError):  # second attempt: dies again
                prepare("manifest", out, manifest=manifest, workers=1, progress=False, start_method="fork")
            third = prepare("manifest", out, manifest=manifest, workers=1, progress=False, start_method="fork")
            assert calls.read_text().split()[4:] == ["c2.mp4", "c3.mp4", "c4.mp4"]  # c2 not tried a third time
            assert third["skipped_by_reason"] == {"crashed a worker": 1, "too short": 1}
            assert sorted(read_dataset(out)) == ["c0", "c1", "c3", "c4"]
            assert skipped_reasons(out)["c2.mp4"] == "crashed a worker"


def test_the_retimer_gives_each_tick_the_frame_shown_then():
    from fractions import Fraction

    r = prep.worker._Retimer(Fraction(10))
    got = []
    for i in range(9):  # 30 fps from 0.05 s: a late start keeps its offset (first tick 0.1 s)
        got += r.push(f"f{i}", 0.05 + i / 30)
    got += r.flush(0.05 + 9 / 30)
    # tick 0.1 -> the frame of 0.0833 (f1), 0.2 -> f4 (0.1833), 0.3 -> f7 (0.2833)
    assert got == [("f1", 1), ("f4", 2), ("f7", 3)]
    short = prep.worker._Retimer(Fraction(10))  # one frame shorter than a tick is kept
    assert short.push("only", 0.0) == [] and short.flush(0.04) == [("only", 0)]
    on_tick = prep.worker._Retimer(Fraction(10))  # a timestamp a hair past a tick counts as on it
    assert on_tick.push("a", 0.0) == [] and on_tick.push("b", 0.1000004) == [("a", 0)]


def test_cli_transcode_at_the_training_rate_decodes_to_the_frames_of_the_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    fps, seconds = 30, 3.0
    # every frame writes its index in 7 black/white stripes, which lossy coding and resizing keep
    index = np.arange(int(fps * seconds))
    bits = (index[:, None] >> np.arange(7)) & 1  # frame, bit
    frames = np.zeros((len(index), 48, 64, 3), np.uint8)
    for b in range(7):
        frames[:, :, 8 * b : 8 * b + 8] = (255 * bits[:, b])[:, None, None, None]

    def indices(video: np.ndarray) -> list[int]:  # [T, H, W, 3] -> the index each frame shows
        centres = [round((8 * b + 4) * video.shape[2] / 64) for b in range(7)]
        on = video[:, :, centres].mean(axis=(1, 3)) > 128  # T, 7
        return (on * (1 << np.arange(7))).sum(axis=1).tolist()

    write_av(src / "ramp.mp4", frames, fps, np.zeros(int(seconds * SR), np.float32), SR)
    manifest = write_manifest(src / "m.jsonl", [{"video": "ramp.mp4"}])
    out = tmp_path / "shards"
    summary = main(["manifest", "--manifest", str(manifest), "--out", str(out), "--workers", "1",
                    "--transcode", "32", "--fps", "10", "--no-progress"])
    assert summary["kept"] == 1 and summary["args"]["fps"] == 10.0
    media = read_dataset(out)["ramp"]["media"]
    with av.open(_bytes_io(media)) as c:
        v = c.streams.video[0]
        assert v.average_rate == 10
        packets = [p for p in c.demux(v) if p.size]
        keyframes = [round(float(p.pts * p.time_base), 2) for p in packets if p.is_keyframe]
    assert len(packets) == 30 and keyframes == [0.0, 1.0, 2.0]
    # a window on the ticks gets the source's frames; one between ticks, those of the tick before
    for start, tick in ((0.0, 0.0), (1.4, 1.4), (0.95, 0.9)):
        got = read_clip(media, start, num_frames=12, fps=10, sample_rate=SR, num_samples=SR)
        ref = read_clip(src / "ramp.mp4", tick, num_frames=12, fps=10, sample_rate=SR, num_samples=SR)
        shown = indices(ref.video)
        assert indices(got.video) == shown and np.diff(shown).tolist() == [3] * 11, (start, indices(got.video), shown)
    with pytest.raises(ValueError, match="--transcode"):
        prepare("manifest", tmp_path / "other", manifest=manifest, fps=10)
    with pytest.raises(ValueError, match="frame rate"):
        prepare("manifest", tmp_path / "other", manifest=manifest, transcode=32, fps=0)
    with pytest.raises(ValueError, match="--x264-tune"):
        prepare("manifest", tmp_path / "other", manifest=manifest, transcode=32, x264_tune="film")


def test_transcode_tunes_x264_for_fast_decoding_unless_told_otherwise(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    clip(src / "a.mp4", 2.0, seed=3)
    manifest = write_manifest(src / "m.jsonl", [{"video": "a.mp4"}])
    settings = {}
    for tune in ("fastdecode", None):
        out = tmp_path / f"shards-{tune}"
        summary = prepare("manifest", out, manifest=manifest, transcode=32, x264_tune=tune, progress=False)
        assert summary["args"]["x264_tune"] == tune
        media = bytes(read_dataset(out)["a"]["media"])
        # x264 writes its settings into the stream (an SEI message): CAVLC and no deblocking with fastdecode
        settings[tune] = {k: media.split(k.encode() + b"=")[1][:1] for k in ("cabac", "deblock")}
    assert settings["fastdecode"] == {"cabac": b"0", "deblock": b"0"}
    assert settings[None] == {"cabac": b"1", "deblock": b"1"}
