"""Streaming pretraining data from prepared shards (``data=shards``).

``python -m vatt.data.prepare`` writes litdata shards whose samples are
``{"id": str, "media": bytes, "meta": json str}`` (meta: captions, labels,
duration, source). This module streams them, locally or from object storage,
through the same per-clip pipeline as the manifest data (``clip_sample``):
window -> decode from memory -> augment -> K captions -> tokens.

- Several sources mix with weights (paper: HowTo100M + AudioSet about 50/50).
- litdata splits the chunks over ranks and dataloader workers; one source is read
  exactly once per epoch.
- ``StreamingDataLoader`` is stateful and Lightning stores its state in the
  checkpoint, so a resumed run continues mid-epoch with the batches an
  uninterrupted run would have seen: the random window and augmentation of a
  sample are drawn from a generator seeded by (seed, epoch, sample index), not
  from the worker's global RNG.
- A sample that fails to decode is skipped, logged with its reason and replaced
  by a neighbour from its chunk, read beside the stream (which does not advance,
  so a resumed run's position is exact); the replacement counts it in its
  ``skipped`` entry (logged as ``data/skipped``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from litdata import CombinedStreamingDataset, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex

from .clip import Augment, ClipConfig, MAX_BAD_IN_A_ROW, clip_sample
from .manifest import Caption, clean_captions
from .media import MediaError
from .objectstore import allow_plain_http
from .loading import StreamingDataLoader, default_num_workers, own_generator
from .pretrain import CaptionDataModule
from .tokenizer import WordTokenizer

log = logging.getLogger(__name__)



def _canonical(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def _read_summary(path: str) -> dict | None:
    """The ``summary.json`` that ``prepare`` writes beside a local shard folder (None for URLs or when absent)."""
    if "://" in path:
        return None
    f = Path(path) / "summary.json"
    return json.loads(f.read_text()) if f.is_file() else None


def parse_meta(meta: str) -> tuple[list[Caption], float | None, dict]:
    m = json.loads(meta)
    captions, _ = clean_captions(m.get("captions"))  # prepare stored clean ones; the same rule for any other writer
    return captions, m.get("duration"), m


class ClipShardDataset(StreamingDataset):
    """A litdata ``StreamingDataset`` of prepared clips, yielding training samples."""

    def __init__(
        self,
        input_dir: str,
        tokenizer: WordTokenizer | None,
        clip: ClipConfig,
        augment: Augment | None,
        shuffle: bool,
        seed: int = 42,
        drop_last: bool | None = None,
        source_id: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_dir=input_dir, shuffle=shuffle, seed=seed, drop_last=drop_last, **kwargs)
        self.tokenizer = tokenizer
        self.clip = clip
        self.augment = augment
        self.source_id = source_id  # sample ids are source_id * 2**32 + index: unique over mixed sources

    def raw(self, index: Any) -> dict[str, Any]:
        return super().__getitem__(index)

    def _sample(self, index: Any) -> dict[str, torch.Tensor]:
        """Decode and augment one stored sample; raises on a bad one."""
        item = self.raw(index)
        flat = int(getattr(index, "index", index))
        gen = torch.Generator().manual_seed(hash((self.seed, self.current_epoch, flat)) & 0x7FFF_FFFF_FFFF)
        try:
            captions, duration, _ = parse_meta(item["meta"])
            # litdata hands out a memoryview; read_clip takes bytes
            sample = clip_sample(bytes(item["media"]), captions, duration, self.clip, self.augment, self.tokenizer, gen)
        except (MediaError, ValueError, KeyError) as e:
            raise MediaError(f"shard sample {item.get('id', flat)}: {e}") from e
        sample["index"] = torch.tensor(flat + (self.source_id << 32))
        return sample

    def _neighbours(self, index: Any) -> Any:
        """Other samples of the chunk ``index`` is in (after it, then before it), as litdata indices."""
        flat = int(getattr(index, "index", index))
        chunk = getattr(index, "chunk_index", None)
        for k in range(1, MAX_BAD_IN_A_ROW):
            for j in (flat + k, flat - k):
                if not 0 <= j < len(self):
                    continue
                if chunk is None:
                    yield j
                    continue
                try:
                    j_chunk = self.cache._get_chunk_index_from_index(j)[1]
                except Exception:  # noqa: BLE001 - outside the dataset's region of interest
                    continue
                if j_chunk == chunk:
                    yield ChunkedIndex(index=j, chunk_index=chunk, chunk_indexes=getattr(index, "chunk_indexes", None))

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        """The sample at ``index``; a bad one is replaced by a neighbour in its chunk and counted in ``skipped``.

        The replacement is read beside the stream, which does not advance: the
        loader's position (what a checkpoint records) stays the number of samples
        it handed out, so a resumed run continues exactly, skips or not.
        """
        errors = []
        for candidate in itertools.chain([index], self._neighbours(index)):
            try:
                sample = self._sample(candidate)
            except MediaError as e:
                errors.append(str(e))
                log.warning("data: skipping %s", e)
                if len(errors) >= MAX_BAD_IN_A_ROW:
                    break
                continue
            sample["skipped"] = torch.tensor(len(errors))
            return sample
        raise RuntimeError(
            f"data: {len(errors)} shard samples around sample {int(getattr(index, 'index', index))} could not be decoded "
            f"(e.g. {errors[:2]}); check the shards in {self.input_dir.path or self.input_dir.url}"
        )


class ShardsDataModule(CaptionDataModule):
    """Streams prepared shards; see the module docstring.

    ``sources``: list of ``{"path": dir_or_url, "weight": float}`` for training;
    ``val_sources`` likewise (weights ignored; all are read in full). ``vocab``: a
    tokenizer file; without one the vocabulary is built from the training
    sources' captions once and saved to ``cache_dir/tokenizer.json``.
    """

    def __init__(
        self,
        sources: list[dict] | None,
        path: str | None = None,
        val_path: str | None = None,
        val_sources: list[dict] | None = None,
        clip: dict | ClipConfig | None = None,
        augment: dict | Augment | None = None,
        sampling: str = "caption",
        max_caption_distance: float | None = 10.0,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        global_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        vocab: str | None = None,
        max_vocab: int = 2**16,
        cache_dir: str = "data/cache",
        seed: int = 42,
        experiment_hint: str = "",
    ) -> None:
        super().__init__()
        del path, val_path, global_batch_size  # shortcuts for the sources; train.py derives batch_size
        if not sources or any(not s.get("path") for s in sources):
            raise ValueError(
                f"data.sources is not set{experiment_hint}: give prepared shard folders/URLs, e.g. "
                "data.sources='[{path: data/shards/howto100m, weight: 0.5}, {path: data/shards/audioset, weight: 0.5}]' "
                "(make them with `python -m vatt.data.prepare ...`)"
            )
        self.sources = [dict(s) for s in sources]
        self.val_sources = [dict(s) for s in (val_sources or []) if s.get("path")]
        self.clip = dataclasses.replace(ClipConfig.of(clip), sampling=sampling, max_caption_distance=max_caption_distance)
        self.augment = Augment.of(augment)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.vocab, self.max_vocab = vocab, max_vocab
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.tokenizer: WordTokenizer | None = None

    def _vocab_key(self) -> dict[str, Any]:
        """What the built vocabulary depends on: the training sources (with their preparation fingerprints)."""
        sources = []
        for src in self.sources:
            summary = _read_summary(src["path"])
            sources.append({"path": _canonical(src["path"]), "fingerprint": (summary or {}).get("fingerprint")})
        return {"sources": sources, "max_vocab": self.max_vocab}

    @property
    def tokenizer_path(self) -> Path:
        """``data.vocab``, else a vocabulary built once per set of training sources under ``cache_dir``.

        The cache folder is keyed by the sources, so two datasets never share a
        vocabulary; ``sources.json`` beside it records what it was built from.
        """
        if self.vocab:
            return Path(self.vocab)
        key = json.dumps(self._vocab_key(), sort_keys=True)
        return self.cache_dir / f"vocab-{hashlib.sha1(key.encode()).hexdigest()[:16]}" / "tokenizer.json"

    def prepare_data(self) -> None:
        path = self.tokenizer_path
        if self.vocab:
            if not path.exists():
                raise FileNotFoundError(f"data.vocab={self.vocab} does not exist")
            return
        record = path.parent / "sources.json"
        if path.exists():
            built_from = json.loads(record.read_text()) if record.exists() else None
            if built_from != self._vocab_key():
                raise ValueError(
                    f"the cached vocabulary {path} was built from {built_from}, not from this run's sources "
                    f"{self._vocab_key()}; delete {path.parent} to rebuild it, or give one with data.vocab=FILE"
                )
            return
        texts = []
        for src in self.sources:
            ds = StreamingDataset(src["path"])
            for i in range(len(ds)):
                texts.extend(c.text for c in parse_meta(ds[i]["meta"])[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        WordTokenizer.build(texts, self.max_vocab).save(path)
        record.write_text(json.dumps(self._vocab_key(), indent=1, sort_keys=True))

    def val_has_captions(self) -> bool | None:
        """Whether any validation clip has a caption, from the shards' ``summary.json`` (None: unknown)."""
        counts = [(_read_summary(s["path"]) or {}).get("kept_with_captions") for s in self.val_sources]
        if not counts or any(c is None for c in counts):
            return None
        return sum(counts) > 0

    def _dataset(self, path: str, train: bool, source_id: int = 0) -> ClipShardDataset:
        return ClipShardDataset(
            path, self.load_tokenizer(), self.clip, self.augment if train else None, shuffle=train, seed=self.seed,
            drop_last=train, source_id=source_id,
        )

    def train_dataloader(self) -> StreamingDataLoader:
        allow_plain_http()  # an http:// AWS_ENDPOINT_URL (set after import)
        datasets = [self._dataset(s["path"], True, i) for i, s in enumerate(self.sources)]
        if len(datasets) == 1:
            dataset = datasets[0]
        else:
            weights = [float(s.get("weight", 1.0)) for s in self.sources]
            dataset = CombinedStreamingDataset(datasets, seed=self.seed, weights=weights, iterate_over_all=False)
        return StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
            drop_last=True,  # equal batches on every rank for the gathered losses and BN
        )

    def val_dataloader(self) -> StreamingDataLoader | list:
        if not self.val_sources:
            return []
        datasets = [self._dataset(s["path"], False, i) for i, s in enumerate(self.val_sources)]
        dataset = datasets[0] if len(datasets) == 1 else CombinedStreamingDataset(datasets, iterate_over_all=True)
        return StreamingDataLoader(
            dataset, batch_size=self.val_batch_size, num_workers=self.num_workers, persistent_workers=self.persistent_workers,
            generator=own_generator(),
        )
