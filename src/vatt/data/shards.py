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

import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from litdata import CombinedStreamingDataset, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from litdata.utilities.env import _DistributedEnv

from vatt.errors import UserError

from .clip import Augment, ClipConfig, MAX_BAD_IN_A_ROW, clip_sample
from .loading import StreamingDataLoader
from .manifest import Caption, clean_captions
from .media import MediaError
from .objectstore import allow_plain_http
from .pretrain import CaptionDataModule
from .skipping import read_or_replace
from .tokenizer import WordTokenizer

log = logging.getLogger(__name__)

# how several training sources are mixed (data.mix)
MIXES = ("weighted", "all")



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
        return read_or_replace(
            itertools.chain([index], self._neighbours(index)), self._sample, lambda _, e: str(e),
            lambda errors: f"data: {len(errors)} shard samples around sample {int(getattr(index, 'index', index))} "
                           f"could not be decoded (e.g. {errors[:2]}); check the shards in "
                           f"{self.input_dir.path or self.input_dir.url}",
            log, errors=(MediaError,),
        )


class WeightedMix(CombinedStreamingDataset):
    """Several sources mixed by weight, in a fixed order: clip t comes from the source most behind its share.

    litdata's weighted mix draws the source of each clip at random, so how many
    clips an epoch holds (it ends when a source runs out) is known only on average.
    Here clip t is taken from the source i with the largest w_i·(t + 1) − y_i (y_i:
    clips taken from it so far; ties: the first source): after t clips every source
    has given w_i·t of them, ±1. The rule depends only on the counts, which litdata
    keeps in its loader state, so a resumed run continues the same sequence.

    The source that runs out ends the epoch of every source: litdata advances a
    source's epoch (its shuffle) only when that source runs out, so in a persistent
    loader worker the others would restart the next epoch in the order they had, and
    read the same clips every epoch, while the loader's state (which a resumed run
    starts from) holds the epoch of the loader.
    """

    def __iter__(self):
        iterator = super().__iter__()
        weights = [w / sum(self._weights) for w in self._weights]
        started = [d.current_epoch for d in self._datasets]

        def next_source() -> int:
            taken = iterator._num_samples_yielded
            t = sum(taken)
            return max(range(len(weights)), key=lambda i: (weights[i] * (t + 1) - taken[i], -i))

        get_sample = iterator._get_sample

        def sample(index: int):
            try:
                return get_sample(index)
            except StopIteration:
                for dataset, epoch in zip(self._datasets, started):
                    if dataset.current_epoch == epoch:  # not run out: its epoch ends with the mix's
                        dataset.current_epoch += 1
                        dataset.reset_state_dict()
                raise

        iterator._set_new_dataset_index = next_source
        iterator._get_sample = sample
        return iterator


def weighted_mix_taken(shares: list[int], weights: list[float], limit: int | None = None) -> list[int]:
    """Clips a ``WeightedMix`` takes from each source (``shares[i]`` clips) before one runs out, or in its first ``limit``."""
    total = sum(weights)
    taken = [0] * len(shares)
    t = 0
    while limit is None or t < limit:
        i = max(range(len(shares)), key=lambda k: (weights[k] / total * (t + 1) - taken[k], -k))
        if taken[i] == shares[i]:
            break
        taken[i] += 1
        t += 1
    return taken


def weighted_mix_length(shares: list[int], weights: list[float]) -> int:
    """Clips a ``WeightedMix`` yields before a source with ``shares[i]`` clips runs out (one loader worker's part)."""
    return sum(weighted_mix_taken(shares, weights))


def worker_parts(dataset: StreamingDataset, world: int, num_workers: int, batch_size: int,
                 num_nodes: int = 1) -> list[int]:
    """Clips of ``dataset`` each of the ``world`` x ``num_workers`` loader workers reads in an epoch (rank-major).

    Taken from litdata's own split (the dataset's shuffler), which gives every rank the
    same number of whole batches and divides them among the rank's workers, so a
    plan built on it is what the loaders will do.
    """
    workers = max(1, num_workers)
    dataset.get_len(workers, batch_size)  # builds the shuffler
    _, intervals = dataset.shuffler.get_chunks_and_intervals_per_workers(
        _DistributedEnv(world, 0, max(1, num_nodes)), workers, batch_size, dataset.current_epoch)
    return [sum(int(iv[2]) - int(iv[1]) for iv in worker) for worker in intervals]


def clips_in(dataset: StreamingDataset) -> int:
    """Every clip of ``dataset`` (one worker's part when it is alone)."""
    return sum(worker_parts(dataset, 1, 1, 1))


class ShardsDataModule(CaptionDataModule):
    """Streams prepared shards; see the module docstring.

    ``sources``: list of ``{"path": dir_or_url, "weight": float}`` for training;
    ``val_sources`` likewise (weights ignored; all are read in full). ``vocab``: a
    tokenizer file; without one the vocabulary is built from the training
    sources' captions once and saved to ``cache_dir/tokenizer.json``. The other
    settings are ``CaptionDataModule``'s.
    """

    def __init__(
        self,
        sources: list[dict] | None,
        path: str | None = None,
        val_path: str | None = None,
        val_sources: list[dict] | None = None,
        persistent_workers: bool = True,
        cache_dir: str = "data/cache",
        seed: int = 42,
        experiment_hint: str = "",
        mix: str = "weighted",
        max_cache_size: str | int = "100GB",
        **settings: Any,
    ) -> None:
        # path, val_path: one-source shortcuts, which configs/data/shards.yaml puts into sources and val_sources
        if not sources or any(not s.get("path") for s in sources):
            raise ValueError(
                f"data.sources is not set{experiment_hint}: give prepared shard folders/URLs, e.g. "
                "data.sources='[{path: data/shards/howto100m, weight: 0.5}, {path: data/shards/audioset, weight: 0.5}]' "
                "(make them with `python -m vatt.data.prepare ...`)"
            )
        weights = [float(s.get("weight", 1.0)) for s in sources]
        if any(not w > 0 for w in weights):
            raise UserError(f"data.sources: every weight must be positive, got {weights}")
        if mix not in MIXES:
            raise UserError(f"data.mix={mix!r}: choose weighted (draw by the sources' weights) or all (every clip of "
                            "every source once per epoch)")
        super().__init__(persistent_workers=persistent_workers, seed=seed, **settings)
        self.sources, self.weights = [dict(s) for s in sources], weights
        self.mix = mix
        self.max_cache_size = max_cache_size
        self.val_sources = [dict(s) for s in (val_sources or []) if s.get("path")]
        self.cache_dir = Path(cache_dir)

    def _vocab_key(self) -> dict[str, Any]:
        """What the built vocabulary depends on: the training sources (with their preparation fingerprints)."""
        sources = []
        for src in self.sources:
            summary = _read_summary(src["path"])
            sources.append({"path": _canonical(src["path"]), "fingerprint": (summary or {}).get("fingerprint")})
        key = {"sources": sources, "max_vocab": self.max_vocab}
        if self.punctuation != "split":  # the rule of caches built before it was a setting
            key["punctuation"] = self.punctuation
        return key

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
            ds = StreamingDataset(src["path"], max_cache_size=self.max_cache_size)
            for i in range(len(ds)):
                texts.extend(c.text for c in parse_meta(ds[i]["meta"])[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        WordTokenizer.build(texts, self.max_vocab, self.punctuation).save(path)
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
            drop_last=train, source_id=source_id, max_cache_size=self.max_cache_size,
        )

    def epoch_plan(self, parts: list[list[int]], world: int) -> tuple[list[int], int]:
        """Clips an epoch reads from each training source (all ranks together), and the steps of an epoch.

        ``parts[i][w]``: the clips of source i that loader worker w (of ``world`` x
        ``num_workers``, rank-major; ``worker_parts``) holds. Each worker makes its own
        batches from its parts and drops its last partial batch. One source, or
        ``mix="all"``: a worker reads all of its parts (a partial batch, which litdata's
        whole-batch split does not leave, is counted against its largest part).
        ``mix="weighted"``: a worker's epoch ends when its part of a source runs out
        (``weighted_mix_taken``). Steps: rank 0's batches (litdata gives every rank as many).
        """
        workers = max(1, self.num_workers)
        reads = [0] * len(parts)
        seen: dict[tuple[int, ...], list[int]] = {}  # workers mostly hold one of a few share vectors
        steps = [0] * world
        for w in range(world * workers):
            shares = tuple(p[w] for p in parts)
            if shares not in seen:
                if len(parts) == 1 or self.mix == "all":
                    taken = list(shares)
                    drop = sum(taken) % self.batch_size
                    taken[taken.index(max(taken))] -= drop
                else:
                    taken = weighted_mix_taken(list(shares), self.weights)
                    taken = weighted_mix_taken(list(shares), self.weights, sum(taken) // self.batch_size * self.batch_size)
                seen[shares] = taken
            reads = [r + t for r, t in zip(reads, seen[shares])]
            steps[w // workers] += sum(seen[shares]) // self.batch_size
        if len(set(steps)) > 1 and rank_zero_only.rank == 0:
            log.warning("training data: the ranks' loaders hold %s batches per epoch; DDP needs equal counts", steps)
        return reads, steps[0]

    def plan(self, world: int, datasets: list[StreamingDataset] | None = None) -> tuple[list[int], list[int], int]:
        """On ``world`` devices: each training source's clips, the clips an epoch reads of it, and an epoch's steps.

        ``datasets``: the training loader's (else read from the sources' indexes alone).
        """
        if datasets is None:
            allow_plain_http()
            datasets = [StreamingDataset(s["path"], shuffle=True, drop_last=True, seed=self.seed,
                                         max_cache_size=self.max_cache_size) for s in self.sources]
        sizes = [clips_in(d) for d in datasets]
        nodes = self.trainer.num_nodes if self._trainer_attached() else 1
        parts = [worker_parts(d, world, self.num_workers, self.batch_size, nodes) for d in datasets]
        return sizes, *self.epoch_plan(parts, world)

    def train_steps_per_epoch(self, world: int) -> int:
        """Optimizer steps of an epoch on ``world`` devices."""
        return self.plan(world)[2]

    def _report_plan(self, datasets: list[ClipShardDataset]) -> None:
        for src in self.sources:
            summary = _read_summary(src["path"]) or {}
            if summary.get("kept_audio_only") and rank_zero_only.rank == 0:
                log.warning("%s: %d of %d clips have no video stream; pretraining needs video, so each is skipped "
                            "(and replaced) when drawn. Prepare the source with --require-video to leave them out",
                            src["path"], summary["kept_audio_only"], summary.get("kept", 0))
        world = self.trainer.world_size if self._trainer_attached() else 1
        sizes, reads, steps = self.plan(world, datasets)
        what = ", ".join(f"{s['path']}: {r} of {n}" + (f" (weight {w:g})" if len(sizes) > 1 and self.mix == "weighted"
                                                          else "")
                         for s, r, n, w in zip(self.sources, reads, sizes, self.weights))
        if len(sizes) > 1 and self.mix == "weighted":
            note = ("; an epoch ends when the first source runs out, later epochs draw other clips of the others "
                    "(data.mix=all reads every clip of every source once per epoch)")
        elif reads == sizes:
            note = " (every clip once per epoch)"
        else:
            note = (f" (the other {sum(sizes) - sum(reads)} do not fill a batch on each of the {world} device(s) x "
                    f"{max(1, self.num_workers)} loader worker(s); each epoch leaves out other ones)")
        if rank_zero_only.rank == 0:
            log.info("training data: an epoch reads %s clips%s: %d steps of %d clips x %d device(s)", what, note, steps,
                     self.batch_size, world)
        if steps == 0:
            workers = world * max(1, self.num_workers)
            raise UserError(
                f"data.sources: an epoch has {sum(sizes)} clips, split over {world} device(s) x "
                f"{max(1, self.num_workers)} loader worker(s) that each make their own batches: fewer than one batch "
                f"of data.batch_size={self.batch_size} per worker ({sum(sizes) // workers} clips each), so training "
                "would run no step. Lower data.batch_size or data.num_workers, add data"
                + (", or use data.mix=all (every clip of every source once per epoch)"
                   if len(sizes) > 1 and self.mix == "weighted" else ""))

    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def train_dataloader(self) -> StreamingDataLoader:
        allow_plain_http()  # an http:// AWS_ENDPOINT_URL (set after import)
        datasets = [self._dataset(s["path"], True, i) for i, s in enumerate(self.sources)]
        self._report_plan(datasets)
        if len(datasets) == 1:
            dataset = datasets[0]
        elif self.mix == "all":  # every clip once, interleaved in proportion to the sources' sizes
            dataset = CombinedStreamingDataset(datasets, seed=self.seed, iterate_over_all=True)
        else:
            dataset = WeightedMix(datasets, seed=self.seed, weights=self.weights, iterate_over_all=False)
        return StreamingDataLoader(dataset, **self.loader_kwargs(train=True))

    def val_dataloader(self) -> StreamingDataLoader | list:
        if not self.val_sources:
            return []
        datasets = [self._dataset(s["path"], False, i) for i, s in enumerate(self.val_sources)]
        dataset = datasets[0] if len(datasets) == 1 else CombinedStreamingDataset(datasets, iterate_over_all=True)
        kwargs = self.loader_kwargs(train=False)
        kwargs["batch_size"] = self._val_batch(sum(clips_in(d) for d in datasets), kwargs["batch_size"])
        return StreamingDataLoader(dataset, **kwargs)

    def _val_batch(self, clips: int, batch: int) -> int:
        """A validation batch that leaves every device at least one (litdata splits whole batches over the ranks).

        Validation keeps every clip (the last rank takes what does not fill a batch on
        each) and its batch size changes no metric, so it is lowered instead of failing
        in Lightning's "zero length" check on the ranks left without one.
        """
        world = self.trainer.world_size if self._trainer_attached() else 1
        fits = max(1, clips // world)
        if batch <= fits or world == 1:  # one device takes the whole set as a smaller last batch
            return batch
        if rank_zero_only.rank == 0:
            log.info("validation data: %d clips over %d device(s), validated in batches of %d instead of "
                     "data.val_batch_size=%d so that every device gets one", clips, world, fits, batch)
        return fits
