"""The ``protocol`` record of metrics.json (vatt.protocol): counts, id hashes, comparability, and make report's columns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import eval_cfg, make_audioset, make_ucf101
from vatt import protocol
from vatt.protocol import Part


def sha(lines: list[str]) -> str:
    return hashlib.sha256("".join(f"{x}\n" for x in sorted(lines)).encode()).hexdigest()


def test_the_id_hash_is_over_the_sorted_ids_one_per_line():
    assert protocol.ids_sha256(["b", "a"]) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert protocol.ids_sha256(["a", "b"]) == protocol.ids_sha256(["b", "a"])
    assert protocol.ids_sha256(["a"]) != protocol.ids_sha256(["a", "b"])


def test_the_weights_are_named_by_their_hash_and_a_folder_by_its_weights_file(tmp_path):
    f = tmp_path / "w.ckpt"
    f.write_bytes(b"x" * 5_000_000)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "folder" / "README.md").write_text("card")
    for path, content in ((f, b"x" * 5_000_000), (tmp_path / "folder", b"weights")):
        r = protocol.build("retrieval", "msrvtt", msrvtt_parts(3), ["test"], protocol.view_record(4, 1, "mean"), "vt",
                           None, path)
        assert r["checkpoint"] == {"path": str(path), "sha256": hashlib.sha256(content).hexdigest()}


def msrvtt_parts(evaluated: int, listed: int | None = None, missing: int = 0) -> list[Part]:
    ids = [f"video{i}" for i in range(evaluated)]
    return [Part("test", "test", listed if listed is not None else evaluated, missing, ids)]


def record(parts, task="retrieval", dataset="msrvtt", views=(4, 1), feature="vt", classifier=None, splits=("test",),
           checkpoint="ckpt", random_init=None, tmp_path=None):
    ckpt = None
    if checkpoint:
        ckpt = tmp_path / "w.safetensors"
        ckpt.write_bytes(b"w")
    return protocol.build(task, dataset, parts, list(splits), protocol.view_record(*views, "mean"), feature,
                          classifier, ckpt, random_init=random_init)


def test_the_paper_protocol_on_every_official_item_is_comparable(tmp_path):
    r = record(msrvtt_parts(1000), tmp_path=tmp_path)
    assert r["comparable_to_paper"] is True and r["reasons"] == []
    assert r["items_evaluated"] == r["items_official"] == 1000 and r["items_missing"] == r["items_unreadable"] == 0
    assert r["ids_sha256"] == sha([f"video{i}" for i in range(1000)]) == r["items"]["test/test"]["ids_sha256"]
    assert r["checkpoint"]["sha256"] == hashlib.sha256(b"w").hexdigest()


@pytest.mark.parametrize("change, reason", [
    (dict(parts=msrvtt_parts(990, listed=995, missing=5)),
     "test/test: 990 of the official 1000 items evaluated (5 missing, 5 unreadable)"),
    (dict(parts=msrvtt_parts(900)), "test/test: 900 of the official 1000 items evaluated (100 not in the index files)"),
    (dict(parts=msrvtt_parts(1001)), "more than the official 1000: not the official list"),
    (dict(views=(1, 1)), "views 1 windows x 1 crops; the paper's 4 x 1"),
    (dict(feature="va"), "feature va; the paper's vt"),
    (dict(checkpoint=None, random_init="tiny, seed 42"), "random weights (tiny, seed 42)"),
    (dict(task="zero_shot"), "the paper reports no zero-shot classification on msrvtt"),
    (dict(dataset="demo"), "the paper reports no zero-shot retrieval on demo"),
])
def test_each_difference_from_the_paper_makes_it_not_comparable_and_says_why(tmp_path, change, reason):
    kwargs = {"parts": msrvtt_parts(1000), **change}
    r = record(tmp_path=tmp_path, **kwargs)
    assert r["comparable_to_paper"] is False
    assert any(reason in x for x in r["reasons"]), r["reasons"]


def test_a_probe_is_judged_on_its_classifier_and_on_every_split(tmp_path):
    parts = [Part(f"split{k}", part, n, 0, [f"{part}{i}" for i in range(n)])
             for k, (tr, te) in enumerate(((9537, 3783), (9586, 3734), (9624, 3696)), 1)
             for part, n in (("train", tr), ("test", te))]
    splits = ("split1", "split2", "split3")
    args = dict(task="linear_probe", dataset="ucf101", feature="agg", splits=splits, tmp_path=tmp_path)
    assert record(parts, classifier="authors", **args)["comparable_to_paper"] is True
    r = record(parts, classifier="logistic", **args)
    assert r["reasons"] == ["classifier logistic; the paper's authors (probe.classifier=authors)"]
    r = record(parts[:2], classifier="authors", **args)  # split1 alone
    assert r["reasons"] == ["splits split1 evaluated; the paper reports the mean over split1, split2, split3"]
    assert r["ids_sha256"] == sha([f"test{i}" for i in range(3783)])  # one split: its bare ids
    several = record(parts, classifier="authors", **args)
    assert several["ids_sha256"] == sha([f"split{k}/test{i}" for k, n in ((1, 3783), (2, 3734), (3, 3696))
                                         for i in range(n)])
    assert several["items_evaluated"] == several["items_official"] == 3783 + 3734 + 3696


# --------------------------------------------------------------------------- end to end: make eval's metrics.json


def run_eval(tmp_path: Path, overrides: list[str]) -> dict:
    from vatt.eval import evaluate

    run = tmp_path / "runs" / f"{len(list((tmp_path / 'runs').glob('*'))) if (tmp_path / 'runs').exists() else 0}"
    (run / ".hydra").mkdir(parents=True)
    cfg = eval_cfg(tmp_path, overrides)
    (run / ".hydra" / "config.yaml").write_text("{}\n")
    evaluate(cfg, run)
    return json.loads((run / "metrics.json").read_text())


def test_counts_and_hash_are_exact_for_a_layout_with_deleted_and_broken_files(tmp_path):
    root = make_ucf101(tmp_path / "ucf101")
    # group 1 is split1's test group and in split2's and split3's train lists
    (root / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi").unlink()
    (root / "UCF-101" / "Bowling" / "v_Bowling_g02_c01.avi").write_bytes(b"not a video")  # split2's test group
    m = run_eval(tmp_path, ["task=zero_shot", "data=ucf101", f"data.root={root}", "eval.cache_dir=null",
                            "data.num_windows=1"])
    p = m["protocol"]
    assert p["task"] == "zero_shot" and p["dataset"] == "ucf101" and p["splits"] == ["split1", "split2", "split3"]
    assert p["items"]["split1/test"] | {"ids_sha256": None} == {
        "official": 3783, "listed": 2, "missing": 1, "unreadable": 0, "evaluated": 2, "ids_sha256": None}
    assert p["items"]["split2/test"]["listed"] == 3 and p["items"]["split2/test"]["unreadable"] == 1
    assert p["items"]["split2/test"]["evaluated"] == 2 and p["items"]["split3/test"]["evaluated"] == 3
    assert p["items"]["split1/test"]["ids_sha256"] == sha(["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                                                           "Bowling/v_Bowling_g01_c01.avi"])
    evaluated = {1: ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Bowling/v_Bowling_g01_c01.avi"],
                 2: ["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi", "Archery/v_Archery_g02_c01.avi"],
                 3: [f"{c}/v_{c}_g03_c01.avi" for c in ("ApplyEyeMakeup", "Archery", "Bowling")]}
    assert p["ids_sha256"] == sha([f"split{k}/{i}" for k, ids in evaluated.items() for i in ids])
    assert (p["items_evaluated"], p["items_missing"], p["items_unreadable"]) == (7, 1, 1)
    assert p["items_official"] == 3783 + 3734 + 3696 and m["num_skipped"] == 1
    assert p["comparable_to_paper"] is False and p["checkpoint"]["random_init"] == "tiny, seed 42"
    assert p["reasons"] == ["the paper reports no zero-shot classification on ucf101"]


def test_zero_shot_on_a_multi_label_set_reports_map_auc_and_the_chance_level(tmp_path):
    root = make_audioset(tmp_path / "audioset")
    m = run_eval(tmp_path, ["task=zero_shot", "data=audioset", f"data.root={root}", "eval.cache_dir=null",
                            "data.num_windows=1"])
    assert {"test/mAP", "test/AUC", "test/d_prime", "test/meansim_mAP", "test/chance_mAP"} <= set(m)
    # eval clips: A+B, C, A -> positives per class 2/3, 1/3, 1/3: what constant scores would give
    assert m["test/chance_mAP"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3) and m["num_test"] == 3
    p = m["protocol"]
    assert p["feature"] == "va->vt" and p["items"]["test/test"]["official"] == 20_383
    assert p["items_evaluated"] == 3 and p["reasons"] == ["the paper reports no zero-shot classification on audioset"]


@pytest.mark.slow
def test_the_authors_probe_is_a_switch_and_report_shows_what_each_run_measured(tmp_path):
    from vatt.report import report

    root = make_ucf101(tmp_path / "ucf101")
    common = ["task=linear_probe", "data=ucf101", f"data.root={root}", "probe.cache_dir=null", "data.num_windows=1"]
    logistic = run_eval(tmp_path, common)
    authors = run_eval(tmp_path, [*common, "probe.classifier=authors", "probe.epochs=20", "data.split=split2"])
    assert logistic["protocol"]["classifier"] == "logistic" and "test/l2" not in logistic
    assert authors["protocol"]["classifier"] == "authors" and authors["protocol"]["splits"] == ["split2"]
    assert 0.0 <= authors["test/top1"] <= 1.0 and "split1/top1" not in authors and authors["num_test"] == 3
    reasons = authors["protocol"]["reasons"]
    assert "splits split2 evaluated; the paper reports the mean over split1, split2, split3" in reasons
    assert "split2/train: 9 of the official 9586 items evaluated (9577 not in the index files)" in reasons
    assert all("classifier" not in r for r in reasons)
    text = report(tmp_path / "runs")["report"].read_text()
    assert "| job | task | dataset | splits | items | missing | unreadable | ids |" in text
    assert f"| 1 | linear_probe | ucf101 | split2 | 3 / 3734 | 0 | 0 | {authors['protocol']['ids_sha256'][:12]} |" in text
