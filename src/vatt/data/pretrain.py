"""Pretraining data: manifest rows -> (video, audio, K captions) samples -> batches.

Per clip (DESIGN §3.9): draw one window of ``num_frames / fps`` seconds (train:
uniform; val: centred), decode its frames and the audio of the same window with
``read_clip``, augment (scale jitter + random crop, flip, colour jitter; audio
noise), pick the caption that overlaps the window plus its temporal neighbours up
to K, tokenize. A clip that fails to decode is skipped, counted in the batch's
``skipped`` entry and replaced by the next clip; the run stops with a clear error
only when many clips in a row are bad.

Batch: ``video`` float [B, 3, T, H, W] in [-1, 1], ``audio`` float [B, S],
``text`` long [B, K, L], ``text_mask`` bool [B, K], ``index`` long [B],
``skipped`` long [B].
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset

from .media import MediaError, probe_duration, read_clip
from .tokenizer import WordTokenizer

log = logging.getLogger(__name__)

MAX_BAD_IN_A_ROW = 16


# --------------------------------------------------------------------------- manifest


@dataclass
class Caption:
    start: float
    end: float
    text: str


@dataclass
class ClipRow:
    video: Path
    captions: list[Caption]
    duration: float | None = None
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    rows: list[ClipRow]
    skipped: list[str]  # "line N: reason" for every row or caption left out


def load_manifest(path: str | Path) -> Manifest:
    """Read a JSONL manifest; paths are relative to its folder.

    Rows naming a missing file or malformed rows are skipped with a reason;
    captions with empty text or bad times are dropped from their row (the clip
    stays, as a clip without that caption).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: manifest {path} does not exist")
    rows, skipped = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            skipped.append(f"{where}: not JSON ({e.msg})")
            continue
        if not isinstance(item, dict) or not isinstance(item.get("video"), str):
            skipped.append(f"{where}: no 'video' path")
            continue
        video = path.parent / item["video"]
        if not video.is_file():
            skipped.append(f"{where}: missing file {item['video']}")
            continue
        captions = []
        for c in item.get("captions") or []:
            try:
                cap = Caption(float(c["start"]), float(c["end"]), str(c["text"]).strip())
            except (KeyError, TypeError, ValueError):
                skipped.append(f"{where}: caption without start/end/text dropped")
                continue
            if not cap.text or cap.end < cap.start:
                skipped.append(f"{where}: empty caption or end < start dropped")
                continue
            captions.append(cap)
        captions.sort(key=lambda c: c.start)
        duration = item.get("duration")
        rows.append(ClipRow(video, captions, float(duration) if duration else None, item.get("labels") or {}))
    if not rows:
        raise ValueError(f"data: manifest {path} has no usable row ({len(skipped)} skipped, e.g. {skipped[:3]})")
    if skipped:
        log.warning("%s: %d of %d rows/captions skipped, e.g. %s", path, len(skipped), len(rows) + len(skipped), skipped[:3])
    return Manifest(rows, skipped)


def select_captions(captions: list[Caption], start: float, end: float, k: int) -> list[str]:
    """The caption overlapping ``[start, end)`` most (else the nearest), then its nearest neighbours, up to k.

    Index 0 is always the caption of the window itself (used for retrieval).
    """
    if not captions:
        return []
    mid = (start + end) / 2

    def distance(c: Caption) -> float:
        overlap = min(end, c.end) - max(start, c.start)
        return -overlap if overlap > 0 else abs((c.start + c.end) / 2 - mid)

    centre = min(range(len(captions)), key=lambda j: (distance(captions[j]), j))
    chosen, lo, hi = [centre], centre - 1, centre + 1
    while len(chosen) < k and (lo >= 0 or hi < len(captions)):
        take_lo = hi >= len(captions) or (lo >= 0 and mid - captions[lo].end <= captions[hi].start - mid)
        if take_lo:
            chosen.append(lo)
            lo -= 1
        else:
            chosen.append(hi)
            hi += 1
    return [captions[j].text for j in chosen]


# --------------------------------------------------------------------------- per-clip pipeline


@dataclass
class ClipConfig:
    num_frames: int = 32
    fps: float = 10.0
    image_size: int = 224
    sample_rate: int = 48_000
    num_captions: int = 5
    max_words: int = 16

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
    """Training augmentation (DESIGN §3.9). Set a probability to 0 to switch a step off."""

    scale_jitter: tuple[float, float] = (0.8, 1.2)
    scale_jitter_prob: float = 0.8
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
    # the I/Q angle runs opposite to HSV hue (red -> green -> blue), hence the minus
    angle = torch.tensor(-2 * torch.pi * delta)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).to(x.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, x).clamp_(0, 1)


def video_to_tensor(
    frames: np.ndarray, crop: int, augment: Augment | None, gen: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, crop, crop]`` in [-1, 1]; random crop/flip/colour with ``augment``."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # T, 3, H, W
    _, _, h, w = x.shape
    if augment is None:
        top, left = (h - crop) // 2, (w - crop) // 2
    else:
        top = int(torch.randint(0, h - crop + 1, (), generator=gen).item())
        left = int(torch.randint(0, w - crop + 1, (), generator=gen).item())
    x = x[:, :, top : top + crop, left : left + crop].float().div_(255)
    if augment is not None:
        if _rand(gen) < augment.flip_prob:
            x = x.flip(-1)
        if _rand(gen) < augment.color_prob:
            if augment.brightness:
                x = (x + _uniform(-augment.brightness, augment.brightness, gen)).clamp_(0, 1)
            x = TF.adjust_saturation(x, _uniform(*augment.saturation, gen))
            x = TF.adjust_contrast(x, _uniform(*augment.contrast, gen))
            if augment.hue:
                x = rotate_hue(x, _uniform(-augment.hue, augment.hue, gen))
    return x.mul_(2).sub_(1).permute(1, 0, 2, 3).contiguous()  # 3, T, H, W


def audio_to_tensor(wave: np.ndarray, augment: Augment | None, gen: torch.Generator | None = None) -> torch.Tensor:
    x = torch.from_numpy(wave)
    if augment is not None and augment.audio_noise > 0:
        x = x + torch.randn(x.shape, generator=gen) * augment.audio_noise * x.abs().max()
    return x


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

    ``augment=None`` is validation: centred window, no augmentation. ``gen`` makes
    the random choices reproducible (streaming shards seed it per epoch and sample,
    so a resumed run draws the same windows and augmentations).
    """
    if duration is None:
        duration = probe_duration(src)
    slack = max(0.0, duration - clip.seconds)
    start = _uniform(0.0, slack, gen) if augment is not None else slack / 2
    short = clip.image_size
    if augment is not None and _rand(gen) < augment.scale_jitter_prob:
        # zooming out below the crop size is clamped: the crop must fit in the frame
        short = max(clip.image_size, round(clip.image_size * _uniform(*augment.scale_jitter, gen)))
    media = read_clip(src, start, clip.num_frames, clip.fps, clip.sample_rate, clip.num_samples, short)
    texts = select_captions(captions, start, start + clip.seconds, clip.num_captions)
    text = torch.zeros(clip.num_captions, clip.max_words, dtype=torch.long)
    if texts:
        text[: len(texts)] = tokenizer(texts, clip.max_words)
    return {
        "video": video_to_tensor(media.video, clip.image_size, augment, gen),
        "audio": audio_to_tensor(media.audio, augment, gen),
        "text": text,
        "text_mask": (text != 0).any(-1),
    }


class ClipDataset(Dataset):
    """Manifest rows -> samples; see the module docstring."""

    def __init__(
        self, rows: list[ClipRow], tokenizer: WordTokenizer, clip: ClipConfig, augment: Augment | None
    ) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.clip = clip
        self.augment = augment
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        sample = clip_sample(row.video, row.captions, row.duration, self.clip, self.augment, self.tokenizer)
        sample["index"] = torch.tensor(index)
        return sample

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        errors = []
        for attempt in range(MAX_BAD_IN_A_ROW):
            i = (index + attempt) % len(self.rows)
            if i in self.bad:  # known bad (this worker saw it fail before): skipped again, and counted again
                errors.append(f"{self.rows[i].video}: failed before")
                continue
            try:
                sample = self.load(i)
            except (MediaError, OSError) as e:
                self.bad.add(i)
                errors.append(str(e))
                log.warning("data: skipping %s (%s)", self.rows[i].video, e)
                continue
            sample["skipped"] = torch.tensor(len(errors))  # every skip in this epoch is counted
            return sample
        raise RuntimeError(
            f"data: {MAX_BAD_IN_A_ROW} clips in a row could not be read, e.g. {errors[:2]}; "
            "check the files the manifest names (python -m vatt.data.media can't decode them)"
        )


# --------------------------------------------------------------------------- DataModule


def default_num_workers(requested: int | None, cap: int = 4) -> int:
    """``requested``, or (None) ``cap`` loader workers but never more than the CPU cores this process may use."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cap, cores))


class CaptionDataModule(L.LightningDataModule):
    """What every pretraining DataModule shares: the caption tokenizer at ``tokenizer_path``.

    ``train.py`` reads ``vocab_size`` after ``prepare_data`` to size the model's word table.
    """

    tokenizer: WordTokenizer | None = None

    @property
    def tokenizer_path(self) -> Path:
        raise NotImplementedError

    def load_tokenizer(self) -> WordTokenizer:
        if self.tokenizer is None:
            self.tokenizer = WordTokenizer.from_file(self.tokenizer_path)
        return self.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.load_tokenizer().vocab_size

    def val_has_captions(self) -> bool | None:
        """Whether any validation clip has a caption (None: unknown). Decides the best-checkpoint metric."""
        return None


class PretrainDataModule(CaptionDataModule):
    """Streams (video, audio, K captions) from a folder with ``train.jsonl`` / ``val.jsonl``.

    ``path`` holds the manifests (and ``tokenizer.json``, built from the training
    captions on first use unless ``vocab`` names a user vocabulary). With
    ``demo=True`` the built-in demo data is generated there when missing.
    """

    def __init__(
        self,
        path: str | None,
        clip: dict | ClipConfig | None = None,
        augment: dict | Augment | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        train_manifest: str = "train.jsonl",
        val_manifest: str = "val.jsonl",
        vocab: str | None = None,
        max_vocab: int = 2**16,
        demo: bool = False,
        demo_options: dict | None = None,
        experiment_hint: str = "",
    ) -> None:
        super().__init__()
        if path is None or str(path) in ("", "???"):
            raise ValueError(
                f"data.path is not set{experiment_hint}: point it at a folder holding train.jsonl and val.jsonl "
                "(lines like {\"video\": \"clips/a.mp4\", \"captions\": [{\"start\": 0.0, \"end\": 2.0, \"text\": \"...\"}]}), "
                "e.g. `make train experiment=vatt_mbs data.path=/data/howto100m`, or train on the demo data with data=demo"
            )
        self.path = Path(path)
        self.clip, self.augment = ClipConfig.of(clip), Augment.of(augment)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.train_manifest, self.val_manifest = train_manifest, val_manifest
        self.vocab, self.max_vocab = vocab, max_vocab
        self.demo, self.demo_options = demo, dict(demo_options or {})
        self.tokenizer: WordTokenizer | None = None
        self.train_set: ClipDataset | None = None
        self.val_set: ClipDataset | None = None

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.vocab) if self.vocab else self.path / "tokenizer.json"

    def prepare_data(self) -> None:
        """Generate the demo data if asked and missing; build the tokenizer if missing (rank 0 only)."""
        if self.demo:
            from .demo import generate_demo

            generate_demo(self.path, **self.demo_options)
        elif not self.path.is_dir():
            raise FileNotFoundError(f"data.path={self.path} does not exist; prepare a manifest folder there or fix the path")
        if not self.tokenizer_path.exists():
            if self.vocab:
                raise FileNotFoundError(f"data.vocab={self.vocab} does not exist")
            rows = load_manifest(self.path / self.train_manifest).rows
            WordTokenizer.build((c.text for r in rows for c in r.captions), self.max_vocab).save(self.tokenizer_path)

    def val_has_captions(self) -> bool:
        return any(r.captions for r in load_manifest(self.path / self.val_manifest).rows)

    def setup(self, stage: str | None = None) -> None:
        tok = self.load_tokenizer()
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = ClipDataset(load_manifest(self.path / self.train_manifest).rows, tok, self.clip, self.augment)
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = ClipDataset(load_manifest(self.path / self.val_manifest).rows, tok, self.clip, None)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,  # equal batches on every rank for the gathered losses and BN
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, False)
