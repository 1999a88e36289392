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
