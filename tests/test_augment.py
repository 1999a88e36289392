"""Training augmentation split between loader workers (uint8 crop, parameters) and the device (batched ops).

The batched device code must give what the per-clip CPU pipeline gave before the
split (the reference below is that implementation, torchvision's colour functions
per clip), follow the documented distributions (docs/vatt.md §6) and be
deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import default_collate

from vatt.data.clip import (
    Augment, VIDEO_AUGMENT_FIELDS, _rand, _uniform, crop_video, draw_video_augment, finish_batch, rotate_hue,
    video_to_tensor,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def per_clip_reference(frames: np.ndarray, crop: int, augment: Augment, gen: torch.Generator) -> torch.Tensor:
    """The per-clip CPU pipeline as it was before the split: crop, flip, colour jitter, [-1, 1]."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    top = int(torch.randint(0, h - crop + 1, (), generator=gen))
    left = int(torch.randint(0, w - crop + 1, (), generator=gen))
    x = x[:, :, top : top + crop, left : left + crop].float().div_(255)
    if _rand(gen) < augment.flip_prob:
        x = x.flip(-1)
    if _rand(gen) < augment.color_prob:
        if augment.brightness:
            x = (x + _uniform(-augment.brightness, augment.brightness, gen)).clamp_(0, 1)
        x = TF.adjust_saturation(x, _uniform(*augment.saturation, gen))
        x = TF.adjust_contrast(x, _uniform(*augment.contrast, gen))
        if augment.hue:
            x = rotate_hue(x, _uniform(-augment.hue, augment.hue, gen))
    return x.mul(2).sub_(1).permute(1, 0, 2, 3).contiguous()


def worker_samples(frames: np.ndarray, crop: int, augment: Augment, seeds: range) -> list[dict]:
    """What loader workers hand over for clips seeded ``seeds``: uint8 crops and their parameters."""
    out = []
    for seed in seeds:
        video, colour = crop_video(frames, crop, augment, torch.Generator().manual_seed(seed))
        out.append({"video": video, "video_colour": colour, "audio": torch.zeros(4),
                    "audio_noise": torch.tensor(0.0), "noise_seed": torch.tensor(seed)})
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hue", [0.0, 0.2])
def test_the_batched_device_augmentation_equals_the_per_clip_pipeline_it_replaced(device, hue):
    frames = np.random.default_rng(0).integers(0, 256, (4, 20, 26, 3), dtype=np.uint8)
    augment = Augment(hue=hue)
    batch = default_collate(worker_samples(frames, 16, augment, range(32)))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (32, 3, 4, 16, 16)
    assert batch["video_colour"].shape == (32, 4)
    got = finish_batch({k: v.to(device) for k, v in batch.items()})["video"].cpu()
    want = torch.stack([per_clip_reference(frames, 16, augment, torch.Generator().manual_seed(s)) for s in range(32)])
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got - want).abs().max() < 1e-5
    # the one-process path (benchmarks, fine-tuning) is the same code
    one = video_to_tensor(frames, 16, augment, torch.Generator().manual_seed(3))
    assert (one - want[3]).abs().max() < 1e-5


def test_the_parameters_follow_the_documented_distributions_and_their_seed():
    augment = Augment()
    n = 4000
    p = torch.stack([draw_video_augment(augment, torch.Generator().manual_seed(s)) for s in range(n)])
    assert VIDEO_AUGMENT_FIELDS == ("flip", "brightness", "saturation", "contrast", "hue")
    flip, bright, sat, contrast, hue = p.unbind(1)
    assert set(flip.tolist()) == {0.0, 1.0} and abs(flip.mean().item() - 0.5) < 0.03
    jittered = (sat != 1.0) | (contrast != 1.0)
    assert abs(jittered.float().mean().item() - 0.8) < 0.03  # color_prob
    assert torch.all(bright[~jittered] == 0) and torch.all(hue[~jittered] == 0)  # no colour jitter: identity
    for values, (lo, hi) in ((bright, (-32 / 255, 32 / 255)), (sat, (0.6, 1.4)), (contrast, (0.6, 1.4)),
                             (hue, (-0.2, 0.2))):
        v = values[jittered]
        assert lo <= v.min() and v.max() <= hi
        # uniform over the range: the quartiles sit at a quarter and three quarters of it
        q1, q3 = torch.quantile(v, torch.tensor([0.25, 0.75])).tolist()
        assert q1 == pytest.approx(lo + (hi - lo) / 4, abs=0.03 * (hi - lo))
        assert q3 == pytest.approx(lo + 3 * (hi - lo) / 4, abs=0.03 * (hi - lo))
    again = draw_video_augment(augment, torch.Generator().manual_seed(7))
    assert torch.equal(again, p[7]) and not torch.equal(p[7], p[8])
    off = draw_video_augment(Augment(flip_prob=0.0, color_prob=0.0), torch.Generator().manual_seed(1))
    assert off.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]


def test_the_worker_crops_and_flips_in_uint8_and_the_colour_identity_changes_nothing():
    frames = np.random.default_rng(1).integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
    centre, none = crop_video(frames, 8, None)
    assert none is None and torch.equal(centre, torch.from_numpy(frames[:, 1:9, 2:10]).permute(3, 0, 1, 2))
    for seed in range(8):  # the crop is where the generator says, mirrored when the drawn flip says so
        gen = torch.Generator().manual_seed(seed)
        top, left = int(torch.randint(0, 3, (), generator=gen)), int(torch.randint(0, 5, (), generator=gen))
        flip = draw_video_augment(Augment(), gen)[0] > 0.5
        video, colour = crop_video(frames, 8, Augment(), torch.Generator().manual_seed(seed))
        want = torch.from_numpy(frames[:, top : top + 8, left : left + 8]).permute(3, 0, 1, 2)
        assert video.dtype == torch.uint8 and torch.equal(video, want.flip(-1) if flip else want)
        assert colour.shape == (4,)
    identity = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    out = finish_batch({"video": centre[None], "video_colour": identity})["video"]
    assert torch.equal(out, centre[None].float() / 255 * 2 - 1)


@pytest.mark.parametrize("device", DEVICES)
def test_audio_noise_has_the_clip_s_scale_and_follows_the_batch_s_seeds(device):
    audio = torch.zeros(3, 20_000, device=device)
    batch = {"video": torch.zeros(3, 3, 1, 2, 2, dtype=torch.uint8, device=device), "audio": audio,
             "audio_noise": torch.tensor([0.0, 0.01, 0.05], device=device),
             "noise_seed": torch.tensor([1, 2, 3], device=device)}
    out = finish_batch(batch)
    assert set(out) == {"video", "audio"}  # the parameters are used up
    std = out["audio"].std(dim=1).cpu()
    assert std[0] == 0 and std[1] == pytest.approx(0.01, rel=0.03) and std[2] == pytest.approx(0.05, rel=0.03)
    assert torch.equal(finish_batch(batch)["audio"], out["audio"])  # the same clips: the same noise
    other = finish_batch({**batch, "noise_seed": torch.tensor([1, 2, 4], device=device)})["audio"]
    assert not torch.equal(other, out["audio"])


def test_a_batch_built_by_hand_in_floats_passes_through():
    batch = {"video": torch.rand(2, 3, 4, 8, 8) * 2 - 1, "audio": torch.zeros(2, 10)}
    assert finish_batch(batch) is batch


# --------------------------------------------------------------------------- the crop box's planes (training clips)


def _yuv_clip(tmp_path, frames: np.ndarray, fps: int = 10):
    """An H.264 clip of ``frames`` (uint8 [T, H, W, 3]) with a silent audio track."""
    from conftest import write_av

    return write_av(tmp_path / "c.mp4", frames, fps, np.zeros(int(len(frames) / fps * 16000), np.float32), 16000)


@pytest.mark.parametrize("bt709", [False, True])
def test_the_device_colour_conversion_gives_the_limited_range_reference_colours(bt709):
    from vatt.data.clip import finish_planes

    kr, kb = (0.2126, 0.0722) if bt709 else (0.299, 0.114)
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    luma = kr * rgb[:, 0] + (1 - kr - kb) * rgb[:, 1] + kb * rgb[:, 2]  # by hand, the standard's definition
    cb, cr = (rgb[:, 2] - luma) / (2 * (1 - kb)), (rgb[:, 0] - luma) / (2 * (1 - kr))
    y = (16 + 219 * luma).view(5, 1, 1, 1).expand(5, 2, 4, 4)
    uv = torch.stack([128 + 224 * cb, 128 + 224 * cr], 1).view(5, 1, 2, 1, 1).expand(5, 2, 2, 2, 2)
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 5)
    out = finish_planes(y.contiguous(), uv.contiguous(), box, torch.tensor([bt709] * 5), 4)
    assert out.shape == (5, 3, 2, 4, 4)
    torch.testing.assert_close(out[..., 0, 0, 0], rgb, atol=1e-5, rtol=0)


def test_the_crop_box_follows_the_resized_frame_s_crop_and_is_deterministic():
    from vatt.data.clip import crop_planes
    from vatt.data.media import Clip, _resize_dims

    height, width, crop = 60, 100, 32
    rows, cols = np.mgrid[0:height, 0:width]
    y = np.stack([cols + 0 * rows] * 3).astype(np.uint8)  # luma = the column: says which columns were cut, in what order
    uv = np.stack([np.stack([rows[::2, ::2], cols[::2, ::2]])] * 3).astype(np.uint8)  # U = row, V = column (chroma px)
    media = Clip(video=y, audio=np.zeros(4, np.float32), has_audio=False, padded=False, chroma=uv)
    flips, tops = 0, set()
    for seed in range(300):
        gen = torch.Generator().manual_seed(seed)
        stretch = (_uniform(0.8, 1.2, gen), _uniform(0.8, 1.2, gen))
        state = gen.get_state()
        s = crop_planes(media, crop, 40, stretch, Augment(), gen)  # resized to a short side of 40: slack both ways
        gen.set_state(state)  # the draws by hand: the crop's corner in the resized frame, then the flip
        w2, h2 = _resize_dims(width, height, 40, stretch)
        top, left = (int(torch.randint(0, n - crop + 1, (), generator=gen)) for n in (h2, w2))
        flip = draw_video_augment(Augment(), gen)[0] > 0.5
        x1, y1, x2, y2 = s["video_box"].tolist()
        r0, c0 = int(s["video_uv"][0, 0, 0, 0]), int(s["video_y"][0, 0, -1 if flip else 0])  # the region's corner
        span = s["video_y"].shape[-1]
        if flip:  # mirrored planes, mirrored box
            assert s["video_y"][0, 0].tolist() == list(range(c0 + span - 1, c0 - 1, -1))
            x1, x2 = span - x2, span - x1
        else:
            assert s["video_y"][0, 0].tolist() == list(range(c0, c0 + span))
        # the crop of the resized frame mapped back to source pixels, exactly
        assert x1 + c0 == pytest.approx(left * width / w2, abs=1e-4) and y1 + r0 == pytest.approx(top * height / h2, abs=1e-4)
        assert x2 - x1 == pytest.approx(crop * width / w2, abs=1e-4) and y2 - y1 == pytest.approx(crop * height / h2, abs=1e-4)
        assert r0 % 2 == c0 % 2 == 0 and 0 <= x1 and x2 <= span and 0 <= y1 and y2 <= s["video_y"].shape[1]
        assert s["video_uv"].shape[-2:] == ((s["video_y"].shape[1] + 1) // 2, (span + 1) // 2)
        tops.add(top)
        again = crop_planes(media, crop, 40, stretch, Augment(), gen.set_state(state) or gen)
        assert torch.equal(again["video_y"], s["video_y"]) and torch.equal(again["video_colour"], s["video_colour"])
        flips += flip
    assert 0.42 <= flips / 300 <= 0.58 and len(tops) > 5  # flip_prob 0.5; crops all over the frame


def test_training_clips_match_the_per_clip_cpu_pipeline_they_replaced(tmp_path):
    """The same draws through the device's box resample, a resize-then-crop by hand and the CPU path before the split."""
    from vatt.data.clip import ClipConfig, clip_sample, collate_clips
    from vatt.data.media import _resize_dims, read_clip
    from vatt.data.tokenizer import WordTokenizer

    # smooth moving colour waves (periods of 20-40 pixels), like camera footage
    yy, xx = np.mgrid[0:48, 0:80].astype(np.float32)
    frames = np.stack([np.stack([np.sin(xx / 6 + i / 3), np.cos(yy / 5 - i / 4), np.sin((xx + yy) / 9)], -1)
                       for i in range(20)]) * 100 + 128
    path = _yuv_clip(tmp_path, frames.astype(np.uint8))
    clip, augment = ClipConfig(4, 10.0, 32, 16000, sampling="uniform"), Augment(color_prob=0.0, audio_noise=0.0)
    tok = WordTokenizer.from_words(["a"])
    by_hand, before = [], []
    for seed in range(12):
        new = finish_batch(collate_clips([clip_sample(path, [], 2.0, clip, augment, tok, torch.Generator().manual_seed(seed))]))
        new = new["video"][0]
        gen = torch.Generator().manual_seed(seed)  # the same draws, in the same order
        start = _uniform(0.0, 2.0 - clip.seconds, gen)
        stretch = (_uniform(0.8, 1.2, gen), _uniform(0.8, 1.2, gen)) if _rand(gen) < 0.8 else None
        state = gen.get_state()
        # by hand: the whole RGB frame resized (antialiased bilinear) as the augmentation says, then cropped
        full = torch.from_numpy(read_clip(path, start, 4, 10.0, 16000, clip.num_samples).video).permute(0, 3, 1, 2)
        w2, h2 = _resize_dims(80, 48, 32, stretch)
        resized = TF.resize(full.float(), [h2, w2], antialias=True) / 255
        top, left = (int(torch.randint(0, n - 32 + 1, (), generator=gen)) for n in (h2, w2))
        ref = resized[:, :, top : top + 32, left : left + 32]
        ref = ref.flip(-1) if draw_video_augment(augment, gen)[0] > 0.5 else ref
        by_hand.append((new - ref.permute(1, 0, 2, 3).mul(2).sub(1)).abs().mean().item() * 127.5)
        # the CPU path before the split: FFmpeg's scaler resizes the frame, then the uint8 crop
        gen.set_state(state)
        old = video_to_tensor(read_clip(path, start, 4, 10.0, 16000, clip.num_samples, 32, stretch).video, 32, augment, gen)
        before.append((new - old).abs().mean().item() * 127.5)
    # grey levels of 255: the same view; what is left is YUV 4:2:0 chroma and the resamplers' filters
    assert max(by_hand) < 2.5 and max(before) < 6.0, (by_hand, before)
