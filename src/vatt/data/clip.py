"""The per-clip pipeline every dataset shares: window -> decode -> augment -> captions -> tensors.

Clip geometry (``ClipConfig``), training augmentation (``Augment``, the paper's
§4.1 and docs/vatt.md §6), the choice of a clip's captions (``select_captions``) and the
conversion of decoded frames and audio to model inputs. Pretraining DataModules,
the shard reader, downstream datasets and the benchmarks all import from here;
decoding itself is ``vatt.data.media.read_clip``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from .manifest import Caption
from .media import Clip, _resize_dims, probe_duration, read_clip
from .tokenizer import WordTokenizer


def caption_gap(c: Caption, start: float, end: float) -> float:
    """Seconds between a caption and the window ``[start, end)`` (0 when they overlap)."""
    return max(0.0, c.start - end, start - c.end)


def select_captions(
    captions: list[Caption], start: float, end: float, k: int, anchor: int | None = None,
    max_distance: float | None = None,
) -> list[str]:
    """The window's MIL-NCE bag: its own caption, then the nearest neighbours in time, up to ``k``.

    The window's own caption is ``captions[anchor]`` (caption-aligned sampling chose
    it) or, without an anchor, the one overlapping ``[start, end)`` most, else the
    nearest. Neighbours are added nearest-first by time. Captions farther than
    ``max_distance`` seconds from the window are left out (the anchor too): a caption
    said long before or after the clip is a wrong positive. Index 0 is the window's
    own caption (used for retrieval).
    """
    if not captions:
        return []
    mid = (start + end) / 2

    def distance(c: Caption) -> float:
        overlap = min(end, c.end) - max(start, c.start)
        return -overlap if overlap > 0 else abs((c.start + c.end) / 2 - mid)

    centre = anchor if anchor is not None else min(range(len(captions)), key=lambda j: (distance(captions[j]), j))
    chosen, lo, hi = [centre], centre - 1, centre + 1
    while len(chosen) < k and (lo >= 0 or hi < len(captions)):
        take_lo = hi >= len(captions) or (lo >= 0 and mid - captions[lo].end <= captions[hi].start - mid)
        if take_lo:
            chosen.append(lo)
            lo -= 1
        else:
            chosen.append(hi)
            hi += 1
    if max_distance is not None:
        chosen = [j for j in chosen if caption_gap(captions[j], start, end) <= max_distance]
    return [captions[j].text for j in chosen]


SAMPLINGS = ("caption", "uniform")


# how many unreadable clips in a row a loader replaces before it stops with an error (every dataset)
MAX_BAD_IN_A_ROW = 16


@dataclass
class ClipConfig:
    """A clip's geometry and how its window and captions are chosen (docs/vatt.md §5-6).

    ``sampling="caption"``: a training window is placed so that it overlaps a
    randomly chosen caption (validation: centred on the middle caption), and the
    MIL-NCE bag is that caption plus its neighbours in time; clips without captions
    get uniform windows. ``"uniform"``: the window is uniform over the video
    (validation: centred) and the bag starts from the caption it overlaps most.
    ``max_caption_distance`` (seconds, null = any) leaves captions farther from the
    window out of the bag. K = ``num_captions`` (paper: 5 = the window's caption + 4).
    """

    num_frames: int = 32
    fps: float = 10.0
    image_size: int = 224
    sample_rate: int = 48_000
    num_captions: int = 5
    max_words: int = 16
    sampling: str = "caption"
    max_caption_distance: float | None = 10.0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"data.sampling={self.sampling!r}: choose one of {SAMPLINGS}")

    @classmethod
    def of(cls, value: dict | ClipConfig | None) -> ClipConfig:
        """From a config mapping (Hydra) or an instance."""
        return value if isinstance(value, cls) else cls(**(value or {}))

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))


@dataclass
class Augment:
    """Training augmentation (paper §4.1; docs/vatt.md §6). Set a probability to 0 to switch a step off."""

    scale_jitter: tuple[float, float] = (0.8, 1.2)
    scale_jitter_prob: float = 0.8
    # "aspect": independent height and width factors before the short-side resize (the authors');
    # "uniform": one factor for the short side (zoom)
    scale_jitter_mode: str = "aspect"
    flip_prob: float = 0.5
    color_prob: float = 0.8
    brightness: float = 32 / 255
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.6, 1.4)
    hue: float = 0.2
    audio_noise: float = 0.01  # Gaussian noise std relative to max |x|

    @classmethod
    def of(cls, value: dict | Augment | None) -> Augment:
        """From a config mapping (Hydra lists become tuples) or an instance."""
        if isinstance(value, cls):
            return value
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (value or {}).items()})


def _rand(gen: torch.Generator | None) -> float:
    return torch.rand((), generator=gen).item()


def _uniform(lo: float, hi: float, gen: torch.Generator | None = None) -> float:
    return lo + (hi - lo) * _rand(gen)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Shift the hue of ``[..., 3, H, W]`` RGB in [0, 1] by ``delta`` turns (±0.2 in VATT).

    A rotation of the chroma plane in YIQ space: one 3x3 matrix per clip instead of
    an RGB -> HSV -> RGB round trip, which made hue jitter most of the CPU cost of
    a 32x224² clip. Greys stay grey and luma is kept; hues move by close to
    ``delta`` (HSV and YIQ hue angles differ slightly).
    """
    m = _hue_matrices(delta)[0].to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, x).clamp_(0, 1)


def _hue_matrices(delta: float | torch.Tensor) -> torch.Tensor:
    """RGB -> RGB matrices ``[N, 3, 3]`` of hue shifts by ``delta`` turns (one or ``[N]``), on the CPU."""
    # the I/Q angle runs opposite to HSV hue (red -> green -> blue), hence the minus
    angle = torch.as_tensor(delta, dtype=torch.float32).cpu().reshape(-1) * (-2 * torch.pi)
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    rot = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], dim=-1).view(-1, 3, 3)
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


# The per-clip random parameters of the video augmentation, in this order (``draw_video_augment``):
# flip (1 = mirror), brightness offset, saturation factor, contrast factor, hue shift (turns).
# Where colour jitter is not drawn, the colour values are the identity: 0, 1, 1, 0.
VIDEO_AUGMENT_FIELDS = ("flip", "brightness", "saturation", "contrast", "hue")
_NO_COLOUR = (0.0, 1.0, 1.0, 0.0)


def draw_video_augment(augment: Augment, gen: torch.Generator | None = None) -> torch.Tensor:
    """One clip's flip and colour-jitter parameters, float ``[5]`` (``VIDEO_AUGMENT_FIELDS``).

    Drawn where the clip is read (a loader worker, from the sample's seeded
    generator, so a resumed run draws the same ones). The flip is applied there, in
    the uint8 crop's copy (free); the colour jitter to the whole batch by
    ``apply_colour``, on the training device after the transfer.
    """
    flip = float(_rand(gen) < augment.flip_prob)
    colour = list(_NO_COLOUR)
    if _rand(gen) < augment.color_prob:
        if augment.brightness:
            colour[0] = _uniform(-augment.brightness, augment.brightness, gen)
        colour[1] = _uniform(*augment.saturation, gen)
        colour[2] = _uniform(*augment.contrast, gen)
        if augment.hue:
            colour[3] = _uniform(-augment.hue, augment.hue, gen)
    return torch.tensor([flip, *colour], dtype=torch.float32)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``[B, 3, T, H, W]`` RGB as ``[B, 1, T, H, W]`` (torchvision's weights)."""
    r, g, b = x.unbind(1)
    return (r * 0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def apply_colour(x: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Colour jitter of a batch ``[B, 3, T, H, W]`` in [0, 1], in place; clip ``b`` by ``colour[b]`` (``[B, 4]``).

    The same for every frame of a clip (docs/vatt.md §6): brightness (an offset),
    saturation (a blend with the luma), contrast (a blend with each frame's mean
    luma, as ``torchvision``'s ``adjust_contrast``), hue (a rotation in YIQ,
    ``rotate_hue``), each clamped to [0, 1]. Plain batched tensor code: it runs on
    whatever device the batch is on.
    """
    colour = colour.to(device=x.device, dtype=x.dtype)
    bright, sat, contrast = (colour[:, i].view(-1, 1, 1, 1, 1) for i in range(3))
    x.add_(bright).clamp_(0, 1)
    grey = _grey(x).mul_(1 - sat)
    x.mul_(sat).add_(grey).clamp_(0, 1)
    mean = _grey(x).mean(dim=(-2, -1), keepdim=True).mul_(1 - contrast)  # per frame
    x.mul_(contrast).add_(mean).clamp_(0, 1)
    if bool((colour[:, 3] != 0).any()):
        m = _hue_matrices(colour[:, 3]).to(device=x.device, dtype=x.dtype)
        x = torch.einsum("bij,bjthw->bithw", m, x).clamp_(0, 1)
    return x


def _flip_and_colour(x: torch.Tensor, augment: Augment, gen: torch.Generator | None) -> torch.Tensor:
    """Random horizontal flip and colour jitter of one clip ``[T, 3, H, W]`` in [0, 1]."""
    params = draw_video_augment(augment, gen)
    if params[0] > 0.5:
        x = x.flip(-1)
    return apply_colour(x.transpose(0, 1)[None].clone(), params[None, 1:])[0].transpose(0, 1)


def _to_model(x: torch.Tensor) -> torch.Tensor:
    """``[T, 3, H, W]`` in [0, 1] -> ``[3, T, H, W]`` in [-1, 1]."""
    return x.mul(2).sub_(1).permute(1, 0, 2, 3).contiguous()


def crop_video(
    frames: np.ndarray, crop: int, augment: Augment | None, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 ``[T, H, W, 3]`` -> (uint8 ``[3, T, crop, crop]``, the colour parameters ``[4]`` or None): a loader's part.

    With ``augment``: a random crop, flipped as drawn (in the copy the crop makes
    anyway), and the clip's colour-jitter parameters for ``finish_video``; without:
    the centre crop.
    """
    h, w = frames.shape[1:3]
    if augment is None:
        top, left, params = (h - crop) // 2, (w - crop) // 2, None
    else:
        top = int(torch.randint(0, h - crop + 1, (), generator=gen).item())
        left = int(torch.randint(0, w - crop + 1, (), generator=gen).item())
        params = draw_video_augment(augment, gen)
    x = frames[:, top : top + crop, left : left + crop]
    if params is not None and params[0] > 0.5:
        x = x[:, :, ::-1]
    video = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 0, 1, 2)))
    return video, (params[1:].clone() if params is not None else None)


# On a CPU the colour ops are memory-bound passes over the batch: a few clips at a time
# (about this many values) stay in cache, 3x faster than whole-batch passes at demo sizes.
_CPU_CHUNK_VALUES = 2**21


def finish_video(video: torch.Tensor, colour: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``[B, 3, T, H, W]`` (what loaders hand over) -> float ``[B, 3, T, H, W]`` in [-1, 1], colour-jittered."""
    per = max(1, _CPU_CHUNK_VALUES // max(1, video[0].numel())) if len(video) else 1
    if video.device.type == "cpu" and per < len(video):
        return torch.cat([finish_video(video[i : i + per], None if colour is None else colour[i : i + per])
                          for i in range(0, len(video), per)])
    return _finish_float(video.float().div_(255), colour)


def _finish_float(x: torch.Tensor, colour: torch.Tensor | None) -> torch.Tensor:
    """RGB ``[B, 3, T, H, W]`` in [0, 1] -> colour-jittered, in [-1, 1]."""
    if colour is not None:
        x = apply_colour(x, colour)
    return x.mul_(2).sub_(1).contiguous()


def video_to_tensor(
    frames: np.ndarray, crop: int, augment: Augment | None, gen: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, crop, crop]`` in [-1, 1]; random crop/flip/colour with ``augment``.

    The whole per-clip path in one process (benchmarks, tests); loaders split it into
    ``crop_video`` (worker) and ``finish_video`` (device).
    """
    video, colour = crop_video(frames, crop, augment, gen)
    return finish_video(video[None], colour[None] if colour is not None else None)[0]


def crop_positions(height: int, width: int, crop: int, n: int) -> list[tuple[int, int]]:
    """``n`` crops of ``crop``² along the long side: n = 1 the centre; n = 3 start, centre, end (the test views)."""
    if n < 1 or crop > min(height, width):
        raise ValueError(f"cannot take {n} crops of {crop}^2 from a {height}x{width} frame")
    long_h = height > width
    span = (height if long_h else width) - crop
    offsets = [span // 2] if n == 1 else [round(i * span / (n - 1)) for i in range(n)]
    other = ((width if long_h else height) - crop) // 2
    return [(o, other) if long_h else (other, o) for o in offsets]


def video_views(frames: np.ndarray, crop: int, num_crops: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` (short side already ``crop``) -> ``[num_crops, 3, T, crop, crop]`` in [-1, 1]."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)  # T, 3, H, W
    _, _, h, w = x.shape
    return torch.stack([_to_model(x[:, :, t : t + crop, l : l + crop]) for t, l in crop_positions(h, w, crop, num_crops)])


def inception_crop(
    frames: np.ndarray, size: int, augment: Augment, area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (0.5, 2.0), gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Fine-tuning augmentation: an Inception-style random resized crop, then flip and colour jitter.

    A box of a random fraction ``area`` of the frame with aspect ratio (log-uniform)
    in ``ratio`` (the authors' fine-tuning defaults: 0.08-1 and 0.5-2), the same for
    every frame, resized to ``size``². uint8 ``[T, H, W, 3]`` -> ``[3, T, size, size]`` in [-1, 1].
    """
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)  # T, 3, H, W
    _, _, h, w = x.shape
    for _ in range(10):
        target = h * w * _uniform(*area, gen)
        aspect = float(np.exp(_uniform(np.log(ratio[0]), np.log(ratio[1]), gen)))
        bw, bh = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
        if 0 < bw <= w and 0 < bh <= h:
            top = int(torch.randint(0, h - bh + 1, (), generator=gen))
            left = int(torch.randint(0, w - bw + 1, (), generator=gen))
            break
    else:  # no box fits (extreme aspect ratio): the central square
        bh = bw = min(h, w)
        top, left = (h - bh) // 2, (w - bw) // 2
    x = TF.resized_crop(x, top, left, bh, bw, [size, size], antialias=True).clamp_(0, 1)
    return _to_model(_flip_and_colour(x, augment, gen))


def window_starts(duration: float, seconds: float, n: int, start: float = 0.0, end: float | None = None) -> list[float]:
    """Starts of ``n`` windows of ``seconds`` linearly spaced over ``[start, end]`` (default: the whole media).

    The first window begins at ``start``, the last ends at ``end``; one window is
    centred. A span shorter than a window gives windows that run past it (padded).
    """
    end = duration if end is None else min(end, duration)
    slack = max(0.0, end - start - seconds)
    if n == 1:
        return [start + slack / 2]
    return [start + i * slack / (n - 1) for i in range(n)]


def audio_noise_scale(wave: torch.Tensor, augment: Augment | None) -> float:
    """The standard deviation of a clip's Gaussian audio noise: ``audio_noise`` × max |x| (0: none)."""
    if augment is None or augment.audio_noise <= 0:
        return 0.0
    return float(augment.audio_noise * wave.abs().max())


def add_audio_noise(audio: torch.Tensor, scale: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """``audio [B, S]`` plus Gaussian noise of standard deviation ``scale[b]`` per clip, drawn from ``gen``."""
    if not bool((scale > 0).any()):
        return audio
    noise = torch.randn(audio.shape, generator=gen, device=audio.device, dtype=audio.dtype)
    return audio + noise * scale.to(audio).view(-1, *([1] * (audio.dim() - 1)))


def audio_to_tensor(wave: np.ndarray, augment: Augment | None, gen: torch.Generator | None = None) -> torch.Tensor:
    """float ``[S]``, with the training noise when ``augment`` is given (in this process: fine-tuning, tests)."""
    x = torch.from_numpy(wave)
    return add_audio_noise(x[None], torch.tensor([audio_noise_scale(x, augment)]), gen)[0]


def choose_window(
    captions: list[Caption], duration: float, clip: ClipConfig, train: bool, gen: torch.Generator | None = None
) -> tuple[float, int | None]:
    """The window start and, with caption-aligned sampling, the index of the caption it was placed around."""
    slack = max(0.0, duration - clip.seconds)
    if clip.sampling == "uniform" or not captions:
        return (_uniform(0.0, slack, gen) if train else slack / 2), None
    if train:
        anchor = int(torch.randint(0, len(captions), (), generator=gen))
        c = captions[anchor]
        # every start in (c.start - seconds, c.end) overlaps the caption; keep the window inside the video
        lo, hi = max(0.0, c.start - clip.seconds), min(slack, c.end)
        start = _uniform(lo, hi, gen) if hi > lo else min(max(lo, 0.0), slack)
        return start, anchor
    anchor = len(captions) // 2
    c = captions[anchor]
    return min(max((c.start + c.end) / 2 - clip.seconds / 2, 0.0), slack), anchor


# Training frames leave the loader workers as the decoded yuv420p planes of each clip's crop box, at the
# source's resolution (``crop_planes``); the resize to the crop size, the colour conversion, the colour
# jitter and [-1, 1] run batched on the training device (``finish_planes``, from ``finish_batch``).
# Sources whose short side exceeds this many crop sizes are shrunk in the decoder's scaler first, which
# bounds what a worker hands over and keeps the device's (antialiased) downscale within 2x-3x.
PLANES_MAX_SHORT = 2
PLANE_KEYS = ("video_y", "video_uv")


def crop_planes(media: Clip, crop: int, short: int, stretch: tuple[float, float] | None, augment: Augment,
                gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A training clip's crop box and the yuv420p planes around it, with its augmentation parameters: a loader's part.

    The box is where the crop of ``crop``² falls in the frame resized as before the split
    (short side ``short`` after the ``stretch``, ``vatt.data.media._resize_dims``), drawn
    the same way (``torch.randint`` over the resized frame's slack, then ``draw_video_augment``)
    and mapped back to source pixels exactly (fractional). The planes handed over are
    the smallest even-aligned region holding the box and a pixel around it (whole
    chroma samples), mirrored when the flip is drawn (in the copy the cut makes, the
    box mirrored with it). Keys: ``video_y`` uint8 ``[T, h, w]``, ``video_uv``
    ``[T, 2, ceil(h/2), ceil(w/2)]``, ``video_box`` float ``[x1, y1, x2, y2]`` in the
    region's pixels, ``video_bt709``, ``video_crop`` (the output size), ``video_colour`` ``[4]``.
    """
    y, uv = media.video, media.chroma
    height, width = y.shape[1:3]
    w2, h2 = _resize_dims(width, height, short, stretch)
    top = int(torch.randint(0, h2 - crop + 1, (), generator=gen).item())
    left = int(torch.randint(0, w2 - crop + 1, (), generator=gen).item())
    params = draw_video_augment(augment, gen)
    sy, sx = height / h2, width / w2
    by0, by1, bx0, bx1 = top * sy, (top + crop) * sy, left * sx, (left + crop) * sx

    def region(lo: float, hi: float, size: int) -> tuple[int, int]:
        start = max(0, math.floor(lo) - 1)
        return start - start % 2, min(size, math.ceil(hi) + 1 + (math.ceil(hi) + 1) % 2)

    (ry0, ry1), (rx0, rx1) = region(by0, by1, height), region(bx0, bx1, width)
    ys = y[:, ry0:ry1, rx0:rx1]
    us = uv[:, :, ry0 // 2 : (ry1 + 1) // 2, rx0 // 2 : (rx1 + 1) // 2]
    box = [bx0 - rx0, by0 - ry0, bx1 - rx0, by1 - ry0]
    if params[0] > 0.5:
        ys, us = ys[..., ::-1], us[..., ::-1]
        box[0], box[2] = (rx1 - rx0) - box[2], (rx1 - rx0) - box[0]
    return {"video_y": torch.from_numpy(np.ascontiguousarray(ys)), "video_uv": torch.from_numpy(np.ascontiguousarray(us)),
            "video_box": torch.tensor(box, dtype=torch.float32), "video_bt709": torch.tensor(media.bt709),
            "video_crop": torch.tensor(crop), "video_colour": params[1:].clone()}


def collate_clips(samples: list[dict[str, Any]]) -> Any:
    """``default_collate``, with each clip's ``video_y`` / ``video_uv`` planes zero-padded to the batch's largest."""
    from torch.utils.data import default_collate

    if not samples or not isinstance(samples[0], dict) or PLANE_KEYS[0] not in samples[0]:
        return default_collate(samples)
    padded = []
    for key in PLANE_KEYS:
        h = max(s[key].shape[-2] for s in samples)
        w = max(s[key].shape[-1] for s in samples)
        padded.append([torch.nn.functional.pad(s[key], (0, w - s[key].shape[-1], 0, h - s[key].shape[-2]))
                       for s in samples])
    rest = default_collate([{k: v for k, v in s.items() if k not in PLANE_KEYS} for s in samples])
    rest.update({key: torch.stack(planes) for key, planes in zip(PLANE_KEYS, padded)})
    return rest


def _yuv_to_rgb(bt709: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip, limited-range Y'CbCr (0-255) -> RGB in [0, 1]: matrices ``[B, 3, 3]`` and offsets ``[B, 3]``."""
    kr = torch.where(bt709, 0.2126, 0.299).double()
    kb = torch.where(bt709, 0.0722, 0.114).double()
    kg = 1 - kr - kb
    one, zero = torch.ones_like(kr), torch.zeros_like(kr)
    # R = Y' + 2(1-Kr) Pr, B = Y' + 2(1-Kb) Pb, G = (Y' - Kr R - Kb B) / Kg; Y' = (Y-16)/219, P = (C-128)/224
    rows = torch.stack([
        torch.stack([one, zero, 2 * (1 - kr)], -1),
        torch.stack([one, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg], -1),
        torch.stack([one, 2 * (1 - kb), zero], -1),
    ], -2)
    m = rows * torch.tensor([1 / 219, 1 / 224, 1 / 224], dtype=torch.float64)
    offset = -(m @ torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64))
    return m.float(), offset.float()


def finish_planes(y: torch.Tensor, uv: torch.Tensor, box: torch.Tensor, bt709: torch.Tensor, crop: int) -> torch.Tensor:
    """Padded planes with their crop boxes (``collate_clips``) -> RGB ``[B, 3, T, crop, crop]`` in [0, 1], on their device.

    Each clip's box (fractional, ``[x1, y1, x2, y2]``) is resampled to ``crop``² by
    ``torchvision.ops.roi_align`` for the whole batch at once: each output pixel averages
    ceil(box / crop)² bilinear samples of its cell (an area filter when shrinking, bilinear
    when enlarging); the half-resolution chroma goes through the same boxes at scale 1/2.
    Then each clip's colour matrix (BT.601 or BT.709, limited range, as FFmpeg's scaler
    converts) and a clamp.
    """
    from torchvision.ops import roi_align

    b, t = y.shape[:2]
    rois = torch.cat([torch.arange(b, device=y.device, dtype=torch.float32)[:, None], box.to(y.device).float()], 1)
    luma = roi_align(y.float(), rois, crop, 1.0, -1, True)  # B, T, crop, crop
    chroma = roi_align(uv.flatten(1, 2).float(), rois, crop, 0.5, -1, True).view(b, t, 2, crop, crop)
    yuv = torch.cat([luma[:, None], chroma.transpose(1, 2)], 1)  # B, 3, T, crop, crop
    m, offset = _yuv_to_rgb(bt709.cpu().bool())
    rgb = torch.einsum("bij,bjthw->bithw", m.to(y.device), yuv).add_(offset.to(y.device).view(b, 3, 1, 1, 1))
    return rgb.clamp_(0, 1)


def draw_scale_jitter(clip: ClipConfig, augment: Augment | None,
                      gen: torch.Generator | None = None) -> tuple[int, tuple[float, float] | None]:
    """A training clip's resize before the crop: the short side and the (height, width) stretch (None: none)."""
    short, stretch = clip.image_size, None
    if augment is not None and _rand(gen) < augment.scale_jitter_prob:
        if augment.scale_jitter_mode == "aspect":
            stretch = (_uniform(*augment.scale_jitter, gen), _uniform(*augment.scale_jitter, gen))
        else:  # zooming out below the crop size is clamped: the crop must fit in the frame
            short = max(clip.image_size, round(clip.image_size * _uniform(*augment.scale_jitter, gen)))
    return short, stretch


def caption_tokens(captions: list[Caption], start: float, anchor: int | None, clip: ClipConfig,
                   tokenizer: WordTokenizer) -> torch.Tensor:
    """The window's K captions (``select_captions``) as word ids ``[K, max_words]``, zero rows where there are fewer."""
    texts = select_captions(captions, start, start + clip.seconds, clip.num_captions, anchor, clip.max_caption_distance)
    text = torch.zeros(clip.num_captions, clip.max_words, dtype=torch.long)
    if texts:
        text[: len(texts)] = tokenizer(texts, clip.max_words)
    return text


def clip_sample(
    src: str | Path | bytes,
    captions: list[Caption],
    duration: float | None,
    clip: ClipConfig,
    augment: Augment | None,
    tokenizer: WordTokenizer,
    gen: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The per-clip pipeline every dataset shares: window -> decode -> augment -> K captions -> tokens.

    ``augment=None`` is validation: a deterministic window, no augmentation. The
    sample's ``video`` is uint8 ``[3, T, S, S]`` (cropped, flipped); with ``augment`` it also carries
    the clip's ``video_colour`` parameters, ``audio_noise`` scale and ``noise_seed``, which
    ``finish_batch`` applies to the batch on the training device. ``gen``
    makes the random choices reproducible (streaming shards seed it per epoch and
    sample, so a resumed run draws the same windows and augmentations).
    """
    if duration is None:
        duration = probe_duration(src)
    start, anchor = choose_window(captions, duration, clip, augment is not None, gen)
    short, stretch = draw_scale_jitter(clip, augment, gen)
    if augment is None:  # validation: deterministic views, resized and centre-cropped here
        media = read_clip(src, start, clip.num_frames, clip.fps, clip.sample_rate, clip.num_samples, short)
    else:  # training: the planes of the crop box; resize and colour on the device (finish_planes)
        media = read_clip(src, start, clip.num_frames, clip.fps, clip.sample_rate, clip.num_samples,
                          PLANES_MAX_SHORT * clip.image_size, output="yuv420p")
    text = caption_tokens(captions, start, anchor, clip, tokenizer)
    audio = torch.from_numpy(media.audio)
    sample = {"audio": audio, "text": text, "text_mask": (text != 0).any(-1)}
    if augment is None:
        sample["video"] = crop_video(media.video, clip.image_size, None, gen)[0]
    else:
        sample.update(crop_planes(media, clip.image_size, short, stretch, augment, gen))
        sample["audio_noise"] = torch.tensor(audio_noise_scale(audio, augment))
        sample["noise_seed"] = torch.randint(0, 2**62, (), generator=gen)
    return sample


def finish_batch(batch: Any) -> Any:
    """A pretraining batch as loaders hand it over -> model inputs; ``DataModule.on_after_batch_transfer`` calls it.

    Loader workers do what needs a CPU (decode the window, cut the yuv420p planes
    around each training clip's crop box, flipped as drawn; ``crop_planes``) and send
    them, padded by ``collate_clips``, with each clip's box and colour and noise
    parameters; here, on the training device and batched, the boxes are resampled to
    the crop size and converted to RGB (``finish_planes``), colour-jittered and scaled
    to [-1, 1], and the audio gets its noise (drawn from a generator seeded by the
    batch's clips, so a resumed run adds the same). Validation batches carry uint8 RGB
    crops, which only become floats in [-1, 1]. A batch whose video is already float
    (built by hand) is returned as is.
    """
    if isinstance(batch, dict) and PLANE_KEYS[0] in batch:
        out = dict(batch)
        y, uv, box, bt709, crop = (out.pop(k) for k in (*PLANE_KEYS, "video_box", "video_bt709", "video_crop"))
        colour, crop = out.pop("video_colour", None), int(crop[0])
        # on a CPU a few clips at a time stay in cache (as finish_video)
        per = max(1, _CPU_CHUNK_VALUES // (3 * y.shape[1] * crop * crop)) if y.device.type == "cpu" else len(y)
        out["video"] = torch.cat([
            _finish_float(finish_planes(y[i : i + per], uv[i : i + per], box[i : i + per], bt709[i : i + per], crop),
                          None if colour is None else colour[i : i + per])
            for i in range(0, len(y), per)])
        return _finish_audio(out)
    if not isinstance(batch, dict) or not isinstance(batch.get("video"), torch.Tensor) \
            or batch["video"].dtype != torch.uint8:
        return batch
    out = dict(batch)
    out["video"] = finish_video(out["video"], out.pop("video_colour", None))
    return _finish_audio(out)


def _finish_audio(out: dict[str, Any]) -> dict[str, Any]:
    scale, seeds = out.pop("audio_noise", None), out.pop("noise_seed", None)
    if scale is not None and seeds is not None:
        gen = torch.Generator(device=out["audio"].device)
        gen.manual_seed(hash(tuple(seeds.tolist())) & (2**63 - 1))
        out["audio"] = add_audio_noise(out["audio"], scale, gen)
    return out
