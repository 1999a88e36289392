"""Pretraining data: manifest rows -> (video, audio, K captions) samples -> batches.

Per clip (paper §4.1; docs/vatt.md §6): draw one window of ``num_frames / fps`` seconds (train:
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

import dataclasses
import logging
import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .clip import Augment, ClipConfig, clip_sample
from .manifest import ClipRow, load_manifest
from .media import MediaError
from .tokenizer import WordTokenizer

log = logging.getLogger(__name__)

MAX_BAD_IN_A_ROW = 16


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

    def model_kwargs(self) -> dict:
        """What the model needs from the data: the size of its word table and the words (for word vectors)."""
        return {"vocab_size": self.vocab_size, "vocab": self.load_tokenizer().words}


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
        sampling: str = "caption",
        max_caption_distance: float | None = 10.0,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        global_batch_size: int | None = None,
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
        del global_batch_size  # train.py derives batch_size from it
        if path is None or str(path) in ("", "???"):
            raise ValueError(
                f"data.path is not set{experiment_hint}: point it at a folder holding train.jsonl and val.jsonl "
                "(lines like {\"video\": \"clips/a.mp4\", \"captions\": [{\"start\": 0.0, \"end\": 2.0, \"text\": \"...\"}]}), "
                "e.g. `make train experiment=vatt_mbs data.path=/data/howto100m`, or train on the demo data with data=demo"
            )
        self.path = Path(path)
        self.clip = dataclasses.replace(ClipConfig.of(clip), sampling=sampling, max_caption_distance=max_caption_distance)
        self.augment = Augment.of(augment)
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
