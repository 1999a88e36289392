"""Every protocol end to end on CPU with vatt_tiny, on tiny official layouts made of real generated media."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import clip, make_audioset, make_esc50, make_msrvtt, make_ucf101, only_run, run_module, write_av

pytestmark = pytest.mark.slow

TINY = ["model_name=tiny"]
TINY_FINETUNE = ["model.name=tiny", "model.input.num_frames=8", "model.input.image_size=64",
                 "model.input.sample_rate=16000", "trainer.precision=32-true", "trainer.max_steps=2",
                 "data.batch_size=2", "model.scheduler.warmup_steps=1"]


def metrics_of(cwd: Path, task: str) -> dict:
    return json.loads((only_run(cwd, task) / "metrics.json").read_text())


def test_linear_probe_on_a_ucf101_layout_reports_every_split_and_their_mean(tmp_path):
    root = make_ucf101(tmp_path / "ucf101")
    run_module("vatt.eval", ["task=linear_probe", "data=ucf101", f"data.root={root}", *TINY], tmp_path)
    m = metrics_of(tmp_path, "eval")
    for k in (1, 2, 3):
        assert m[f"split{k}/num_train"] == 9 and m[f"split{k}/num_test"] == 3
    assert m["test/top1"] == pytest.approx(sum(m[f"split{k}/top1"] for k in (1, 2, 3)) / 3)
    assert m["num_skipped"] == 0


def test_linear_probe_on_esc50_reads_audio_and_leaves_each_fold_out(tmp_path):
    root = make_esc50(tmp_path / "esc50")
    run_module("vatt.eval", ["task=linear_probe", "data=esc50", f"data.root={root}", *TINY], tmp_path)
    m = metrics_of(tmp_path, "eval")
    assert [m[f"fold{f}/num_test"] for f in range(1, 6)] == [2] * 5 and m["fold3/num_train"] == 8
    assert m["test/top1"] == pytest.approx(sum(m[f"fold{f}/top1"] for f in range(1, 6)) / 5)


def test_zero_shot_retrieval_on_youcook2_segments(tmp_path):
    root = tmp_path / "youcook2"
    database = {}
    for v in range(3):
        vid = f"video{v:07d}"
        clip(root / "raw_videos" / "validation" / "101" / f"{vid}.mp4", seed=v, seconds=3.0)
        database[vid] = {"subset": "validation", "recipe_type": "101", "duration": 3.0, "annotations": [
            {"id": 0, "segment": [0.0, 1.4], "sentence": f"chop onion {v}"},
            {"id": 1, "segment": [1.5, 3.0], "sentence": f"fry garlic {v}"}]}
    (root / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": database}))
    run_module("vatt.eval", ["task=retrieval", "data=youcook2", f"data.root={root}", *TINY], tmp_path)
    m = metrics_of(tmp_path, "eval")
    assert m["num_test"] == 6 and m["test/chance_R@10"] == 1.0
    assert 1 <= m["test/t2v_MedR"] <= 6 and 1 <= m["test/v2t_meansim_MedR"] <= 6


def test_zero_shot_retrieval_on_msrvtt(tmp_path):
    root = make_msrvtt(tmp_path / "msrvtt")
    run_module("vatt.eval", ["task=retrieval", "data=msrvtt", f"data.root={root}", *TINY], tmp_path)
    assert metrics_of(tmp_path, "eval")["num_test"] == 4


def test_finetuning_on_audioset_is_multi_label_with_map_auc_and_d_prime(tmp_path):
    root = make_audioset(tmp_path / "audioset")
    run_module("vatt.train", ["experiment=finetune_audioset", f"data.root={root}", *TINY_FINETUNE], tmp_path)
    m = metrics_of(tmp_path, "train")
    assert {"test/mAP", "test/AUC", "test/d_prime"} <= set(m) and m["num_test"] == 3 and m["num_train"] == 4
    assert 0.0 <= m["test/mAP"] <= 1.0 and 0.0 <= m["test/AUC"] <= 1.0


def test_finetuning_on_an_imagenet_folder_repeats_images_along_time(tmp_path):
    from torchvision.io import write_png

    root = tmp_path / "imagenet"
    for split, n in (("train", 3), ("val", 1)):
        for c, name in enumerate(("n01440764", "n01443537")):
            for i in range(n):
                img = torch.zeros(3, 40, 56, dtype=torch.uint8)
                img[c] = 200 + i
                (root / split / name).mkdir(parents=True, exist_ok=True)
                write_png(img, str(root / split / name / f"{name}_{i}.png"))
    run_module("vatt.train", ["experiment=finetune_imagenet", f"data.root={root}", *TINY_FINETUNE,
                              "model.input.num_frames=4"], tmp_path)
    m = metrics_of(tmp_path, "train")
    assert m["num_train"] == 6 and m["num_test"] == 2 and {"test/top1", "test/top5"} <= set(m)
