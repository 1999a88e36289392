"""Pretraining data: manifest rows -> (video, audio, K captions) samples -> batches.

Per clip (paper §4.1; docs/vatt.md §6): draw one window of ``num_frames / fps`` seconds (train:
uniform; val: centred), decode its frames and the audio of the same window with
``read_clip``, augment (scale jitter + random crop, flip, colour jitter; audio
noise), pick the caption that overlaps the window plus its temporal neighbours up
to K, tokenize. A clip that fails to decode is skipped, counted in the batch's
``skipped`` entry and replaced by the next clip; the run stops with a clear error
only when many clips in a row are bad.

Batch, as the model gets it: ``video`` float [B, 3, T, H, W] in [-1, 1], ``audio``
float [B, S], ``text`` long [B, K, L], ``text_mask`` bool [B, K], ``index`` long [B],
``skipped`` long [B]. The loaders hand over ``video`` as uint8 (cropped and
flipped) with each clip's colour and noise parameters; colour jitter, the scaling to
[-1, 1] and the audio noise run batched on the training device (``on_after_batch_transfer`` ->
``vatt.data.clip.finish_batch``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from vatt.errors import UserError

from .clip import Augment, ClipConfig, clip_sample, collate_clips, finish_batch
from .loading import DataLoader, default_num_workers, loader_kwargs
from .manifest import ClipRow, load_manifest
from .media import MediaError
from .skipping import FailedBefore, following, in_a_row, read_or_replace
from .tokenizer import WordTokenizer

log = logging.getLogger(__name__)



class ClipDataset(Dataset):
    """Manifest rows -> samples; see the module docstring.

    An index may be ``(epoch, i)`` (what ``EpochSampler`` yields): the clip's window
    and augmentation then come from a generator seeded by (seed, epoch, i), so a
    sample is the same whichever worker reads it and whenever a run is resumed.
    """

    def __init__(
        self, rows: list[ClipRow], tokenizer: WordTokenizer, clip: ClipConfig, augment: Augment | None, seed: int = 0
    ) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.clip = clip
        self.augment = augment
        self.seed = seed
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        sample = clip_sample(row.video, row.captions, row.duration, self.clip, self.augment, self.tokenizer, gen)
        sample["index"] = torch.tensor(index)
        return sample

    def _read(self, i: int, epoch: int | None) -> dict[str, torch.Tensor]:
        """Sample ``i``; with an ``epoch``, its window and augmentation drawn from (seed, epoch, i)."""
        if i in self.bad:  # this worker saw it fail before: skipped again without reading, and counted again
            raise FailedBefore(f"{self.rows[i].video}: failed before")
        gen = None
        if epoch is not None:
            gen = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFF_FFFF_FFFF)
        try:
            return self.load(i, gen)
        except (MediaError, OSError):
            self.bad.add(i)
            raise

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = index if isinstance(index, tuple) else (None, index)
        return read_or_replace(
            following(index, len(self.rows)),
            lambda i: self._read(i, epoch),  # a replacement draws as that clip would
            lambda i, e: f"{self.rows[i].video} ({e})",
            lambda errors: in_a_row(errors) + "; check the files the manifest names (python -m vatt.data.media "
                                              "can't decode them)",
            log,
        )


class EpochSampler(DistributedSampler):
    """This rank's share of a (seed, epoch)-determined order, as ``(epoch, index)``; can start mid-epoch.

    A ``DistributedSampler`` (Lightning leaves it in place under DDP and calls its
    ``set_epoch``), over one replica when no process group is running.
    ``ResumableLoader`` sets ``start`` when a run resumes in the middle of an epoch.
    """

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int, drop_last: bool) -> None:
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() else (1, 0)
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.start = 0

    def __iter__(self):
        start, self.start = self.start, 0
        epoch = self.epoch
        return ((epoch, i) for i in itertools.islice(super().__iter__(), start, None))


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an ``EpochSampler`` that Lightning checkpoints: the epoch and the batches it handed out.

    Lightning stores ``state_dict()`` in every checkpoint and calls
    ``load_state_dict`` when resuming; the next epoch of the same number then skips
    the batches the run had already trained on, so a run resumed mid-epoch sees the
    uninterrupted run's batches. (Lightning does not fetch ahead from a loader with a
    length, so the count is what the training loop consumed.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self):
        sampler: EpochSampler = self.sampler
        self._batches = 0
        if self._resume is not None and self._resume["epoch"] == sampler.epoch:
            self._batches = self._resume["batches"]
            sampler.start = self._batches * self.batch_size
        self._resume = None
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


# --------------------------------------------------------------------------- DataModule


def collate_and_finish(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A loader worker's ``collate_fn`` on CPU-only runs: the batch, and its ``finish_batch`` part done in the worker."""
    return finish_batch(collate_clips(samples))


class CaptionDataModule(L.LightningDataModule):
    """What every pretraining DataModule shares: the per-clip pipeline, the loaders' settings and the caption tokenizer.

    The settings here are the keys of ``configs/data/_pretrain_clip.yaml`` and
    ``vocab``/``max_vocab``; subclasses name the data and where the tokenizer lives
    (``tokenizer_path``). ``global_batch_size`` is a data setting that ``train.py``
    turns into ``batch_size`` before the DataModule is built; it is taken here only
    so that the config can hold it. ``train.py`` reads ``vocab_size`` after
    ``prepare_data`` to size the model's word table.
    """

    def __init__(
        self,
        *,
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
        vocab: str | None = None,
        max_vocab: int = 2**16,
        seed: int = 0,
        punctuation: str = "remove",
    ) -> None:
        super().__init__()
        self.clip = dataclasses.replace(ClipConfig.of(clip), sampling=sampling, max_caption_distance=max_caption_distance)
        self.augment = Augment.of(augment)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        # punctuation: how a word list splits captions (vatt.data.tokenizer); a tokenizer.json keeps its own
        self.vocab, self.max_vocab, self.punctuation = vocab, max_vocab, punctuation
        self.seed = seed
        self.tokenizer: WordTokenizer | None = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the training device: uint8 frames -> augmented model inputs, batched (``finish_batch``; a batch
        the workers finished, on CPU runs, passes through)."""
        return finish_batch(batch)

    def loader_kwargs(self, train: bool) -> dict[str, Any]:
        """The training or validation loader's arguments (``vatt.data.loading.loader_kwargs``).

        Where the run trains on the CPU, the loader workers also do the batched part of
        the augmentation (``collate_and_finish``): there it would run on the same CPU
        anyway, and in the workers it runs beside the training step instead of
        before it. The same code either way, and the same numbers.
        """
        kwargs = loader_kwargs(self.batch_size if train else self.val_batch_size, self.num_workers, train,
                               self.pin_memory, self.persistent_workers)
        if self._trains_on_cpu() and self.num_workers > 0:  # else the loaders' default, collate_clips
            kwargs["collate_fn"] = collate_and_finish
        return kwargs

    def _trains_on_cpu(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cpu"

    @property
    def tokenizer_path(self) -> Path:
        raise NotImplementedError

    def load_tokenizer(self) -> WordTokenizer:
        if self.tokenizer is None:
            self.tokenizer = WordTokenizer.from_file(self.tokenizer_path, self.punctuation)
        return self.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.load_tokenizer().vocab_size

    def val_has_captions(self) -> bool | None:
        """Whether any validation clip has a caption (None: unknown). Decides the best-checkpoint metric."""
        return None

    def vocabulary(self) -> dict[str, Any]:
        """The caption vocabulary's file and size (stored in checkpoints; a resumed run must read the same words)."""
        return {"path": str(Path(self.tokenizer_path).resolve()), "size": self.vocab_size}

    def model_kwargs(self) -> dict:
        """What the model needs from the data: the size of its word table, the words and how captions are split."""
        tokenizer = self.load_tokenizer()
        return {"vocab_size": self.vocab_size, "vocab": tokenizer.words, "punctuation": tokenizer.punctuation}


class PretrainDataModule(CaptionDataModule):
    """Streams (video, audio, K captions) from a folder with ``train.jsonl`` / ``val.jsonl``.

    ``path`` holds the manifests (and ``tokenizer.json``, built from the training
    captions on first use unless ``vocab`` names a user vocabulary); the other
    settings are ``CaptionDataModule``'s.
    """

    def __init__(
        self,
        path: str | None,
        train_manifest: str = "train.jsonl",
        val_manifest: str = "val.jsonl",
        experiment_hint: str = "",
        **settings: Any,
    ) -> None:
        if path is None or str(path) in ("", "???"):
            raise ValueError(
                f"data.path is not set{experiment_hint}: point it at a folder holding train.jsonl and val.jsonl "
                "(lines like {\"video\": \"clips/a.mp4\", \"captions\": [{\"start\": 0.0, \"end\": 2.0, \"text\": \"...\"}]}), "
                "e.g. `make train experiment=vatt_mbs data.path=/data/howto100m`, or train on the demo data with data=demo"
            )
        super().__init__(**settings)
        self.path = Path(path)
        self.train_manifest, self.val_manifest = train_manifest, val_manifest
        self.train_set: ClipDataset | None = None
        self.val_set: ClipDataset | None = None

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.vocab) if self.vocab else self.path / "tokenizer.json"

    def prepare_data(self) -> None:
        """Build the tokenizer if missing (rank 0 only)."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"data.path={self.path} does not exist; prepare a manifest folder there or fix the path")
        if not self.tokenizer_path.exists():
            if self.vocab:
                raise FileNotFoundError(f"data.vocab={self.vocab} does not exist")
            rows = load_manifest(self.path / self.train_manifest).rows
            WordTokenizer.build((c.text for r in rows for c in r.captions), self.max_vocab, self.punctuation).save(
                self.tokenizer_path)

    def val_has_captions(self) -> bool:
        return any(r.captions for r in load_manifest(self.path / self.val_manifest).rows)

    def setup(self, stage: str | None = None) -> None:
        tok = self.load_tokenizer()
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = ClipDataset(load_manifest(self.path / self.train_manifest).rows, tok, self.clip, self.augment,
                                         self.seed)
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = ClipDataset(load_manifest(self.path / self.val_manifest).rows, tok, self.clip, None)

    def train_steps_per_epoch(self, world: int) -> int:
        """Optimizer steps of an epoch on ``world`` devices (the last partial batch is dropped)."""
        return len(self.train_set) // world // self.batch_size

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.train_steps_per_epoch(world) == 0:
            raise UserError(
                f"{self.path / self.train_manifest}: {len(self.train_set)} training clips, fewer than one batch of "
                f"data.batch_size={self.batch_size} x {world} device(s): training would run no step. Lower "
                "data.batch_size or add clips")
        sampler = EpochSampler(self.train_set, shuffle=True, seed=self.seed, drop_last=True)
        return ResumableLoader(self.train_set, sampler=sampler, **self.loader_kwargs(train=True))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, **self.loader_kwargs(train=False))


class DemoDataModule(PretrainDataModule):
    """The built-in demo data (``data=demo``): generated into ``path`` on first use, then read as a manifest folder.

    ``demo_options`` are ``vatt.data.demo.generate_demo``'s arguments (sizes, seed);
    a folder that already holds the same demo is left as it is.
    """

    def __init__(self, path: str | None, demo_options: dict | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.demo_options = dict(demo_options or {})

    def prepare_data(self) -> None:
        from .demo import generate_demo

        generate_demo(self.path, **self.demo_options)
        super().prepare_data()
