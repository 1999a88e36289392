"""Pretraining data: manifests, caption selection, samples, batches, bad files."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import flash_and_click, model_input, write_av
from vatt.data.clip import Augment, ClipConfig, select_captions, video_to_tensor
from vatt.data.manifest import Caption, load_manifest
from vatt.data.pretrain import ClipDataset, DemoDataModule, PretrainDataModule
from vatt.data.tokenizer import WordTokenizer

TINY = ClipConfig(num_frames=8, fps=10, image_size=64, sample_rate=16000, num_captions=5, max_words=16)
UNIFORM = dataclasses.replace(TINY, sampling="uniform", max_caption_distance=None)


def _caps(*spans):
    return [Caption(s, e, f"c{i}") for i, (s, e) in enumerate(spans)]


def test_select_captions_puts_the_overlapping_caption_first_then_nearest_neighbours():
    caps = _caps((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6))
    assert select_captions(caps, 2.2, 3.0, 3) == ["c2", "c3", "c1"]  # mid 2.6: c3 starts 0.4 away, c1 ended 0.6 ago
    assert select_captions(caps, 2.5, 3.3, 5) == ["c2", "c3", "c1", "c4", "c0"]
    assert select_captions(caps, 0.0, 0.8, 3) == ["c0", "c1", "c2"]  # at the edge: only later ones
    assert select_captions(caps, 0.0, 0.8, 10) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert select_captions([], 0.0, 1.0, 5) == []


def test_select_captions_takes_the_nearest_when_none_overlaps():
    assert select_captions(_caps((0, 1), (5, 6)), 3.6, 4.4, 1) == ["c1"]


def test_manifest_skips_and_reports_bad_rows(tmp_path):
    flash_and_click(tmp_path / "ok.mp4")
    rows = [
        {"video": "ok.mp4", "captions": [{"start": 0, "end": 1, "text": "hello"}, {"start": 1, "end": 2, "text": "  "}]},
        {"video": "missing.mp4", "captions": []},
        "not json",
        {"captions": []},
        {"video": "ok.mp4"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    m = load_manifest(tmp_path / "m.jsonl")
    assert len(m.rows) == 2 and [c.text for c in m.rows[0].captions] == ["hello"] and m.rows[1].captions == []
    reasons = " | ".join(m.skipped)
    assert "line 1: empty caption" in reasons and "line 2: missing file missing.mp4" in reasons
    assert "line 3: not JSON" in reasons and "line 4: no 'video'" in reasons


def test_manifest_with_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "gone.mp4"}))
    with pytest.raises(ValueError, match="no usable row"):
        load_manifest(tmp_path / "m.jsonl")


def test_video_to_tensor_scales_to_minus_one_one_and_crops():
    frames = np.zeros((4, 10, 12, 3), np.uint8)
    frames[..., 0] = 255
    x = video_to_tensor(frames, 8, None)
    assert x.shape == (3, 4, 8, 8) and x.dtype == torch.float32
    assert x[0].eq(1).all() and x[1].eq(-1).all()
    aug = video_to_tensor(frames, 8, Augment())
    assert aug.shape == (3, 4, 8, 8) and aug.min() >= -1 and aug.max() <= 1


def _dataset(demo_root, train=False):
    rows = load_manifest(demo_root / "val.jsonl").rows
    tok = WordTokenizer.build(c.text for r in rows for c in r.captions)
    return ClipDataset(rows, tok, TINY, Augment(hue=0.0) if train else None)


def test_samples_have_documented_shapes_and_dtypes(demo_root):
    ds = _dataset(demo_root, train=True)
    s = model_input(ds[0])
    assert s["video"].shape == (3, 8, 64, 64) and s["video"].dtype == torch.float32
    assert s["video"].min() >= -1 and s["video"].max() <= 1
    assert s["audio"].shape == (12800,) and s["audio"].dtype == torch.float32
    assert s["text"].shape == (5, 16) and s["text"].dtype == torch.long
    assert s["text_mask"].shape == (5,) and s["text_mask"].dtype == torch.bool
    assert torch.equal(s["text_mask"], (s["text"] != 0).any(-1))
    assert s["skipped"].item() == 0


def ramp_clip(path, seconds: float = 4.0, fps: int = 20):
    """Frame i is grey level 10 + 3 i: the decoded brightness says which source frame (time) a sample shows."""
    frames = np.stack([np.full((48, 64, 3), 10 + 3 * i, np.uint8) for i in range(int(seconds * fps))])
    return write_av(path, frames, fps, np.zeros(int(seconds * 16000), np.float32) + 0.1, 16000)


def source_frames(video: torch.Tensor) -> list[int]:
    """``[3, T, H, W]`` in [-1, 1] of a ramp clip -> the source frame index of each of the T frames."""
    level = (video.mean(dim=(0, 2, 3)) + 1) / 2 * 255
    return [round((float(v) - 10) / 3) for v in level]


WORDS = ["alpha", "bravo", "charlie", "delta"]


def _ramp_dataset(tmp_path, augment):
    ramp_clip(tmp_path / "r.mp4")
    caps = [{"start": 0.0, "end": 1.0, "text": "alpha"}, {"start": 1.0, "end": 2.0, "text": "bravo"},
            {"start": 1.9, "end": 3.0, "text": "charlie"}, {"start": 3.0, "end": 4.0, "text": "delta"}]
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "r.mp4", "captions": caps}))
    return ClipDataset(load_manifest(tmp_path / "m.jsonl").rows, WordTokenizer.from_words(WORDS), UNIFORM, augment)


def test_validation_window_is_centred_and_deterministic(tmp_path):
    ds = _ramp_dataset(tmp_path, None)
    a, b = model_input(ds[0]), model_input(ds[0])
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    # 4 s clip, 0.8 s window: starts at (4 - 0.8) / 2 = 1.6 s; frames every 0.1 s are source frames 32, 34, ... at 20 fps
    assert source_frames(a["video"]) == [32, 34, 36, 38, 40, 42, 44, 46]
    # window [1.6, 2.4): charlie overlaps most (0.5 s), then by distance from the middle (2.0 s): bravo (ended
    # at 2.0), alpha and delta (both 1.0 s away: the earlier first)
    ids = {w: i + 2 for i, w in enumerate(WORDS)}  # after [PAD]=0 and [UNK]=1
    assert a["text"][:, 0].tolist() == [ids["charlie"], ids["bravo"], ids["alpha"], ids["delta"], 0]
    assert a["text_mask"].tolist() == [True, True, True, True, False]


def test_training_windows_lie_in_the_clip_and_follow_the_seeded_generator(tmp_path):
    ds = _ramp_dataset(tmp_path, Augment(color_prob=0.0, hue=0.0, scale_jitter_prob=0.0))
    slack = 4.0 - TINY.seconds
    starts = []
    for seed in range(6):
        torch.manual_seed(seed)
        sample = model_input(ds[0])
        torch.manual_seed(seed)
        start = float(torch.rand(())) * slack  # the first draw places the window
        assert 0.0 <= start <= slack
        expected = [int(np.floor((start + i / TINY.fps) * 20 + 1e-6)) for i in range(TINY.num_frames)]
        assert source_frames(sample["video"]) == expected
        starts.append(start)
    assert len({round(s, 3) for s in starts}) == 6  # the windows move

def _long_ramp(tmp_path, clip: ClipConfig, augment=None):
    """A 10 s clip (10 fps, grey level 10 + 2 i in frame i) with captions at known times."""
    frames = np.stack([np.full((48, 64, 3), 10 + 2 * i, np.uint8) for i in range(100)])
    write_av(tmp_path / "long.mp4", frames, 10, np.zeros(160_000, np.float32) + 0.1, 16000)
    caps = [{"start": 0.0, "end": 1.0, "text": "alpha"}, {"start": 2.0, "end": 3.0, "text": "bravo"},
            {"start": 6.0, "end": 7.0, "text": "charlie"}, {"start": 8.5, "end": 9.5, "text": "delta"}]
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "long.mp4", "captions": caps}))
    rows = load_manifest(tmp_path / "m.jsonl").rows
    return ClipDataset(rows, WordTokenizer.from_words(WORDS), clip, augment), rows[0].captions


def _start_of(video: torch.Tensor) -> float:
    level = (float(video[:, 0].mean()) + 1) / 2 * 255
    return round((level - 10) / 2) / 10  # source frame index at 10 fps -> seconds


def _bag(sample) -> list[str]:
    return [WORDS[i - 2] for i in sample["text"][:, 0].tolist() if i]


def test_caption_aligned_validation_window_is_centred_on_the_middle_caption_and_drops_far_captions(tmp_path):
    ds, _ = _long_ramp(tmp_path, dataclasses.replace(TINY, max_caption_distance=2.0))
    s = model_input(ds[0])
    # middle caption (index 2 of 4) = charlie [6, 7]: window [6.1, 6.9); delta is 1.6 s away, bravo 3.1 s, alpha 5.1 s
    assert _start_of(s["video"]) == pytest.approx(6.1, abs=0.1)
    assert _bag(s) == ["charlie", "delta"]


def test_caption_aligned_training_windows_overlap_their_caption_and_bags_are_nearest_first(tmp_path):
    clip = dataclasses.replace(TINY, max_caption_distance=2.0)
    ds, caps = _long_ramp(tmp_path, clip, Augment(color_prob=0.0, scale_jitter_prob=0.0, hue=0.0))
    by_text = {c.text: c for c in caps}
    anchors = set()
    for seed in range(12):
        torch.manual_seed(seed)
        s = model_input(ds[0])
        start = _start_of(s["video"])
        end = start + clip.seconds
        bag = [by_text[w] for w in _bag(s)]
        anchors.add(bag[0].text)
        assert bag[0].start < end + 0.1 and bag[0].end > start - 0.1  # the window overlaps its caption
        gaps = [max(0.0, c.start - end, start - c.end) for c in bag]
        assert all(g <= 2.0 + 0.1 for g in gaps) and gaps[1:] == sorted(gaps[1:])  # near, nearest first
        left_out = [c for c in caps if c not in bag]
        assert all(max(0.0, c.start - end, start - c.end) > 2.0 - 0.1 for c in left_out)  # K=5 > 4: only far ones
    assert len(anchors) >= 3  # the caption is drawn at random


def test_uniform_sampling_takes_the_nearest_caption_and_masks_it_when_too_far(tmp_path):
    # centred window [4.6, 5.4): charlie (0.6 s away) is nearest by its middle, then bravo (1.6 s away)
    for distance, bag in ((None, ["charlie", "bravo", "delta", "alpha"]), (1.0, ["charlie"]), (0.5, [])):
        ds, _ = _long_ramp(tmp_path, dataclasses.replace(TINY, sampling="uniform", max_caption_distance=distance))
        s = model_input(ds[0])
        assert _start_of(s["video"]) == pytest.approx(4.6, abs=0.1)
        assert _bag(s) == bag and s["text_mask"].sum() == len(bag)


def test_clips_without_captions_have_an_all_false_text_mask(demo_root):
    ds = _dataset(demo_root)
    ds.rows[0].captions = []
    s = model_input(ds[0])
    assert not s["text_mask"].any() and not s["text"].any()


def test_audio_and_video_windows_are_aligned(tmp_path):
    flash_and_click(tmp_path / "a.mp4", flash_time=1.2, duration=3.0)
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "a.mp4", "duration": 3.0, "captions": []}))
    rows = load_manifest(tmp_path / "m.jsonl").rows
    ds = ClipDataset(rows, WordTokenizer.from_words([]), ClipConfig(num_frames=30, fps=10, image_size=32, sample_rate=16000), None)
    s = model_input(ds[0])  # centred window [0, 3.0)
    bright = s["video"].mean(dim=(0, 2, 3))
    flash_frame = int((bright > 0.5).nonzero()[0])
    click = int(s["audio"].abs().argmax())
    assert flash_frame == 12
    assert abs(click / 16000 - flash_frame / 10) <= 0.1


def test_a_bad_file_is_skipped_counted_and_replaced(tmp_path):
    flash_and_click(tmp_path / "good.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    lines = [json.dumps({"video": v, "captions": []}) for v in ("bad.mp4", "good.mp4")]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    ds = ClipDataset(load_manifest(tmp_path / "m.jsonl").rows, WordTokenizer.from_words([]), TINY, None)
    s = model_input(ds[0])
    assert s["skipped"].item() == 1 and s["index"].item() == 1
    assert ds.bad == {0}


def test_only_bad_files_is_a_clear_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "bad.mp4"}))
    ds = ClipDataset(load_manifest(tmp_path / "m.jsonl").rows, WordTokenizer.from_words([]), TINY, None)
    with pytest.raises(RuntimeError, match="could not be read"):
        ds[0]


def test_datamodule_builds_tokenizer_and_batches(demo_root):
    dm = PretrainDataModule(str(demo_root), clip=TINY, batch_size=4, num_workers=0, augment={"hue": 0.0})
    dm.prepare_data()
    assert (demo_root / "tokenizer.json").is_file() and dm.vocab_size > 10
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))  # what the workers hand over: crop boxes' planes + augmentation parameters
    assert set(raw) == {"video_y", "video_uv", "video_box", "video_bt709", "video_crop", "video_colour", "audio_noise",
                        "noise_seed", "audio", "text", "text_mask", "index", "skipped"}
    assert raw["video_y"].dtype == torch.uint8 and raw["video_colour"].shape == (4, 4)
    # the regions around the crop boxes, padded to the batch's largest; chroma at half resolution
    h, w = raw["video_y"].shape[-2:]
    assert raw["video_y"].shape[:2] == (4, 8) and raw["video_uv"].shape == (4, 8, 2, (h + 1) // 2, (w + 1) // 2)
    assert raw["video_box"].shape == (4, 4) and (raw["video_box"][:, 2:] <= torch.tensor([w, h])).all()
    batch = dm.on_after_batch_transfer(raw, 0)  # on the training device
    assert set(batch) == {"video", "audio", "text", "text_mask", "index", "skipped"}
    assert batch["video"].shape == (4, 3, 8, 64, 64) and batch["audio"].shape == (4, 12800)
    assert batch["video"].dtype == torch.float32 and -1 <= batch["video"].min() and batch["video"].max() <= 1
    val = next(iter(dm.val_dataloader()))  # validation: no augmentation to apply
    assert set(val) == {"video", "audio", "text", "text_mask", "index", "skipped"} and val["video"].dtype == torch.uint8
    assert torch.equal(dm.on_after_batch_transfer(val, 0)["video"], val["video"].float() / 255 * 2 - 1)
    assert batch["text"].shape == (4, 5, 16) and batch["text_mask"].shape == (4, 5)
    assert len(dm.train_dataloader()) == 16 // 4 and len(dm.val_dataloader()) == 2


def test_datamodule_without_a_path_says_how_to_provide_data():
    with pytest.raises(ValueError, match="data.path is not set.*train.jsonl"):
        PretrainDataModule(None)
    with pytest.raises(FileNotFoundError, match="data.path=/no/such/dir"):
        PretrainDataModule("/no/such/dir").prepare_data()


def test_hue_rotation_keeps_greys_and_moves_red_towards_green_and_blue():
    from vatt.data.clip import rotate_hue

    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(rotate_hue(grey, 0.17), grey, atol=1e-6)
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 0.8
    assert torch.allclose(rotate_hue(red, 0.0), red, atol=1e-6)
    # same direction as HSV hue (torchvision's adjust_hue): +1/3 turn makes red green, -1/3 blue
    assert int(rotate_hue(red, 1 / 3)[0, :, 0, 0].argmax()) == 1
    assert int(rotate_hue(red, -1 / 3)[0, :, 0, 0].argmax()) == 2


def test_demo_data_is_generated_through_the_datamodule_when_missing(tmp_path):
    root = tmp_path / "demo"
    dm = DemoDataModule(str(root), clip=TINY, batch_size=2, demo_options={"num_train": 4, "num_val": 2})
    dm.prepare_data()
    assert len((root / "train.jsonl").read_text().splitlines()) == 4
    assert len((root / "val.jsonl").read_text().splitlines()) == 2
    assert (root / "tokenizer.json").is_file() and dm.vocab_size > 10
    stamp = (root / "train.jsonl").stat().st_mtime_ns
    DemoDataModule(str(root), clip=TINY, demo_options={"num_train": 4, "num_val": 2}).prepare_data()
    assert (root / "train.jsonl").stat().st_mtime_ns == stamp  # present: not generated again


def test_loader_workers_give_the_same_validation_batches_as_the_main_process(demo_root):
    batches = {}
    for workers in (0, 2):
        dm = PretrainDataModule(str(demo_root), clip=TINY, batch_size=4, val_batch_size=4, num_workers=workers)
        dm.prepare_data()
        dm.setup("fit")
        assert dm.num_workers == workers
        batches[workers] = list(dm.val_dataloader())
    assert len(batches[2]) == len(batches[0]) == 2
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["video"], b["video"])
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["text"], b["text"])


def test_default_loader_workers_leave_a_core_to_the_training_process(monkeypatch):
    import vatt.data.loading as loading

    for cores, workers in ((1, 1), (2, 1), (3, 2), (5, 4), (16, 4)):
        monkeypatch.setattr(loading, "usable_cores", lambda: cores)
        assert loading.default_num_workers(None) == workers
    assert loading.default_num_workers(3) == 3 and loading.default_num_workers(0) == 0


def _error_raised_in(filename: str, kind: type[BaseException]) -> tuple:
    code = compile("def serve():\n    raise kind('peer went away')\n", filename, "exec")
    scope = {"kind": kind}
    exec(code, scope)
    try:
        scope["serve"]()
    except BaseException as e:  # noqa: BLE001 - the test hands it to the hook
        return type(e), e, e.__traceback__


class _ReportsThroughExcepthook(torch.utils.data.Dataset):
    """In a loader worker: what ``sys.excepthook`` prints for a receiver gone mid-handshake and for a real error."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> str:
        import io
        import sys

        sharer = "/usr/lib/python3.11/multiprocessing/resource_sharer.py"
        printed, old = io.StringIO(), sys.stderr
        sys.stderr = printed
        try:
            sys.excepthook(*_error_raised_in(sharer, BrokenPipeError))  # the main process stopped while fetching
            sys.excepthook(*_error_raised_in(sharer, ConnectionResetError))
            sys.excepthook(*_error_raised_in("/src/elsewhere.py", BrokenPipeError))  # not the sharer: a real error
            sys.excepthook(*_error_raised_in(sharer, ValueError))  # the sharer broken otherwise: a real error
        finally:
            sys.stderr = old
        return printed.getvalue()


def test_loader_workers_stay_quiet_when_a_stopping_main_process_breaks_a_batch_handover():
    from vatt.data.loading import DataLoader

    (printed,) = next(iter(DataLoader(_ReportsThroughExcepthook(), batch_size=1, num_workers=1)))
    assert "BrokenPipeError" in printed and "elsewhere.py" in printed  # other errors still print
    assert "ValueError" in printed and "ConnectionResetError" not in printed
    assert printed.count("Traceback") == 2


def test_aspect_jitter_draws_independent_height_and_width_factors_with_its_probability(tmp_path, monkeypatch):
    import vatt.data.clip as clipmod

    seen = []
    real = clipmod.crop_planes

    def spy(media, crop, short, stretch, *args, **kwargs):
        seen.append(stretch)
        return real(media, crop, short, stretch, *args, **kwargs)

    monkeypatch.setattr(clipmod, "crop_planes", spy)
    ds = _ramp_dataset(tmp_path, Augment(color_prob=0.0, hue=0.0))
    for seed in range(200):
        torch.manual_seed(seed)
        ds.load(0)
    stretched = [s for s in seen if s is not None]
    assert 0.72 <= len(stretched) / len(seen) <= 0.88  # p = 0.8
    assert all(0.8 <= f <= 1.2 for s in stretched for f in s)
    assert np.corrcoef(np.array(stretched).T)[0, 1] < 0.3  # height and width drawn independently


def test_one_caption_rule_for_manifests_prepare_and_shards():
    """Each rule of clean_captions once; the three readers use it (their own tests check their reports)."""
    import json

    from vatt.data.manifest import CAPTION_EMPTY, CAPTION_UNUSABLE, Caption, clean_captions
    from vatt.data.prepare.listers import _clean_captions
    from vatt.data.shards import parse_meta

    raw = [
        {"start": 4, "end": 5, "text": " late "},            # kept, stripped, sorted after the next
        {"start": 1.0, "end": 2.0, "text": "early"},          # kept
        {"start": 1.0, "end": 1.5, "text": "earlier end"},    # kept: (start, end) order
        {"start": 0, "text": "no end"},                       # missing key
        {"start": "x", "end": 1, "text": "bad number"},       # not a number
        {"start": 0, "end": float("inf"), "text": "inf"},     # not finite
        {"start": 0, "end": 1, "text": 7},                    # text not a string
        {"start": 0, "end": 1, "text": "   "},                # empty text
        {"start": 3, "end": 2, "text": "backwards"},          # end < start
        "not a dict",
    ]
    kept, dropped = clean_captions(raw)
    assert kept == [Caption(1.0, 1.5, "earlier end"), Caption(1.0, 2.0, "early"), Caption(4.0, 5.0, "late")]
    assert dropped == [CAPTION_UNUSABLE] * 4 + [CAPTION_EMPTY] * 2 + [CAPTION_UNUSABLE]
    assert clean_captions(None) == ([], []) and clean_captions("a string") == ([], ["captions must be a list, got str"])
    rows, n = _clean_captions(raw)
    assert n == 7 and [r["text"] for r in rows] == ["earlier end", "early", "late"]
    assert parse_meta(json.dumps({"captions": raw, "duration": 6.0}))[0] == kept


def test_a_manifest_folder_is_never_generated_into(tmp_path):
    dm = PretrainDataModule(str(tmp_path / "nothing"), clip=TINY)
    with pytest.raises(FileNotFoundError, match="data.path=.*nothing does not exist"):
        dm.prepare_data()
    assert not (tmp_path / "nothing").exists()
