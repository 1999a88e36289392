"""``Split.missing_train`` / ``missing_test``: per split and part, the index entries dropped for an absent file.

Each test lists a tiny official layout with nothing deleted (all counts 0), deletes a few media
files and checks every count exactly, and that they are the same entries ``Listing.missing`` names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import make_esc50, make_msrvtt, make_ucf101
from vatt.data.downstream import Listing, Split, list_dataset


def touch(path: Path) -> Path:
    """A stand-in media file: listers only check that it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def counts(listing: Listing) -> dict[str, tuple[int, int]]:
    return {s.name: (s.missing_train, s.missing_test) for s in listing.splits}


def assert_clean(listing: Listing) -> None:
    assert listing.missing == [] and all(c == (0, 0) for c in counts(listing).values()), counts(listing)


def test_a_split_built_without_the_counts_has_none_missing():
    split = Split("test", [], [])
    assert (split.missing_train, split.missing_test) == (0, 0)


# --------------------------------------------------------------------------- UCF101


def test_ucf101_counts_a_video_once_in_every_split_list_that_names_it(tmp_path):
    root = make_ucf101(tmp_path / "ucf")  # split k tests on group k, trains on the other three (g04 always train)
    assert_clean(list_dataset("ucf101", root))
    for rel in ("Archery/v_Archery_g01_c01.avi",  # split1 test; split2 and split3 train
                "Bowling/v_Bowling_g04_c01.avi",  # train of every split
                "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi"):  # split2 test; split1 and split3 train
        (root / "UCF-101" / rel).unlink()
    listing = list_dataset("ucf101", root)
    assert counts(listing) == {"split1": (2, 1), "split2": (2, 1), "split3": (3, 0)}
    lists = root / "ucfTrainTestlist"
    for k, split in enumerate(listing.splits, start=1):
        assert len(split.test) + split.missing_test == len((lists / f"testlist0{k}.txt").read_text().splitlines())
        assert len(split.train) + split.missing_train == len((lists / f"trainlist0{k}.txt").read_text().splitlines())
    # Listing.missing is unchanged: one line per list line, train list before test list, split by split
    assert [m.split(":")[0].split(" line ")[0] for m in listing.missing] == [
        "trainlist01.txt", "trainlist01.txt", "testlist01.txt", "trainlist02.txt", "trainlist02.txt",
        "testlist02.txt", "trainlist03.txt", "trainlist03.txt", "trainlist03.txt"]


# --------------------------------------------------------------------------- HMDB51

HMDB_FLAGS = {  # action -> video -> flags of splits 1, 2, 3 (1 train, 2 test, 0 neither)
    "cartwheel": {"e.avi": "111", "f.avi": "222"},
    "ride_bike": {"a.avi": "112", "b.avi": "211", "c.avi": "120", "d.avi": "021"},
}


def make_hmdb51(root: Path) -> Path:
    for action, videos in HMDB_FLAGS.items():
        for k in range(3):
            text = "".join(f"{v} {flags[k]} \n" for v, flags in videos.items())
            write(root / "testTrainMulti_7030_splits" / f"{action}_test_split{k + 1}.txt", text)
        for v in videos:
            touch(root / action / v)
    return root


def test_hmdb51_counts_per_split_by_the_flag_of_each_list_and_ignores_flag_0(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb")
    assert_clean(list_dataset("hmdb51", root))
    for rel in ("ride_bike/a.avi", "ride_bike/c.avi", "ride_bike/d.avi", "cartwheel/f.avi"):
        (root / rel).unlink()
    listing = list_dataset("hmdb51", root)
    # a: train, train, test; c: train, test, unused; d: unused, test, train; f: test in all three
    assert counts(listing) == {"split1": (2, 1), "split2": (1, 3), "split3": (1, 2)}
    for k, split in enumerate(listing.splits):
        flags = [f[k] for videos in HMDB_FLAGS.values() for f in videos.values()]
        assert len(split.train) + split.missing_train == flags.count("1")
        assert len(split.test) + split.missing_test == flags.count("2")
    assert len(listing.missing) == sum(a + b for a, b in counts(listing).values()) == 10


# --------------------------------------------------------------------------- ESC-50


def test_esc50_a_missing_clip_counts_in_the_test_part_of_its_fold_and_the_train_part_of_the_others(tmp_path):
    root = make_esc50(tmp_path / "esc", media=False)
    assert_clean(list_dataset("esc50", root))
    for name in ("2-100-A-0.wav", "2-101-A-1.wav", "4-100-A-0.wav"):
        (root / "audio" / name).unlink()
    listing = list_dataset("esc50", root)
    assert counts(listing) == {"fold1": (3, 0), "fold2": (1, 2), "fold3": (3, 0), "fold4": (2, 1), "fold5": (3, 0)}
    for split in listing.splits:
        assert len(split.test) + split.missing_test == 2 and len(split.train) + split.missing_train == 8
    assert len(listing.missing) == 3  # one line per csv row, however many folds count it


# --------------------------------------------------------------------------- Kinetics, MiT, AudioSet


def test_kinetics_counts_train_csv_rows_as_train_and_validate_csv_rows_as_test(tmp_path):
    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split\n"
    write(root / "train.csv", header + "".join(f"{c},tr{i}AAAAAAAA,0,10,train\n" for i, c in enumerate("abab")))
    write(root / "validate.csv", header + "a,va0AAAAAAAA,0,10,validate\nb,va1AAAAAAAA,0,10,validate\n"
          "yoga,va2AAAAAAAA,0,10,validate\n")  # not a train class: skipped, never counted as missing
    for stem in ("tr0AAAAAAAA", "tr1AAAAAAAA", "tr2AAAAAAAA", "tr3AAAAAAAA", "va0AAAAAAAA", "va1AAAAAAAA"):
        touch(root / "clips" / f"{stem}_000000_000010.mp4")
    assert_clean(list_dataset("kinetics400", root))
    for stem in ("tr1AAAAAAAA", "tr2AAAAAAAA", "va1AAAAAAAA"):
        (root / "clips" / f"{stem}_000000_000010.mp4").unlink()
    listing = list_dataset("kinetics400", root)
    assert counts(listing) == {"test": (2, 1)}
    assert len(listing.splits[0].train) == 2 and len(listing.splits[0].test) == 1 and len(listing.missing) == 3


def test_mit_counts_training_rows_as_train_and_validation_rows_as_test(tmp_path):
    root = tmp_path / "mit"
    write(root / "trainingSet.csv", "".join(f"barking/{i:07d}.mp4,barking,3,0\n" for i in range(3)))
    write(root / "validationSet.csv", "".join(f"barking/{i:07d}.mp4,barking,3,0\n" for i in range(10, 13)))
    for i in range(3):
        touch(root / "training/barking" / f"{i:07d}.mp4")
        touch(root / "validation/barking" / f"{i + 10:07d}.mp4")
    assert_clean(list_dataset("mit", root))
    for rel in ("training/barking/0000002.mp4", "validation/barking/0000010.mp4", "validation/barking/0000012.mp4"):
        (root / rel).unlink()
    listing = list_dataset("mit", root)
    assert counts(listing) == {"test": (1, 2)}
    assert (len(listing.splits[0].train), len(listing.splits[0].test), len(listing.missing)) == (2, 1, 3)


AUDIOSET_HEADER = "# Segments csv\n# num_ytids=3\n# YTID, start_seconds, end_seconds, positive_labels\n"


def test_audioset_counts_the_chosen_train_list_as_train_and_the_eval_list_as_test(tmp_path):
    root = tmp_path / "as"
    write(root / "class_labels_indices.csv", 'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/04rlf,"Music"\n')
    ytids = {"balanced_train_segments.csv": ["balAAAAAAAA", "balBBBBBBBB", "balCCCCCCCC"],
             "unbalanced_train_segments.csv": ["unbAAAAAAAA", "unbBBBBBBBB"],
             "eval_segments.csv": ["evaAAAAAAAA", "evaBBBBBBBB"]}
    for csv_name, ids in ytids.items():
        write(root / csv_name, AUDIOSET_HEADER + "".join(f'{y}, 10.000, 20.000, "/m/09x0r,/m/04rlf"\n' for y in ids))
        for y in ids:
            touch(root / "clips" / f"{y}_10.000.mp4")
    assert_clean(list_dataset("audioset", root))
    assert_clean(list_dataset("audioset", root, train_set="unbalanced"))
    for y in ("balBBBBBBBB", "balCCCCCCCC", "unbAAAAAAAA", "evaBBBBBBBB"):
        (root / "clips" / f"{y}_10.000.mp4").unlink()
    listing = list_dataset("audioset", root)
    assert counts(listing) == {"test": (2, 1)} and len(listing.missing) == 3
    assert counts(list_dataset("audioset", root, train_set="unbalanced")) == {"test": (1, 1)}


# --------------------------------------------------------------------------- retrieval: MSR-VTT, YouCook2


def test_msrvtt_missing_videos_are_test_entries(tmp_path):
    root = make_msrvtt(tmp_path / "msrvtt")  # 4 rows, video7000..video7003
    assert_clean(list_dataset("msrvtt", root))
    for v in ("video7001", "video7003"):
        (root / "videos/all" / f"{v}.mp4").unlink()
    listing = list_dataset("msrvtt", root)
    assert counts(listing) == {"test": (0, 2)}
    assert len(listing.splits[0].test) + listing.splits[0].missing_test == 4


def test_youcook2_counts_the_segments_of_missing_validation_videos_not_training_ones(tmp_path):
    root = tmp_path / "yc2"

    def entry(subset: str, n: int) -> dict:
        return {"subset": subset, "recipe_type": "101", "duration": 60.0,
                "annotations": [{"id": i, "segment": [i, i + 1], "sentence": f"step {i}"} for i in range(n)]}

    database = {"valVid00001": entry("validation", 2), "valVid00002": entry("validation", 1),
                "valVid00003": entry("validation", 3), "trnVid00001": entry("training", 1)}
    write(root / "youcookii_annotations_trainval.json", json.dumps({"database": database}))
    for vid in database:
        touch(root / "raw_videos" / f"{vid}.mp4")
    assert_clean(list_dataset("youcook2", root))
    for vid in ("valVid00002", "valVid00003", "trnVid00001"):  # the training video is in no split
        (root / "raw_videos" / f"{vid}.mp4").unlink()
    listing = list_dataset("youcook2", root)
    # the test items are segments: an absent validation video takes all of its own with it (1 + 3)
    assert counts(listing) == {"test": (0, 4)} and len(listing.missing) == 2
    assert len(listing.splits[0].test) + listing.splits[0].missing_test == 2 + 1 + 3
    assert [it.id for it in listing.splits[0].test] == ["valVid00001_0", "valVid00001_1"]


# --------------------------------------------------------------------------- demo, ImageNet


def test_demo_counts_train_jsonl_rows_as_train_and_val_jsonl_rows_as_test(demo_root, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)  # the session fixture stays untouched
    assert_clean(list_dataset("demo", root))
    assert_clean(list_dataset("demo", root, task="retrieval"))
    train = [json.loads(line)["video"] for line in (root / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (root / "val.jsonl").read_text().splitlines()]
    # an uncaptioned row (no retrieval item) and two captioned ones
    gone_val = [r for r in val if not r["captions"]][:1] + [r for r in val if r["captions"]][:2]
    assert len(gone_val) == 3
    for rel in [train[1], train[7]] + [r["video"] for r in gone_val]:
        (root / rel).unlink()
    listing = list_dataset("demo", root)
    assert counts(listing) == {"test": (2, 3)} and len(listing.missing) == 5
    (split,) = listing.splits
    assert len(split.train) + split.missing_train == len(train) and len(split.test) + split.missing_test == len(val)
    # retrieval has no train part and counts every absent val.jsonl row, captioned or not
    retrieval = list_dataset("demo", root, task="retrieval")
    assert counts(retrieval) == {"test": (0, 3)}
    assert len(retrieval.splits[0].test) == sum(1 for r in val if r["captions"] and r not in gone_val)


def test_imagenet_has_no_index_so_nothing_is_ever_counted_missing(tmp_path):
    root = tmp_path / "imagenet"
    for rel in ("train/n01/a.JPEG", "train/n02/b.JPEG", "val/n01/c.JPEG"):
        touch(root / rel)
    assert_clean(list_dataset("imagenet", root))

