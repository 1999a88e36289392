"""Labelled clips of the downstream benchmarks -> model inputs (one decode path: ``read_clip``).

``LabeledClipDataset`` turns the ``Item``s of a ``vatt.data.downstream`` listing
into samples, in one of three modes (the paper's protocols, §4 and docs/vatt.md §7):

- ``train``: one random window, Inception-style random resized crop, flip and
  colour jitter (video) or one random window (audio): fine-tuning;
- ``single``: the centred window, centre crop, no augmentation: the training
  features of a linear probe;
- ``views``: ``num_windows`` windows linearly spaced over the video (or segment)
  x ``num_crops`` spatial crops along the long side: test views, whose logits or
  probabilities are averaged per video. Audio has no crops; images no windows.

A sample: ``video`` ``[3, T, H, W]`` (``[V, 3, T, H, W]`` for views) in [-1, 1] or
``audio`` ``[S]`` (``[V, S]``), ``label`` (class index, or a multi-hot float
vector for multi-label sets), ``text`` ``[L]`` word ids when the item has a
caption and a tokenizer is given, ``index``, and ``valid``: a file that cannot be
decoded gives ``valid=False`` (zeros) in ``single``/``views`` mode, so evaluation
counts it instead of silently using another clip, and is replaced by the next clip
in ``train`` mode (counted in ``skipped``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .clip import Augment, ClipConfig, audio_to_tensor, inception_crop, video_views, window_starts
from .media import MediaError, probe_duration, read_clip
from .skipping import following, in_a_row, read_or_replace
from .tokenizer import WordTokenizer

if TYPE_CHECKING:  # only annotations: vatt.data.downstream builds these datasets
    from .downstream import Item

log = logging.getLogger(__name__)

MODES = ("train", "single", "views")


def read_image(path: str | Path, short_side: int, num_frames: int) -> np.ndarray:
    """An image repeated along time to fill ``num_frames`` (one temporal patch for ImageNet): uint8 ``[T, H, W, 3]``."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)  # 3, H, W
    except (RuntimeError, OSError) as e:
        raise MediaError(f"{path}: cannot decode the image ({e})") from e
    h, w = img.shape[1:]
    scale = short_side / min(h, w)
    size = [max(short_side, round(h * scale)), max(short_side, round(w * scale))]
    img = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    frame = img.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return np.repeat(frame[None], num_frames, axis=0)


class LabeledClipDataset(Dataset):
    """Items of a downstream listing -> samples; see the module docstring."""

    def __init__(
        self,
        items: list[Item],
        modality: str,
        clip: ClipConfig,
        mode: str,
        num_classes: int,
        multilabel: bool = False,
        augment: Augment | None = None,
        num_windows: int = 4,
        num_crops: int = 3,
        tokenizer: WordTokenizer | None = None,
    ) -> None:
        if modality not in ("video", "audio", "image"):
            raise ValueError(f"modality={modality!r}: choose video, audio or image")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose one of {MODES}")
        self.items, self.modality, self.clip, self.mode = items, modality, clip, mode
        self.num_classes, self.multilabel = num_classes, multilabel
        self.augment = augment or Augment()
        self.num_windows = num_windows if modality != "image" else 1
        self.num_crops = num_crops if modality != "audio" else 1
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_views(self) -> int:
        return self.num_windows * self.num_crops if self.mode == "views" else 1

    def _label(self, item: Item) -> torch.Tensor:
        if not self.multilabel:
            return torch.tensor(-1 if item.label is None else int(item.label))
        target = torch.zeros(self.num_classes)
        if item.label is not None:
            target[list(item.label)] = 1.0
        return target

    def _starts(self, item: Item) -> list[float]:
        c = self.clip
        duration = probe_duration(item.path)
        lo, hi = item.start or 0.0, item.end
        if self.mode == "train":
            end = duration if hi is None else min(hi, duration)
            return [lo + float(torch.rand(())) * max(0.0, end - lo - c.seconds)]
        return window_starts(duration, c.seconds, self.num_windows if self.mode == "views" else 1, lo, hi)

    def _video(self, item: Item) -> torch.Tensor:
        c = self.clip
        if self.mode == "train":
            # decode a little larger than the crop so the random resized crop has room to zoom
            short = round(c.image_size * 256 / 224)
            if self.modality == "image":
                frames = read_image(item.path, short, c.num_frames)
            else:
                frames = read_clip(item.path, self._starts(item)[0], c.num_frames, c.fps, c.sample_rate, 0, short).video
            return inception_crop(frames, c.image_size, self.augment)
        crops = self.num_crops if self.mode == "views" else 1
        if self.modality == "image":
            views = [video_views(read_image(item.path, c.image_size, c.num_frames), c.image_size, crops)]
        else:
            views = [
                video_views(read_clip(item.path, s, c.num_frames, c.fps, c.sample_rate, 0, c.image_size).video,
                            c.image_size, crops)
                for s in self._starts(item)
            ]
        out = torch.cat(views)  # windows x crops, window-major
        return out if self.mode == "views" else out[0]

    def _audio(self, item: Item) -> torch.Tensor:
        c = self.clip
        waves = [
            audio_to_tensor(read_clip(item.path, s, 0, c.fps, c.sample_rate, c.num_samples).audio,
                            self.augment if self.mode == "train" else None)
            for s in self._starts(item)
        ]
        out = torch.stack(waves)
        return out if self.mode == "views" else out[0]

    def load(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        key = "audio" if self.modality == "audio" else "video"
        sample = {
            key: self._audio(item) if key == "audio" else self._video(item),
            "label": self._label(item),
            "index": torch.tensor(index),
            "valid": torch.tensor(True),
        }
        if self.tokenizer is not None:
            sample["text"] = self.tokenizer([item.caption or ""], self.clip.max_words)[0]
        return sample

    def _blank(self, index: int) -> dict[str, torch.Tensor]:
        c, v = self.clip, self.num_views
        lead = (v,) if self.mode == "views" else ()
        sample = {"label": self._label(self.items[index]), "index": torch.tensor(index), "valid": torch.tensor(False)}
        if self.modality == "audio":
            sample["audio"] = torch.zeros(*lead, c.num_samples)
        else:
            sample["video"] = torch.zeros(*lead, 3, c.num_frames, c.image_size, c.image_size)
        if self.tokenizer is not None:
            sample["text"] = torch.zeros(c.max_words, dtype=torch.long)
        return sample

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.mode != "train":
            try:
                return {**self.load(index), "skipped": torch.tensor(0)}
            except (MediaError, OSError) as e:
                log.warning("data: cannot read %s (%s); it is counted as skipped", self.items[index].path, e)
                return {**self._blank(index), "skipped": torch.tensor(1)}
        return read_or_replace(following(index, len(self.items)), self.load,
                               lambda i, e: f"{self.items[i].path} ({e})", in_a_row, log)
