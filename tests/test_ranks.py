"""Data guarantees at 4 ranks (gloo, CPU, 2 loader workers each, spawned): the shards DataModule's training loader.

What breaks multi-rank runs of streaming data is checked per epoch and rank: the same
number of batches on every rank (else DDP waits forever in the epoch's last
all-reduce), every clip at most once over all ranks (exactly the clips the run's log
says), and a mid-epoch stop whose resume gives each rank the batches it would have
had. One source, and two weighted sources of unequal sizes and chunk counts. The
scenarios of one rank count run one after another in the same spawned ranks (a
spawn costs more than the loaders).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import start_ranks, subprocess_env, write_shards

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

WORLD, WORKERS, BATCH = 4, 2, 2
TINY = {"num_frames": 8, "fps": 10, "image_size": 64, "sample_rate": 16000}


@pytest.fixture(scope="module")
def sources(demo_root, tmp_path_factory) -> dict:
    """Source A: 42 clips (~55 KB each) in 600 KB chunks; source B: 21 clips, one per chunk (more, smaller chunks)."""
    from vatt.data.manifest import load_manifest
    from vatt.data.tokenizer import WordTokenizer

    root = tmp_path_factory.mktemp("ranks")
    write_shards(demo_root / "train.jsonl", root / "a", clips=42, chunk_bytes="600KB")
    write_shards(demo_root / "val.jsonl", root / "b", clips=21, chunk_bytes="40KB")
    rows = load_manifest(demo_root / "train.jsonl").rows
    WordTokenizer.build(c.text for r in rows for c in r.captions).save(root / "tok.json")
    chunks = {k: len(json.loads((root / k / "index.json").read_text())["chunks"]) for k in ("a", "b")}
    assert chunks["b"] > chunks["a"] > 1
    return {"a": str(root / "a"), "b": str(root / "b"), "vocab": str(root / "tok.json"), "sizes": {"a": 42, "b": 21}}


def _datamodule(paths: list[str], vocab: str, cache: str):
    from vatt.data.shards import ShardsDataModule

    return ShardsDataModule(sources=[{"path": p, "weight": 0.5} for p in paths], vocab=vocab, batch_size=BATCH,
                            num_workers=WORKERS, clip=TINY, augment={"hue": 0.0}, seed=42, pin_memory=False,
                            persistent_workers=True, cache_dir=cache)


def _scenario(rank: int, out: Path, job: dict, run: dict) -> list | dict:
    """One loader run on this rank: ``run["epochs"]`` epochs of batches of clip ids.

    ``stop=[epoch, batches]``: save the loader's state after that many batches of that
    epoch and end; ``resume=name``: start from the state the run ``name`` saved for this
    rank; ``drop_last=False``: a split litdata does not even out (a deliberately broken
    setting). A ``UserError`` is returned as ``{"error": message}``.
    """
    from vatt.errors import UserError

    here = out / run["name"]
    here.mkdir(exist_ok=True)
    loader = _datamodule([job[k] for k in run["which"]], job["vocab"], str(here / "cache")).train_dataloader()
    if run.get("drop_last") is False:
        loader.dataset.drop_last = False
        object.__setattr__(loader, "drop_last", False)
    if run.get("resume"):
        try:
            loader.load_state_dict(torch.load(out / run["resume"] / f"state{rank}.pt", weights_only=False))
        except UserError as err:
            return {"error": str(err)}
    epochs, stop = [], run.get("stop")
    for epoch in range(run.get("epochs", 2)):
        batches = []
        for batch in loader:
            batches.append([int(i) for i in batch["index"]])
            if stop and [epoch, len(batches)] == stop:
                torch.save(loader.state_dict(), here / f"state{rank}.pt")
                break
        epochs.append(batches)
        if stop and epoch == stop[0]:
            break
    return epochs


def _rank(rank: int, world: int, job: dict) -> None:
    """Every scenario of ``job["runs"]`` in turn; the results in ``rank<r>.json``."""
    out = Path(job["out"])
    dist.init_process_group("gloo", init_method=f"file://{out}/init", rank=rank, world_size=world)
    try:
        results = {run["name"]: _scenario(rank, out, job, run) for run in job["runs"]}
        (out / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def run_ranks(out: Path, sources: dict, runs: list[dict], world: int = WORLD) -> dict[str, list]:
    """``{scenario: [each rank's result]}`` from ``world`` spawned ranks running ``runs`` in order."""
    out.mkdir(exist_ok=True)
    (out / "init").unlink(missing_ok=True)
    job = {**sources, "out": str(out), "runs": runs}
    start_ranks(_rank, (world, job), world, timeout=240)
    per_rank = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    return {run["name"]: [p[run["name"]] for p in per_rank] for run in runs}


@pytest.fixture(scope="module")
def four(sources, tmp_path_factory) -> dict[str, list]:
    """The scenarios at 4 ranks, and then the resumes at 2 ranks of states the 4 ranks saved."""
    out = tmp_path_factory.mktemp("four")
    results = run_ranks(out, sources, [
        {"name": "one", "which": "a"},
        {"name": "one_stop", "which": "a", "stop": [1, 1]},
        {"name": "one_resume", "which": "a", "resume": "one_stop", "epochs": 1},
        {"name": "mix", "which": "ab"},
        {"name": "mix_stop", "which": "ab", "stop": [1, 1]},
        {"name": "mix_resume", "which": "ab", "resume": "mix_stop", "epochs": 1},
        {"name": "uneven", "which": "a", "drop_last": False, "epochs": 1},
    ])
    results.update(run_ranks(out, sources, [
        {"name": "one_on_two", "which": "a", "resume": "one_stop", "epochs": 1},
        {"name": "mix_on_two", "which": "ab", "resume": "mix_stop", "epochs": 1},
    ], world=2))
    return results


def check_epoch(per_rank: list[list[list[int]]], epoch: int) -> list[int]:
    """The multi-rank guarantees of one epoch: equal batch counts, no clip twice. Returns the clips read."""
    counts = [len(ranks[epoch]) for ranks in per_rank]
    if len(set(counts)) != 1:
        raise AssertionError(f"epoch {epoch}: ranks ran {counts} batches; DDP would wait forever in the all-reduce of "
                             "the longest rank's extra steps")
    read = [i for ranks in per_rank for batch in ranks[epoch] for i in batch]
    twice = sorted(i for i, n in Counter(read).items() if n > 1)
    if twice:
        raise AssertionError(f"epoch {epoch}: clips {twice[:8]} read {len(read) - len(set(read))} extra times")
    assert all(len(b) == BATCH for ranks in per_rank for b in ranks[epoch])  # no partial batch (BatchNorm, equal steps)
    return read


def _ids(source: int, n: int) -> set[int]:
    return {(source << 32) + i for i in range(n)}


def _plan(sources: dict, which: str, world: int = WORLD) -> tuple[list[int], int]:
    """What the run's log says an epoch reads of each source, and its steps."""
    sizes, reads, steps = _datamodule([sources[k] for k in which], sources["vocab"], ".").plan(world)
    assert sizes == [sources["sizes"][k] for k in which]
    return reads, steps


def test_one_source_at_four_ranks_reads_what_the_log_says_in_equal_batches_and_resumes_exactly(four, sources):
    full = four["one"]
    reads, steps = _plan(sources, "a")
    assert (reads, steps) == ([40], 5)  # 21 whole batches of 2: 5 per rank; 2 clips do not fill a batch on each
    for epoch in (0, 1):
        read = check_epoch(full, epoch)
        assert set(read) <= _ids(0, 42) and len(read) == reads[0] and len(full[0][epoch]) == steps
    assert full[0][0] != full[0][1]  # reshuffled between epochs

    # a stop after 1 of epoch 1's batches on every rank; the resume gives each rank the rest of its epoch
    for r in range(WORLD):
        assert four["one_stop"][r][0] == full[r][0] and four["one_stop"][r][1] == full[r][1][:1]
        assert four["one_resume"][r][0] == full[r][1][1:], r

    # on 2 ranks instead of 4: every clip the stopped epoch had left is read, once, in equal batches
    left = {i for ranks in full for i in sum(ranks[1][1:], [])}
    assert set(check_epoch(four["one_on_two"], 0)) == left


def test_two_weighted_sources_at_four_ranks_read_their_shares_at_most_once_and_resume_exactly(four, sources):
    full = four["mix"]
    reads, steps = _plan(sources, "ab")
    for epoch in (0, 1):
        read = check_epoch(full, epoch)
        by_source = Counter(i >> 32 for i in read)
        assert set(read) <= _ids(0, 42) | _ids(1, 21)
        assert [by_source[0], by_source[1]] == reads and len(full[0][epoch]) == steps
    first, second = ({i for ranks in full for b in ranks[e] for i in b if i >> 32 == 0} for e in (0, 1))
    assert second - first  # the big source's next epoch draws clips the first did not (it is reshuffled)
    for r in range(WORLD):
        assert four["mix_stop"][r][1] == full[r][1][:1] and four["mix_resume"][r][0] == full[r][1][1:], r
    # litdata resumes a mix only on the layout it was saved on: a message naming both layouts and the fix
    for result in four["mix_on_two"]:
        assert result["error"].startswith("ckpt_path: the checkpoint's data position is in a mix of several sources")
        assert "4 device(s) x 2 loader worker(s) x data.batch_size=2 (this run: 2 x 2 x 2)" in result["error"]


def test_the_checks_catch_an_uneven_split_and_ranks_that_read_the_same_clips(four):
    with pytest.raises(AssertionError, match=r"epoch 0: ranks ran \[\d+, \d+, \d+, \d+\] batches; DDP would wait"):
        check_epoch(four["uneven"], 0)
    alone = [four["one"][0]] * WORLD  # what ranks without a process group read: each believes it is alone
    with pytest.raises(AssertionError, match=r"epoch 0: clips \[.*\] read \d+ extra times"):
        check_epoch(alone, 0)


def test_ddp_cpu_at_four_devices_trains_its_epochs_on_mixed_shards(tmp_path, sources):
    """The trainer as users start it: 4 ranks x 2 workers, two weighted sources; killed if it hangs."""
    args = [sys.executable, "-m", "vatt.train", "data=shards", f"data.sources=[{{path: {sources['a']}, weight: 0.5}}, "
            f"{{path: {sources['b']}, weight: 0.5}}]", f"data.val_path={sources['b']}", f"data.vocab={sources['vocab']}",
            f"data.cache_dir={tmp_path / 'cache'}", "trainer=ddp_cpu", "trainer.devices=4", "data.batch_size=2",
            "data.num_workers=2", "trainer.max_epochs=2", "logger=none"]
    proc = subprocess.run(args, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    (a, b), steps = _plan(sources, "ab")
    assert f"{sources['a']}: {a} of 42 (weight 0.5), {sources['b']}: {b} of 21 (weight 0.5) clips" in out
    assert f"{steps} steps of 2 clips x 4 device(s)" in out and steps > 0
    # 21 validation clips cannot give each of 4 devices a batch of the demo's 128: the batch is lowered, not a crash
    assert "validation data: 21 clips over 4 device(s), validated in batches of 5 instead of data.val_batch_size=128" in out
    assert "sync_dist=True" not in out and "drop_last" not in out and "Traceback" not in out
    ckpt = next(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt"))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2 * steps
