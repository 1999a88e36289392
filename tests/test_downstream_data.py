"""Downstream dataset listers: each official layout, built tiny in tmp_path, read back exactly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vatt.data.downstream import DATASETS, Item, Listing, Split, list_dataset
from vatt.data.layouts import AudioSetSegment, MalformedRow, audioset_file_stems, read_audioset_segments


def touch(path: Path) -> Path:
    """A stand-in media file: listers only check that it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def ids(items: list[Item]) -> list[str]:
    return [it.id for it in items]


def labels(items: list[Item]) -> list:
    return [it.label for it in items]


# --------------------------------------------------------------------------- registry and errors


def test_registry_names_every_dataset_and_rejects_an_unknown_name_listing_the_valid_ones(tmp_path):
    assert set(DATASETS) == {"ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "mit", "esc50",
                             "audioset", "msrvtt", "youcook2", "imagenet", "demo"}
    with pytest.raises(ValueError, match=r"unknown dataset 'ucf-101'; valid names: audioset, demo, esc50, .*, ucf101, youcook2 \(a dataset of your own"):
        list_dataset("ucf-101", tmp_path)


def test_an_option_the_dataset_does_not_take_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="ucf101: unknown option.*train_set; it takes none"):
        list_dataset("ucf101", tmp_path, train_set="balanced")
    with pytest.raises(ValueError, match="demo: unknown option.*labels; it takes label, task"):
        list_dataset("demo", tmp_path, labels="shape")


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("ucf101", "/ucfTrainTestlist/classInd.txt, trainlist0[1-3].txt"),
        ("hmdb51", "/testTrainMulti_7030_splits/<action>_test_split[1-3].txt"),
        ("kinetics400", "/train.csv and <root>/validate.csv"),
        ("kinetics700", "official Kinetics-700 annotations"),
        ("mit", "/trainingSet.csv, <root>/validationSet.csv"),
        ("esc50", "/meta/esc50.csv (header filename,fold,target,category"),
        ("audioset", "/class_labels_indices.csv, <root>/balanced_train_segments.csv"),
        ("msrvtt", "/MSRVTT_JSFUSION_test.csv (header key,vid_key,video_id,sentence"),
        ("youcook2", "/youcookii_annotations_trainval.json (from YouCookII.tar.gz)"),
        ("imagenet", "/train/<class>/*.{jpg,jpeg,png,JPEG}"),
        ("demo", "/train.jsonl and <root>/val.jsonl"),
    ],
)
def test_a_missing_root_is_a_file_not_found_error_naming_it_and_the_expected_layout(tmp_path, name, layout):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        list_dataset(name, root)
    assert str(e.value).startswith(f"{name}: dataset folder {root} does not exist; expected ")
    assert layout in str(e.value)


# --------------------------------------------------------------------------- UCF101


def make_ucf101(root: Path, newline: str = "\n", videos_folder: str = "UCF-101") -> Path:
    """3 classes; split1 trains on g08, tests on g01; splits 2 and 3 the other way round."""
    lists = root / "ucfTrainTestlist"
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n2 Archery\n3 HandstandPushups\n", newline)
    base = root / videos_folder if videos_folder else root
    # HandstandPushups/v_HandStandPushups_*: the released folder and file names differ in case
    videos = {g: [f"ApplyEyeMakeup/v_ApplyEyeMakeup_{g}_c01.avi", f"Archery/v_Archery_{g}_c01.avi",
                  f"HandstandPushups/v_HandStandPushups_{g}_c01.avi"] for g in ("g01", "g08")}
    for rel in videos["g01"] + videos["g08"]:
        touch(base / rel)
    absent = "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi"
    for k, (train_g, test_g) in enumerate([("g08", "g01"), ("g01", "g08"), ("g01", "g08")], start=1):
        train = [f"{rel} {n}" for n, rel in enumerate(videos[train_g], start=1)] + [f"{absent} 1"]
        if k == 1:
            train.append("Archery/v_Archery_g02_c01.avi")  # line 5: no class number
        test = videos[test_g] + (["Bowling/v_Bowling_g01_c01.avi"] if k == 1 else [])  # not in classInd
        write(lists / f"trainlist0{k}.txt", "\n".join(train) + "\n", newline)
        write(lists / f"testlist0{k}.txt", "\n".join(test) + "\n", newline)
    return root


def test_ucf101_lists_three_splits_with_labels_from_the_class_number_and_the_test_folder(tmp_path):
    root = make_ucf101(tmp_path / "ucf")
    listing = list_dataset("ucf101", root)
    assert (listing.name, listing.modality, listing.multilabel) == ("ucf101", "video", False)
    assert listing.classes == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert [s.name for s in listing.splits] == ["split1", "split2", "split3"]
    s1, s2 = listing.splits[0], listing.splits[1]
    assert ids(s1.train) == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g08_c01.avi",
                             "HandstandPushups/v_HandStandPushups_g08_c01.avi"]
    assert labels(s1.train) == [0, 1, 2]
    assert ids(s1.test) == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g01_c01.avi",
                            "HandstandPushups/v_HandStandPushups_g01_c01.avi"]
    assert labels(s1.test) == [0, 1, 2]
    assert s1.test[2] == Item(root / "UCF-101" / "HandstandPushups/v_HandStandPushups_g01_c01.avi", 2,
                              id="HandstandPushups/v_HandStandPushups_g01_c01.avi")
    assert ids(s2.train) == ids(s1.test) and ids(s2.test) == ids(s1.train)
    # the absent g09 video is in every trainlist: reported once per list line, never listed
    assert listing.missing == [f"trainlist0{k}.txt line 4: ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi"
                               for k in (1, 2, 3)]
    assert listing.skipped == [
        "trainlist01.txt line 5: expected '<Class>/<video>.avi <class number 1-3>', "
        "got 'Archery/v_Archery_g02_c01.avi'",
        "testlist01.txt line 4: the class folder of 'Bowling/v_Bowling_g01_c01.avi' is not a class of classInd.txt",
    ]


def test_ucf101_reads_windows_line_endings_exactly_like_unix_ones(tmp_path):
    unix = list_dataset("ucf101", make_ucf101(tmp_path / "unix"))
    windows = list_dataset("ucf101", make_ucf101(tmp_path / "windows", newline="\r\n"))
    assert (tmp_path / "windows/ucfTrainTestlist/classInd.txt").read_bytes().startswith(b"1 ApplyEyeMakeup\r\n")
    assert windows.classes == unix.classes == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    for w, u in zip(windows.splits, unix.splits, strict=True):
        assert ids(w.train) == ids(u.train) and ids(w.test) == ids(u.test)
        assert labels(w.train) == labels(u.train) and labels(w.test) == labels(u.test)
    assert all("\r" not in it.id and it.path.is_file() for s in windows.splits for it in s.train + s.test)
    assert windows.missing == unix.missing and windows.skipped == unix.skipped


def test_ucf101_falls_back_to_videos_directly_under_the_root(tmp_path):
    listing = list_dataset("ucf101", make_ucf101(tmp_path / "flat", videos_folder=""))
    assert listing.splits[0].train[0].path == tmp_path / "flat/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert [len(s.train) for s in listing.splits] == [3, 3, 3] and [len(s.test) for s in listing.splits] == [3, 3, 3]


def test_ucf101_missing_split_list_names_the_file_and_class_number_gaps_are_value_errors(tmp_path):
    root = make_ucf101(tmp_path / "ucf")
    (root / "ucfTrainTestlist/trainlist02.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ucf101: .*ucfTrainTestlist/trainlist02.txt does not exist; "
                                                r"expected .*UCF101TrainTestSplits-RecognitionTask.zip"):
        list_dataset("ucf101", root)
    write(root / "ucfTrainTestlist/classInd.txt", "1 ApplyEyeMakeup\n3 HandstandPushups\n")
    with pytest.raises(ValueError, match=r"classInd.txt: class numbers must run 1, 2, ..., N \(missing \[2\]"):
        list_dataset("ucf101", root)


def test_report_gives_counts_of_the_first_split_and_three_missing_examples(tmp_path):
    listing = list_dataset("ucf101", make_ucf101(tmp_path / "ucf"))
    assert listing.report() == (
        "ucf101: 3 splits, 3 classes, 3 train / 3 test (split1); 3 listed files missing, e.g. "
        "trainlist01.txt line 4: ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi, "
        "trainlist02.txt line 4: ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi, "
        "trainlist03.txt line 4: ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi; 2 index lines skipped, e.g. "
        "trainlist01.txt line 5: expected '<Class>/<video>.avi <class number 1-3>', "
        "got 'Archery/v_Archery_g02_c01.avi', "
        "testlist01.txt line 4: the class folder of 'Bowling/v_Bowling_g01_c01.avi' is not a class of classInd.txt"
    )
    clean = Listing("msrvtt", [], [Split("test", [], [Item(Path("a.mp4"), caption="x")])])
    assert clean.report() == "msrvtt: 1 split, retrieval (no classes), 0 train / 1 test (test)"


def test_list_dataset_logs_a_warning_with_the_missing_count_and_examples(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vatt.data.downstream"):
        list_dataset("ucf101", make_ucf101(tmp_path / "ucf"))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("ucf101: 3 listed files are missing under") and
               "trainlist01.txt line 4: ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi" in m for m in messages)
    assert any(m.startswith("ucf101: 2 index lines skipped or changed") for m in messages)


# --------------------------------------------------------------------------- HMDB51


def make_hmdb51(root: Path) -> Path:
    splits = root / "testTrainMulti_7030_splits"
    rows = {  # action -> (video, split-1 flag); splits 2 and 3 swap train and test
        "ride_bike": [("rb_a.avi", "1"), ("rb_b.avi", "2")],
        "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "1"),
                       ("April_09_brush_hair_u_nm_np1_ba_goo_1.avi", "2"),
                       ("April_09_brush_hair_u_nm_np1_ba_goo_2.avi", "0"),
                       ("Blonde_brush_hair_missing.avi", "1")],
        "cartwheel": [("cw_a.avi", "2"), ("cw_b.avi", "1"), ("cw_c.avi", "3")],
    }
    swap = {"1": "2", "2": "1"}
    for action, videos in rows.items():
        for k in (1, 2, 3):
            # trailing space after the flag, as in the released files
            text = "".join(f"{v} {flag if k == 1 else swap.get(flag, flag)} \n" for v, flag in videos)
            write(splits / f"{action}_test_split{k}.txt", text)
        for v, _ in videos:
            if "missing" not in v:
                # ride_bike only under <root>/videos/: the fallback folder
                touch(root / ("videos" if action == "ride_bike" else "") / action / v)
    return root


def test_hmdb51_sorts_the_actions_and_puts_flag_1_in_train_2_in_test_and_0_in_neither(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb")
    listing = list_dataset("hmdb51", root)
    assert listing.classes == ["brush_hair", "cartwheel", "ride_bike"]
    assert [s.name for s in listing.splits] == ["split1", "split2", "split3"]
    s1, s2 = listing.splits[0], listing.splits[1]
    assert ids(s1.train) == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "cartwheel/cw_b.avi",
                             "ride_bike/rb_a.avi"]
    assert labels(s1.train) == [0, 1, 2]
    assert ids(s1.test) == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi", "cartwheel/cw_a.avi",
                            "ride_bike/rb_b.avi"]
    assert labels(s1.test) == [0, 1, 2]
    unused = "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_2.avi"
    assert all(unused not in ids(s.train) + ids(s.test) for s in listing.splits)
    assert ids(s2.train) == ids(s1.test) and ids(s2.test) == ids(s1.train)
    assert s1.train[2].path == root / "videos/ride_bike/rb_a.avi"
    assert s1.train[0].path == root / "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"
    assert listing.missing == ["brush_hair_test_split1.txt line 4: brush_hair/Blonde_brush_hair_missing.avi",
                               "brush_hair_test_split2.txt line 4: brush_hair/Blonde_brush_hair_missing.avi",
                               "brush_hair_test_split3.txt line 4: brush_hair/Blonde_brush_hair_missing.avi"]
    assert listing.skipped == [f"cartwheel_test_split{k}.txt line 3: expected '<video>.avi <0|1|2>', "
                               "got 'cw_c.avi 3'" for k in (1, 2, 3)]


def test_hmdb51_accepts_split_lists_in_splits_and_names_a_missing_list(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb")
    (root / "testTrainMulti_7030_splits").rename(root / "splits")
    assert [len(s.train) for s in list_dataset("hmdb51", root).splits] == [3, 3, 3]
    (root / "splits/cartwheel_test_split3.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"hmdb51: .*splits/cartwheel_test_split3.txt does not exist"):
        list_dataset("hmdb51", root)


# --------------------------------------------------------------------------- Kinetics


def make_kinetics(root: Path, header: str, annotations: str = "annotations", val_name: str = "validate.csv") -> Path:
    write(root / annotations / "train.csv", f"{header}\n"
          "abseiling,--07WQ2iBlw,1,11,train\n"
          "air drumming,-0Q6ugs9qzc,14,24,train\n"
          '"petting animal (not cat)",p1AAAAAAAAA,0,10,train\n'  # line 4: no file
          "zumba,zzAAAAAAAAA,x,10,train\n")  # line 5: bad time
    write(root / annotations / val_name, f"{header}\n"
          "abseiling,v1AAAAAAAAA,30,40,validate\n"
          '"petting animal (not cat)",v2AAAAAAAAA,5,15,validate\n'
          "yoga,v3AAAAAAAAA,0,10,validate\n")  # line 4: not a train class
    write(root / annotations / "test.csv", "youtube_id,time_start,time_end,split\nt1AAAAAAAAA,0,10,test\n")
    touch(root / "train/abseiling/--07WQ2iBlw_000001_000011.mp4")
    touch(root / "train/air drumming/-0Q6ugs9qzc_000014_000024.webm")
    touch(root / "v1AAAAAAAAA_000030_000040.mp4")  # flat
    touch(root / "val/petting animal (not cat)/v2AAAAAAAAA_000005_000015.mkv")
    touch(root / "val/yoga/v3AAAAAAAAA_000000_000010.mp4")
    touch(root / "test/t1AAAAAAAAA_000000_000010.mp4")
    return root


def test_kinetics_finds_clips_by_name_anywhere_and_labels_by_the_sorted_train_classes(tmp_path):
    root = make_kinetics(tmp_path / "k400", "label,youtube_id,time_start,time_end,split")
    listing = list_dataset("kinetics400", root)
    assert listing.name == "kinetics400"
    assert listing.classes == ["abseiling", "air drumming", "petting animal (not cat)"]
    (split,) = listing.splits
    assert split.name == "test"
    assert split.train == [
        Item(root / "train/abseiling/--07WQ2iBlw_000001_000011.mp4", 0, id="--07WQ2iBlw_000001_000011"),
        Item(root / "train/air drumming/-0Q6ugs9qzc_000014_000024.webm", 1, id="-0Q6ugs9qzc_000014_000024"),
    ]
    assert split.test == [
        Item(root / "v1AAAAAAAAA_000030_000040.mp4", 0, id="v1AAAAAAAAA_000030_000040"),
        Item(root / "val/petting animal (not cat)/v2AAAAAAAAA_000005_000015.mkv", 2, id="v2AAAAAAAAA_000005_000015"),
    ]
    assert listing.missing == ["train.csv line 4: p1AAAAAAAAA_000000_000010.*"]
    assert listing.skipped == [
        "train.csv line 5: expected a label, a youtube_id and whole-second times, got 'zumba,zzAAAAAAAAA,x,10,train'",
        "validate.csv line 4: label 'yoga' is not a class of train.csv",
    ]


def test_kinetics700_reads_the_is_cc_header_from_the_root_and_val_csv(tmp_path):
    root = make_kinetics(tmp_path / "k700", "label,youtube_id,time_start,time_end,split,is_cc", "", "val.csv")
    listing = list_dataset("kinetics700", root)
    assert listing.name == "kinetics700"
    assert ids(listing.splits[0].train) == ["--07WQ2iBlw_000001_000011", "-0Q6ugs9qzc_000014_000024"]
    assert labels(listing.splits[0].test) == [0, 2]
    (root / "val.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"kinetics700: .*validate.csv \(or val.csv\) does not exist"):
        list_dataset("kinetics700", root)


def test_kinetics_csv_without_the_official_columns_names_the_missing_field(tmp_path):
    root = tmp_path / "k600"
    write(root / "train.csv", "label,id,start,end\nabseiling,a,0,10\n")
    write(root / "validate.csv", "label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(ValueError, match=r"kinetics600: .*train.csv has no column youtube_id, time_start, time_end"):
        list_dataset("kinetics600", root)


# --------------------------------------------------------------------------- Moments in Time


def make_mit(root: Path) -> Path:
    write(root / "trainingSet.csv",
          "adult+female+singing/0000001.mp4,adult+female+singing,3,1\n"
          "barking/0000002.mp4,barking,3,0\n"
          "barking/0000003.mp4,barking,2,1\n")  # line 3: no file
    write(root / "validationSet.csv",
          "barking/0000010.mp4,barking,3,0\n"
          "adult+female+singing/0000011.mp4,adult+female+singing,3,0\n"
          "clapping/0000012.mp4,clapping,3,0\n")
    write(root / "moments_categories.txt", "clapping,0\nbarking,1\nadult+female+singing,2\n")
    for rel in ("training/adult+female+singing/0000001.mp4", "training/barking/0000002.mp4",
                "validation/barking/0000010.mp4", "validation/adult+female+singing/0000011.mp4",
                "validation/clapping/0000012.mp4"):
        touch(root / rel)
    return root


def test_mit_takes_class_ids_from_moments_categories_and_validation_as_test(tmp_path):
    root = make_mit(tmp_path / "mit")
    listing = list_dataset("mit", root)
    assert listing.classes == ["clapping", "barking", "adult+female+singing"]
    (split,) = listing.splits
    assert split.train == [
        Item(root / "training/adult+female+singing/0000001.mp4", 2, id="training/adult+female+singing/0000001.mp4"),
        Item(root / "training/barking/0000002.mp4", 1, id="training/barking/0000002.mp4"),
    ]
    assert ids(split.test) == ["validation/barking/0000010.mp4", "validation/adult+female+singing/0000011.mp4",
                               "validation/clapping/0000012.mp4"]
    assert labels(split.test) == [1, 2, 0]
    assert listing.missing == ["trainingSet.csv line 3: training/barking/0000003.mp4"]
    assert listing.skipped == []


def test_mit_without_categories_uses_the_sorted_training_labels_and_skips_other_labels(tmp_path):
    root = make_mit(tmp_path / "mit")
    (root / "moments_categories.txt").unlink()
    listing = list_dataset("mit", root)
    assert listing.classes == ["adult+female+singing", "barking"]
    assert labels(listing.splits[0].train) == [0, 1] and labels(listing.splits[0].test) == [1, 0]
    assert listing.skipped == ["validationSet.csv line 3: label 'clapping' is not a class of trainingSet.csv"]


# --------------------------------------------------------------------------- ESC-50


ESC_CLASSES = ["dog", "rooster", "rain"]


def make_esc50(root: Path) -> Path:
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in enumerate(ESC_CLASSES):
            name = f"{fold}-10{target}-A-{target}.wav"
            lines.append(f"{name},{fold},{target},{category},False,10{target},A")
            if (fold, target) != (3, 1):  # 3-101-A-1.wav (line 9) is not downloaded
                touch(root / "audio" / name)
    lines.append("6-100-A-0.wav,6,0,dog,False,100,A")  # line 17: no fold 6
    write(root / "meta/esc50.csv", "\n".join(lines) + "\n")
    return root


def test_esc50_folds_test_on_one_fold_and_train_on_the_other_four(tmp_path):
    root = make_esc50(tmp_path / "esc")
    listing = list_dataset("esc50", root)
    assert (listing.modality, listing.classes) == ("audio", ESC_CLASSES)
    assert [s.name for s in listing.splits] == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    fold3 = listing.splits[2]
    assert ids(fold3.test) == ["3-100-A-0.wav", "3-102-A-2.wav"] and labels(fold3.test) == [0, 2]
    assert ids(fold3.train) == [f"{f}-10{t}-A-{t}.wav" for f in (1, 2, 4, 5) for t in range(3)]
    assert labels(fold3.train) == [0, 1, 2] * 4
    assert fold3.test[0] == Item(root / "audio/3-100-A-0.wav", 0, id="3-100-A-0.wav")
    fold1 = listing.splits[0]
    assert ids(fold1.test) == ["1-100-A-0.wav", "1-101-A-1.wav", "1-102-A-2.wav"]
    assert len(fold1.train) == 11 and "3-101-A-1.wav" not in ids(fold1.train)
    assert listing.missing == ["esc50.csv line 9: audio/3-101-A-1.wav"]
    assert listing.skipped == ["esc50.csv line 17: expected a filename, a fold 1-5, a target >= 0 and a category, "
                               "got '6-100-A-0.wav,6,0,dog,False,100,A'"]


# --------------------------------------------------------------------------- AudioSet


AUDIOSET_HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=5, num_segs=5, num_unique_labels=3, num_positive_labels=6\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


def make_audioset(root: Path) -> Path:
    write(root / "class_labels_indices.csv",
          'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n2,/m/04rlf,"Music"\n')
    write(root / "balanced_train_segments.csv", AUDIOSET_HEADER +
          'vidAAAAAAAA, 30.000, 40.000, "/m/04rlf,/m/09x0r"\n'  # line 4
          'wavBBBBBBBB, 12.500, 22.500, "/m/05zppz,/m/zzzzz"\n'  # line 5: one unknown mid
          'misCCCCCCCC, 1.000, 11.000, "/m/09x0r"\n'  # line 6: no file
          'unkDDDDDDDD, 0.000, 10.000, "/m/zzzzz"\n'  # line 7: no known label
          "not a row\n")  # line 8
    write(root / "unbalanced_train_segments.csv", AUDIOSET_HEADER + 'intEEEEEEEE, 20.000, 30.000, "/m/09x0r"\n')
    write(root / "eval_segments.csv", AUDIOSET_HEADER + 'plnFFFFFFFF, 5.000, 15.000, "/m/05zppz,/m/04rlf"\n')
    touch(root / "clips/video/vidAAAAAAAA_30.000.mp4")  # start as written
    touch(root / "clips/audio/wavBBBBBBBB_12500.wav")  # milliseconds, audio only
    touch(root / "unkDDDDDDDD_0.mp4")
    touch(root / "intEEEEEEEE_20.mkv")  # int(start)
    touch(root / "eval/plnFFFFFFFF.flac")  # bare YTID
    return root


def test_audioset_labels_are_sorted_class_tuples_and_unknown_mids_are_reported(tmp_path):
    root = make_audioset(tmp_path / "as")
    listing = list_dataset("audioset", root)
    assert (listing.multilabel, listing.modality) == (True, "video")
    assert listing.classes == ["Speech", "Male speech, man speaking", "Music"]
    (split,) = listing.splits
    assert split.train == [
        Item(root / "clips/video/vidAAAAAAAA_30.000.mp4", (0, 2), id="vidAAAAAAAA_30"),
        Item(root / "clips/audio/wavBBBBBBBB_12500.wav", (1,), id="wavBBBBBBBB_12.5"),
    ]
    assert split.test == [Item(root / "eval/plnFFFFFFFF.flac", (1, 2), id="plnFFFFFFFF_5")]
    assert listing.missing == ["balanced_train_segments.csv line 6: misCCCCCCCC_1.000.*"]
    assert listing.skipped == [
        "balanced_train_segments.csv line 5: label /m/zzzzz is not in class_labels_indices.csv, dropped",
        "balanced_train_segments.csv line 7: label /m/zzzzz is not in class_labels_indices.csv, dropped",
        "balanced_train_segments.csv line 7: no known label, left out",
        "balanced_train_segments.csv line 8: expected YTID, start_seconds, end_seconds, positive_labels, "
        "got 'not a row'",
    ]


def test_audioset_train_set_option_selects_the_unbalanced_list(tmp_path):
    root = make_audioset(tmp_path / "as")
    listing = list_dataset("audioset", root, train_set="unbalanced")
    assert listing.splits[0].train == [Item(root / "intEEEEEEEE_20.mkv", (0,), id="intEEEEEEEE_20")]
    assert ids(listing.splits[0].test) == ["plnFFFFFFFF_5"] and listing.missing == []
    with pytest.raises(ValueError, match="train_set must be one of balanced, unbalanced, got 'full'"):
        list_dataset("audioset", root, train_set="full")
    (root / "unbalanced_train_segments.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"audioset: .*unbalanced_train_segments.csv does not exist"):
        list_dataset("audioset", root, train_set="unbalanced")


def test_audioset_rows_and_file_name_candidates_shared_with_prepare(tmp_path):
    csv_path = write(tmp_path / "eval_segments.csv",
                     AUDIOSET_HEADER + '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"\n, 1.0, 2.0, "/m/0"\n')
    seg, bad = read_audioset_segments(csv_path)
    assert seg == AudioSetSegment(4, '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"', "--4gqARaEJE", "0.000",
                                  "10.000", 0.0, 10.0, ("/m/068hy", "/m/07q6cd_"))
    assert seg.clip_id == "--4gqARaEJE_0"
    assert bad == MalformedRow(5, ', 1.0, 2.0, "/m/0"', "expected YTID, start_seconds, end_seconds, positive_labels")
    assert audioset_file_stems("abc", "12.500") == ["abc_12.500", "abc_12.5", "abc_12", "abc_12500", "abc"]


# --------------------------------------------------------------------------- MSR-VTT


def test_msrvtt_pairs_each_sentence_with_its_video_from_the_usual_folders_or_anywhere(tmp_path):
    root = tmp_path / "msrvtt"
    write(root / "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,sentence\n"
          "ret0,msr7020,video7020,a family is having coversation\n"
          'ret1,msr7021,video7021,"a man, in a hat, sings"\n'
          "ret2,msr7022,video7022,a dog runs\n"
          "ret3,msr7023,video7023,cars race\n"
          "ret4,msr7024,video7024,nobody downloaded this\n"  # line 6: no file
          "ret5,msr7025,video7025,\n")  # line 7: no sentence
    touch(root / "videos/all/video7020.mp4")
    touch(root / "videos/all/video7021.mp4")
    touch(root / "TestVideo/video7022.mp4")
    touch(root / "elsewhere/deep/video7023.webm")
    listing = list_dataset("msrvtt", root)
    assert listing.classes == [] and len(listing.splits) == 1
    (split,) = listing.splits
    assert split.name == "test" and split.train == []
    assert split.test == [
        Item(root / "videos/all/video7020.mp4", None, caption="a family is having coversation", id="video7020"),
        Item(root / "videos/all/video7021.mp4", None, caption="a man, in a hat, sings", id="video7021"),
        Item(root / "TestVideo/video7022.mp4", None, caption="a dog runs", id="video7022"),
        Item(root / "elsewhere/deep/video7023.webm", None, caption="cars race", id="video7023"),
    ]
    assert listing.missing == ["MSRVTT_JSFUSION_test.csv line 6: videos/all/video7024.mp4"]
    assert listing.skipped == ["MSRVTT_JSFUSION_test.csv line 7: expected a video_id and a sentence, "
                               "got 'ret5,msr7025,video7025,'"]


# --------------------------------------------------------------------------- YouCook2


def test_youcook2_lists_one_item_per_validation_segment_with_its_times_and_sentence(tmp_path):
    root = tmp_path / "yc2"
    database = {
        "GLd3aX16zBg": {"subset": "validation", "recipe_type": "101", "duration": 241.62, "annotations": [
            {"id": 0, "segment": [90, 102], "sentence": "spread margarine on two slices of white bread"},
            {"id": 1, "segment": [114, 127.5], "sentence": "place a slice of cheese on the bread"}]},
        "trainVid0001": {"subset": "training", "recipe_type": "101", "duration": 100.0, "annotations": [
            {"id": 0, "segment": [1, 5], "sentence": "not in the validation set"}]},
        "missVid0001": {"subset": "validation", "recipe_type": "102", "duration": 50.0, "annotations": [
            {"id": 0, "segment": [1, 5], "sentence": "no video on disk"}]},
        "badVid00001": {"subset": "validation", "recipe_type": "103", "duration": 50.0, "annotations": [
            {"id": 0, "segment": [10, 5], "sentence": "ends before it starts"},
            {"id": 1, "segment": [3, 4], "sentence": "fine"}]},
    }
    write(root / "youcookii_annotations_trainval.json", json.dumps({"database": database}))
    touch(root / "raw_videos/validation/101/GLd3aX16zBg.mp4")
    touch(root / "raw_videos/training/101/trainVid0001.mp4")
    touch(root / "badVid00001.mkv")
    listing = list_dataset("youcook2", root)
    assert listing.classes == []
    (split,) = listing.splits
    assert split.name == "test" and split.train == []
    video = root / "raw_videos/validation/101/GLd3aX16zBg.mp4"
    assert split.test == [
        Item(video, None, caption="spread margarine on two slices of white bread", start=90.0, end=102.0,
             id="GLd3aX16zBg_0"),
        Item(video, None, caption="place a slice of cheese on the bread", start=114.0, end=127.5, id="GLd3aX16zBg_1"),
        Item(root / "badVid00001.mkv", None, caption="fine", start=3.0, end=4.0, id="badVid00001_1"),
    ]
    assert listing.missing == [
        "youcookii_annotations_trainval.json entry missVid0001: raw_videos/validation/102/missVid0001.*"
    ]
    assert listing.skipped == [
        "youcookii_annotations_trainval.json entry badVid00001: annotation 0: bad segment [10, 5] "
        "(needs 0 <= start < end)"
    ]


# --------------------------------------------------------------------------- ImageNet-style folders


def test_imagenet_classes_are_the_sorted_train_folders_and_val_extras_are_skipped(tmp_path):
    root = tmp_path / "imagenet"
    for rel in ("train/n01443537/c.jpg", "train/n01440764/b.png", "train/n01440764/a.JPEG",
                "train/n01443537/readme.txt", "val/n01440764/v1.JPEG", "val/n01443537/v2.jpeg",
                "val/n99999999/v3.JPEG", "val/ILSVRC2012_val_00000001.JPEG"):
        touch(root / rel)
    listing = list_dataset("imagenet", root)
    assert (listing.modality, listing.classes) == ("image", ["n01440764", "n01443537"])
    (split,) = listing.splits
    assert split.train == [Item(root / "train/n01440764/a.JPEG", 0, id="train/n01440764/a.JPEG"),
                           Item(root / "train/n01440764/b.png", 0, id="train/n01440764/b.png"),
                           Item(root / "train/n01443537/c.jpg", 1, id="train/n01443537/c.jpg")]
    assert ids(split.test) == ["val/n01440764/v1.JPEG", "val/n01443537/v2.jpeg"] and labels(split.test) == [0, 1]
    assert listing.missing == []
    assert listing.skipped == [
        "val/: 1 image outside class folders left out (e.g. ILSVRC2012_val_00000001.JPEG); "
        "move them into val/<class>/",
        "val/n99999999: not a class folder of train/, 1 image left out",
    ]
    (root / "val").rename(root / "validation")
    with pytest.raises(FileNotFoundError, match=r"imagenet: .*/val does not exist; expected .*/val/<class>/"):
        list_dataset("imagenet", root)


# --------------------------------------------------------------------------- demo


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_demo_classifies_by_the_chosen_label_with_classes_sorted_over_both_splits(demo_root):
    train, val = _jsonl(demo_root / "train.jsonl"), _jsonl(demo_root / "val.jsonl")
    for key in ("colour", "shape", "motion"):
        listing = list_dataset("demo", demo_root, label=key)
        expected = sorted({r["labels"][key] for r in train + val})
        assert listing.classes == expected and listing.missing == [] and listing.skipped == []
        (split,) = listing.splits
        assert ids(split.train) == [r["video"] for r in train] and ids(split.test) == [r["video"] for r in val]
        assert labels(split.train) == [expected.index(r["labels"][key]) for r in train]
        assert labels(split.test) == [expected.index(r["labels"][key]) for r in val]
        assert split.test[0].path == demo_root / val[0]["video"]
    assert list_dataset("demo", demo_root).classes == sorted({r["labels"]["colour"] for r in train + val})
    with pytest.raises(ValueError, match="no row has the label 'size'; the labels present are colour, motion, shape"):
        list_dataset("demo", demo_root, label="size")


def test_demo_retrieval_lists_captioned_val_clips_with_their_first_caption(demo_root):
    val = _jsonl(demo_root / "val.jsonl")
    listing = list_dataset("demo", demo_root, task="retrieval")
    assert listing.classes == []
    (split,) = listing.splits
    captioned = [r for r in val if r["captions"]]
    assert split.train == []
    assert split.test == [
        Item(demo_root / r["video"], None, caption=min(r["captions"], key=lambda c: c["start"])["text"], id=r["video"])
        for r in captioned
    ]
    with pytest.raises(ValueError, match="task must be one of classify, retrieval, got 'caption'"):
        list_dataset("demo", demo_root, task="caption")


def test_demo_rows_with_absent_clips_are_reported_with_their_manifest_line(tmp_path):
    root = tmp_path / "demo"
    rows = [
        {"video": "train/000000.mp4", "captions": [], "labels": {"colour": "red", "shape": "circle"}},
        {"video": "train/000001.mp4", "captions": [], "labels": {"colour": "blue", "shape": "cross"}},
        {"video": "train/000002.mp4", "captions": [], "labels": {"colour": "green", "shape": "square"}},
    ]
    write(root / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    val = [{"video": "val/000000.mp4", "labels": {"colour": "cyan", "shape": "circle"},
            "captions": [{"start": 2.0, "end": 3.0, "text": "later"}, {"start": 0.0, "end": 2.0, "text": "first"}]}]
    write(root / "val.jsonl", "".join(json.dumps(r) + "\n" for r in val) + "not json\n")
    for rel in ("train/000000.mp4", "train/000002.mp4", "val/000000.mp4"):
        touch(root / rel)
    listing = list_dataset("demo", root)
    assert listing.classes == ["cyan", "green", "red"]  # blue only labels the absent clip
    assert ids(listing.splits[0].train) == ["train/000000.mp4", "train/000002.mp4"]
    assert labels(listing.splits[0].train) == [2, 1] and labels(listing.splits[0].test) == [0]
    assert listing.missing == ["train.jsonl line 2: train/000001.mp4"]
    assert listing.skipped == ["val.jsonl line 2: not JSON (Expecting value)"]
    retrieval = list_dataset("demo", root, task="retrieval")
    assert retrieval.splits[0].test == [Item(root / "val/000000.mp4", None, caption="first", id="val/000000.mp4")]
