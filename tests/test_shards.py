"""Streaming shards: epoch coverage over ranks x workers, bad samples, resume, training on shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from litdata import StreamingDataLoader

from conftest import BatchRecorder, assert_same_training_state, fit_with, start_ranks, write_shards
from vatt.data.clip import Augment, ClipConfig, collate_clips, finish_batch
from vatt.data.manifest import load_manifest
from vatt.data.shards import ClipShardDataset, ShardsDataModule
from vatt.data.tokenizer import WordTokenizer

TINY = ClipConfig(num_frames=8, fps=10, image_size=64, sample_rate=16000)


@pytest.fixture(scope="module")
def shards(demo_root, tmp_path_factory):
    """The small demo set packed by the real preparation tool: manifest -> shards."""
    from vatt.data.prepare import prepare

    root = tmp_path_factory.mktemp("shards")
    summary = prepare("manifest", str(root / "train"), manifest=demo_root / "train.jsonl", workers=2, progress=False)
    prepare("manifest", str(root / "val"), manifest=demo_root / "val.jsonl", workers=2, progress=False)
    assert summary["kept"] == 16
    ids = [json.loads(line)["video"] for line in (demo_root / "train.jsonl").read_text().splitlines()]
    return root, ids


def _tokenizer(demo_root):
    rows = load_manifest(demo_root / "train.jsonl").rows
    return WordTokenizer.build(c.text for r in rows for c in r.captions)


def test_shards_yield_documented_batches(shards, demo_root):
    root, ids = shards
    ds = ClipShardDataset(str(root / "train"), _tokenizer(demo_root), TINY, Augment(hue=0.0), shuffle=True)
    assert len(ds) == len(ids) == 16
    # a plain loader needs collate_clips (vatt.data.loading's loaders default to it): crop boxes differ in size
    raw = next(iter(StreamingDataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate_clips)))
    assert raw["video_y"].dtype == torch.uint8 and raw["video_y"].shape[:2] == (4, 8)
    batch = finish_batch(raw)
    assert batch["video"].shape == (4, 3, 8, 64, 64) and batch["audio"].shape == (4, 12800)
    assert batch["text"].shape == (4, 5, 16) and batch["text_mask"].dtype == torch.bool
    assert batch["skipped"].tolist() == [0, 0, 0, 0]


def test_augmentation_is_a_function_of_seed_epoch_and_sample(shards, demo_root):
    root, _ = shards
    tok = _tokenizer(demo_root)

    def sample(seed: int, epoch: int, index: int = 0, global_seed: int = 0) -> dict:
        ds = ClipShardDataset(str(root / "train"), tok, TINY, Augment(hue=0.0), shuffle=False, seed=seed)
        ds.set_epoch(epoch)
        torch.manual_seed(global_seed)  # the process's global RNG plays no part
        return ds[index]

    def same(a: dict, b: dict) -> bool:
        return torch.equal(a["video_y"], b["video_y"]) and torch.equal(a["audio"], b["audio"])

    ref = sample(seed=42, epoch=1)
    assert same(ref, sample(seed=42, epoch=1, global_seed=123))  # all three equal: identical
    assert not same(ref, sample(seed=42, epoch=2))  # another epoch: another window/augmentation
    assert not same(ref, sample(seed=43, epoch=1))  # another seed
    assert not torch.equal(ref["audio"], sample(seed=42, epoch=1, index=1)["audio"])  # another sample


def test_bad_samples_are_skipped_and_counted(demo_root, tmp_path):
    rows = [json.loads(l) for l in (demo_root / "val.jsonl").read_text().splitlines()]
    bad = (rows[1]["video"], rows[4]["video"])
    write_shards(demo_root / "val.jsonl", tmp_path / "s", corrupt=bad)
    ds = ClipShardDataset(str(tmp_path / "s"), _tokenizer(demo_root), TINY, None, shuffle=False)
    samples = list(ds)
    # one sample per position of the stream: each bad one is replaced by a neighbour of its chunk
    assert len(samples) == len(rows)
    assert [int(s["skipped"]) for s in samples] == [1 if i in (1, 4) else 0 for i in range(len(rows))]
    seen = [int(s["index"]) for s in samples]
    good = [i for i in range(len(rows)) if i not in (1, 4)]
    assert sorted(set(seen)) == good  # every good clip, no bad one
    assert all(abs(seen[i] - i) == 1 for i in (1, 4))  # the replacements are next to the bad ones


@pytest.mark.slow
def test_a_run_resumed_after_skipped_samples_continues_exactly(shards, demo_root, tmp_path):
    """Bad samples before the stop: the resumed run's batches, losses and final state equal the uninterrupted run's."""
    root, ids = shards
    data = tmp_path / "data"
    write_shards(demo_root / "train.jsonl", data / "train", corrupt=tuple(ids[::4]))  # 4 of 16 clips are bad
    (data / "val").symlink_to(root / "val")
    full = BatchRecorder()
    fit_with(_shards_cfg(tmp_path / "full", data, ["trainer.max_steps=6"]), full)
    assert full.skipped_before(3) > 0  # the stop below comes after some skips
    fit_with(_shards_cfg(tmp_path / "stop", data, ["trainer.max_steps=3"]), BatchRecorder())
    ckpt = tmp_path / "stop" / "run" / "checkpoints" / "last.ckpt"
    resumed = BatchRecorder()
    fit_with(_shards_cfg(tmp_path / "resume", data, ["trainer.max_steps=6", f"ckpt_path={ckpt}"]), resumed)
    assert sorted(resumed.batches) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed.batches[step] == full.batches[step]
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-6)
    assert_same_training_state(tmp_path / "full" / "run" / "checkpoints" / "last.ckpt",
                               tmp_path / "resume" / "run" / "checkpoints" / "last.ckpt")


def _rank_worker(rank, world, root, vocab, out):
    dist.init_process_group("gloo", init_method=f"file://{out}/init", rank=rank, world_size=world)
    try:
        tok = WordTokenizer.from_file(vocab)
        ds = ClipShardDataset(root, tok, TINY, None, shuffle=True, drop_last=False)
        loader = StreamingDataLoader(ds, batch_size=2, num_workers=2)
        seen = [[int(i) for batch in loader for i in batch["index"]] for _epoch in range(2)]
        Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_every_clip_is_read_exactly_once_per_epoch_over_two_ranks_and_two_workers(shards, demo_root, tmp_path):
    root, ids = shards
    vocab = tmp_path / "tok.json"
    _tokenizer(demo_root).save(vocab)
    start_ranks(_rank_worker, (2, str(root / "train"), str(vocab), str(tmp_path)), 2)
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        seen = per_rank[0][epoch] + per_rank[1][epoch]
        assert sorted(seen) == list(range(len(ids)))  # all clips, none twice
        assert per_rank[0][epoch] and per_rank[1][epoch]  # both ranks got work
    assert per_rank[0][0] != per_rank[0][1]  # reshuffled between epochs


def test_datamodule_needs_sources():
    with pytest.raises(ValueError, match="data.sources is not set"):
        ShardsDataModule(sources=None)


def _shards_cfg(tmp_path, root, extra):
    from conftest import make_cfg

    return make_cfg(
        tmp_path,
        ["data=shards", f"data.path={root / 'train'}", f"data.val_path={root / 'val'}", "data.batch_size=4",
         "data.val_batch_size=8", "trainer.max_epochs=10", *extra],
    )


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_and_resumed_equals_the_uninterrupted_run(shards, tmp_path):
    """Default callbacks, validation on, dropout and DropToken on: batches, losses, lr and final state all agree."""
    root, _ = shards
    full = BatchRecorder()
    fit_with(_shards_cfg(tmp_path / "full", root, ["trainer.max_steps=6"]), full)
    assert sorted(full.batches) == list(range(6))  # 4 steps per epoch: crosses an epoch boundary (and its validation)
    fit_with(_shards_cfg(tmp_path / "stop", root, ["trainer.max_steps=3"]), BatchRecorder())
    ckpt = tmp_path / "stop" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 3
    resumed = BatchRecorder()
    fit_with(_shards_cfg(tmp_path / "resume", root, ["trainer.max_steps=6", f"ckpt_path={ckpt}"]), resumed)
    assert sorted(resumed.batches) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed.batches[step] == full.batches[step]
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-6)
        assert resumed.lrs[step] == full.lrs[step]
    assert_same_training_state(tmp_path / "full" / "run" / "checkpoints" / "last.ckpt",
                               tmp_path / "resume" / "run" / "checkpoints" / "last.ckpt")


def test_training_on_shards_logs_retrieval(shards, tmp_path):
    root, _ = shards
    from vatt.train import train

    cfg = _shards_cfg(tmp_path, root, ["debug=fdr"])
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/v2a_R@10" in metrics


def test_data_benchmark_reports_both_rates_on_tiny_clips(shards, capsys):
    from vatt.data.bench import main, run

    root, _ = shards
    r = run(str(root / "val"), 3, TINY)
    assert r["clips"] == 3
    assert r["pipeline_clips_per_s"] > 0 and r["baseline_clips_per_s"] > 0
    assert r["speedup"] == pytest.approx(r["pipeline_clips_per_s"] / r["baseline_clips_per_s"])
    main(["--shards", str(root / "val"), "--num-clips", "2", "--num-frames", "8", "--image-size", "64",
          "--sample-rate", "16000"])
    out = capsys.readouterr().out
    assert out.startswith("2 clips, 8 frames @ 10 fps, 64^2, 16000 Hz") and "ratio:" in out


# --------------------------------------------------------------------------- several sources


def _mixed(root: Path, tmp_path: Path, mix: str, batch_size: int = 4, weights=(0.5, 0.5)) -> ShardsDataModule:
    dm = ShardsDataModule(sources=[{"path": str(root / "train"), "weight": weights[0]},
                                   {"path": str(root / "val"), "weight": weights[1]}],
                          clip=TINY, batch_size=batch_size, num_workers=1, cache_dir=str(tmp_path / "cache"), mix=mix)
    dm.prepare_data()
    return dm


def test_mix_all_reads_every_clip_of_every_source_once_per_epoch(shards, tmp_path, caplog):
    root, _ = shards
    dm = _mixed(root, tmp_path, "all")
    with caplog.at_level("INFO", logger="vatt.data.shards"):
        loader = dm.train_dataloader()
    ids = [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(ids) == sorted([*range(16), *((1 << 32) + i for i in range(8))])  # 16 + 8 clips, each once
    assert f"{root / 'train'}: 16 of 16, {root / 'val'}: 8 of 8 clips (every clip once per epoch): 6 steps" in caplog.text


def test_weighted_mix_says_how_much_of_each_source_an_epoch_reads(shards, tmp_path, caplog):
    root, _ = shards
    with caplog.at_level("INFO", logger="vatt.data.shards"):
        loader = _mixed(root, tmp_path, "weighted").train_dataloader()
    # 0.5 / 0.5 over 16 + 8 clips: the epoch ends when the 8-clip source runs out, after ~8 of the other's
    assert f"{root / 'train'}: 8 of 16 (weight 0.5), {root / 'val'}: 8 of 8 (weight 0.5) clips" in caplog.text
    assert "data.mix=all reads every clip" in caplog.text and ": 4 steps of 4 clips x 1 device(s)" in caplog.text
    ids = [i for batch in loader for i in batch["index"].tolist()]
    sources = [i >> 32 for i in ids]
    assert len(ids) == len(set(ids)) == 16 and sources.count(0) == sources.count(1) == 8  # as announced
    assert all(sources[k:k + 2].count(0) == 1 for k in range(0, 16, 2))  # interleaved by weight, not by chance


def test_a_weighted_mix_reshuffles_every_source_each_epoch_and_resumes_in_one_exactly(shards, tmp_path):
    """8 of the big source's 16 clips per epoch: the next epoch draws others, also in a persistent worker."""
    root, _ = shards
    loader = _mixed(root, tmp_path / "full", "weighted").train_dataloader()
    epochs = [[b["index"].tolist() for b in loader] for _ in range(2)]
    big = [{i for b in e for i in b if i >> 32 == 0} for e in epochs]
    assert len(big[0]) == len(big[1]) == 8 and big[0] != big[1]  # not the same 8 clips again

    stopped = _mixed(root, tmp_path / "stop", "weighted").train_dataloader()
    assert [b["index"].tolist() for b in stopped] == epochs[0]
    batches = iter(stopped)
    first = next(batches)["index"].tolist()
    state = stopped.state_dict()
    del batches
    resumed = _mixed(root, tmp_path / "resume", "weighted").train_dataloader()
    resumed.load_state_dict(state)
    assert [first, *(b["index"].tolist() for b in resumed)] == epochs[1]


def test_the_epoch_plan_on_several_devices_is_litdatas_split(shards, tmp_path):
    """Whole batches per rank: 4 devices x 1 worker over the 16- and 8-clip sources (hand-counted below)."""
    root, _ = shards
    # batch 2: the 16-clip source gives each rank 2 batches (4 clips), the 8-clip one 1 batch (2 clips); the mix
    # takes 0,1,0,1,0 and ends at the 6th clip (a 3rd of the small source); 4 kept = 2 steps, 2 + 2 clips per rank
    assert _mixed(root, tmp_path, "weighted", batch_size=2).plan(4) == ([16, 8], [8, 8], 2)
    assert _mixed(root, tmp_path, "all", batch_size=2).plan(4) == ([16, 8], [16, 8], 3)
    # one source, batch 3: 5 whole batches, 1 per rank; 12 of 16 clips an epoch
    one = ShardsDataModule(sources=[{"path": str(root / "train"), "weight": 1.0}], clip=TINY, batch_size=3,
                           num_workers=1, cache_dir=str(tmp_path / "cache"))
    assert one.plan(4) == ([16], [12], 1) and one.plan(1) == ([16], [15], 5)


def test_a_validation_set_too_small_for_a_batch_per_device_gets_smaller_batches(shards, tmp_path, caplog):
    from types import SimpleNamespace

    root, _ = shards
    dm = ShardsDataModule(sources=[{"path": str(root / "train"), "weight": 1.0}], val_sources=[{"path": str(root / "val")}],
                          clip=TINY, batch_size=4, val_batch_size=128, num_workers=1, cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    assert dm.val_dataloader().batch_size == 128  # one device: the whole set (8 clips) is one batch anyway
    dm.trainer = SimpleNamespace(world_size=4, num_nodes=1, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    with caplog.at_level("INFO", logger="vatt.data.shards"):
        assert dm.val_dataloader().batch_size == 2
    assert "validation data: 8 clips over 4 device(s), validated in batches of 2 instead of data.val_batch_size=128" \
        in caplog.text


def test_a_weighted_mix_follows_its_weights_exactly_and_says_when_it_ends():
    from vatt.data.shards import weighted_mix_length

    assert weighted_mix_length([8, 8], [0.5, 0.5]) == 16
    assert weighted_mix_length([100, 10], [0.5, 0.5]) == 21  # 10 of each, then one more of the first: the next is the 11th of the small one
    assert weighted_mix_length([100, 10], [0.9, 0.1]) == 105  # 95 + 10: the 11th of the small one ends it
    assert weighted_mix_length([0, 5], [1.0, 1.0]) == 0


@pytest.mark.parametrize("mix", ["weighted", "all"])
def test_a_mix_too_small_for_one_batch_stops_with_a_message(shards, tmp_path, mix):
    from vatt.errors import UserError

    root, _ = shards
    with pytest.raises(UserError, match="fewer than one batch of data.batch_size=32 per worker.*no step"):
        _mixed(root, tmp_path, mix, batch_size=32).train_dataloader()


def test_bad_mix_settings_are_named(shards, tmp_path):
    from vatt.errors import UserError

    root, _ = shards
    with pytest.raises(UserError, match="data.mix='sometimes'"):
        _mixed(root, tmp_path, "sometimes")
    with pytest.raises(UserError, match="every weight must be positive"):
        _mixed(root, tmp_path, "weighted", weights=(0.5, 0.0))
