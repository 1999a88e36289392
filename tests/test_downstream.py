"""Downstream protocols: clip views, the labelled-clip dataset, the linear probe, and the eval / fine-tune commands."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import only_run, run_module, write_av
from vatt.data.clip import ClipConfig, crop_positions, window_starts
from vatt.data.downstream import Item
from vatt.data.labeled import LabeledClipDataset
from vatt.tasks.linear_probe import fit_logistic_regression, linear_probe, predict_proba, select_l2

TINY = ClipConfig(num_frames=8, fps=10, image_size=32, sample_rate=16000)


# --------------------------------------------------------------------------- views


def test_windows_are_linearly_spaced_over_the_video_or_segment():
    assert window_starts(4.0, 0.8, 4) == pytest.approx([0.0, 3.2 / 3, 6.4 / 3, 3.2])
    assert window_starts(4.0, 0.8, 1) == pytest.approx([1.6])  # centred
    assert window_starts(60.0, 0.8, 3, start=10.0, end=12.0) == pytest.approx([10.0, 10.6, 11.2])
    assert window_starts(4.0, 0.8, 2, start=3.9, end=4.5) == pytest.approx([3.9, 3.9])  # shorter than a window


def test_spatial_crops_run_along_the_long_side():
    assert crop_positions(32, 57, 32, 3) == [(0, 0), (0, 12), (0, 25)]  # landscape: left, centre, right
    assert crop_positions(57, 32, 32, 3) == [(0, 0), (12, 0), (25, 0)]  # portrait: top, centre, bottom
    assert crop_positions(40, 57, 32, 1) == [(4, 12)]
    with pytest.raises(ValueError, match="cannot take 3 crops of 64"):
        crop_positions(32, 57, 64, 3)


def ramp_video(path: Path, seconds: float = 4.0, fps: int = 10) -> Path:
    """Green level 20 + 5 i in frame i (time) and a left-to-right ramp in the red channel (position)."""
    n = int(seconds * fps)
    frames = np.zeros((n, 32, 64, 3), np.uint8)
    frames[..., 1] = (20 + 5 * np.arange(n))[:, None, None]
    frames[..., 0] = np.linspace(0, 252, 64, dtype=np.uint8)[None, None, :]
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
    return write_av(path, frames, fps, tone, 16000)


def _green_frame(video: torch.Tensor) -> int:  # [3, T, H, W] -> source frame of the first frame
    level = (float(video[1, 0].mean()) + 1) / 2 * 255
    return round((level - 20) / 5)


def test_views_are_windows_times_crops_in_window_major_order(tmp_path):
    item = Item(ramp_video(tmp_path / "a.mp4"), label=2, id="a")
    ds = LabeledClipDataset([item], "video", TINY, "views", num_classes=3, num_windows=4, num_crops=3)
    s = ds[0]
    assert s["video"].shape == (12, 3, 8, 32, 32) and s["label"].item() == 2 and s["valid"]
    # windows start at 0, 3.2/3, 6.4/3, 3.2 s: source frames 0, 10, 21, 32 at 10 fps
    assert [_green_frame(s["video"][w * 3]) for w in range(4)] == [0, 10, 21, 32]
    # the 32x64 frame keeps its size (short side 32): crops at x = 0, 16, 32 of the 64-wide red ramp
    red = [(float(s["video"][c, 0, 0, 0, 0]) + 1) / 2 * 255 for c in range(3)]
    assert red == pytest.approx([0, 252 * 16 / 63, 252 * 32 / 63], abs=4)
    single = LabeledClipDataset([item], "video", TINY, "single", num_classes=3)[0]
    assert single["video"].shape == (3, 8, 32, 32) and _green_frame(single["video"]) == 16  # centred window at 1.6 s


def test_audio_views_and_multilabel_targets(tmp_path):
    item = Item(ramp_video(tmp_path / "a.mp4"), label=(0, 3), id="a")
    s = LabeledClipDataset([item], "audio", TINY, "views", num_classes=5, multilabel=True)[0]
    assert s["audio"].shape == (4, 12800) and s["label"].tolist() == [1, 0, 0, 1, 0]
    assert s["audio"].abs().max() > 0.2


def test_unreadable_test_clips_are_counted_not_replaced_and_training_clips_are_replaced(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    good = Item(ramp_video(tmp_path / "good.mp4"), label=1)
    items = [Item(bad, label=0), good]
    test = LabeledClipDataset(items, "video", TINY, "views", num_classes=2)[0]
    assert not test["valid"] and test["skipped"] == 1 and test["label"] == 0 and not test["video"].any()
    train = LabeledClipDataset(items, "video", TINY, "train", num_classes=2)[0]
    assert train["valid"] and train["skipped"] == 1 and train["label"] == 1 and train["video"].shape == (3, 8, 32, 32)


# --------------------------------------------------------------------------- linear probe


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(120, generator=g) > 0).long() + (x[:, 1] > 1).long()
    l2 = 0.01
    w, b = fit_logistic_regression(x, y, 3, l2)
    # ours: mean cross-entropy + l2 |W|^2  ==  sklearn's C sum(CE) + |W|^2 / 2  with C = 1 / (2 l2 N)
    x64 = x.double().numpy()
    ref = LogisticRegression(C=1 / (2 * l2 * len(y)), max_iter=10_000, tol=1e-12).fit(x64, y.numpy())
    assert np.abs(predict_proba(x, w, b).numpy() - ref.predict_proba(x64)).max() < 1e-5


def test_probe_picks_the_l2_on_held_out_data_and_averages_view_probabilities():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 8, generator=g) * 3
    y = torch.arange(200) % 4
    x = centres[y] + torch.randn(200, 8, generator=g)
    best, scores = select_l2(x, y, 4, grid=(1e-4, 1e-2, 1.0))
    assert best == max(scores.items(), key=lambda kv: (kv[1], kv[0]))[0] and set(scores) == {1e-4, 1e-2, 1.0}
    ty = torch.arange(40) % 4
    views = centres[ty][:, None] + torch.randn(40, 4, 8, generator=g)  # 4 noisy views per test video
    result = linear_probe(x, y, views, ty, 4, grid=(1e-4, 1e-2, 1.0))
    assert result["top1"] == 1.0 and result["top5"] == 1.0 and result["l2"] == best


# --------------------------------------------------------------------------- commands

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory, demo_root) -> Path:
    """A project folder whose data/demo is the small demo copy (as `make train` would have made it)."""
    root = tmp_path_factory.mktemp("user")
    shutil.copytree(demo_root, root / "data" / "demo")
    return root


@pytest.mark.slow
def test_linear_probe_command_writes_metrics_and_reuses_cached_features(user_dir):
    # the demo config would generate the full 1024-clip set: the fixture's copy is there already with other sizes
    args = ["task=linear_probe", "data=demo_labels", "data.label=shape", "data.generate_demo=false"]
    run_module("vatt.eval", args, user_dir)
    run = only_run(user_dir, "eval")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_train"] == 16 and metrics["num_test"] == 8 and metrics["num_skipped"] == 0
    assert 0.0 <= metrics["test/top1"] <= metrics["test/top5"] <= 1.0 and "test/chance_top1" in metrics
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    again = run_module("vatt.eval", args, user_dir)
    assert again.stdout.count("features from the cache") + again.stderr.count("features from the cache") == 2
    assert json.loads((only_run(user_dir, "eval") / "metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_retrieval_command_reports_both_window_variants(user_dir):
    run_module("vatt.eval", ["task=retrieval", "data=demo_labels", "data.generate_demo=false"], user_dir)
    metrics = json.loads((only_run(user_dir, "eval") / "metrics.json").read_text())
    for d in ("t2v", "v2t", "t2v_meansim", "v2t_meansim"):
        assert {f"test/{d}_R@1", f"test/{d}_R@5", f"test/{d}_R@10", f"test/{d}_MedR"} <= set(metrics)
    captioned = sum(1 for line in (user_dir / "data/demo/val.jsonl").read_text().splitlines() if json.loads(line)["captions"])
    assert metrics["num_test"] == captioned and metrics["num_train"] == 0


@pytest.mark.slow
def test_finetune_experiment_fits_then_tests_every_view(user_dir):
    """2 steps, fewer than an epoch (4): validated at its end, best checkpoint kept, the loaded weights named."""
    import vatt
    from vatt.checkpoint import file_sha256

    weights = vatt.save_pretrained(vatt.create_model("tiny"), user_dir / "tiny.safetensors")
    proc = run_module("vatt.train", ["experiment=finetune_demo", "data.generate_demo=false", "trainer.max_steps=2",
                                     "data.batch_size=4", f"pretrained={weights}"], user_dir)
    out = proc.stdout + proc.stderr
    run = only_run(user_dir, "train")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_train"] == 16 and metrics["num_test"] == 8 and metrics["test/num_videos"] == 8
    assert {"test/top1", "test/top5"} <= set(metrics) and metrics["num_skipped"] == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert [p.name for p in (run / "checkpoints").glob("epoch*.ckpt")] == ["epoch000-step000002.ckpt"]
    assert "'val/top1'" in (run / "train.log").read_text().split("final metrics:")[1]
    assert "testing the final weights on every view" in out
    # what the test measured: every val clip, in the demo's views, with the run's final weights (docs/protocols.md)
    record = metrics["protocol"]
    val_ids = [json.loads(line)["video"] for line in (user_dir / "data/demo/val.jsonl").read_text().splitlines()]
    assert record["task"] == "finetune" and record["dataset"] == "demo" and record["items_evaluated"] == 8
    assert record["ids_sha256"] == hashlib.sha256("".join(f"{i}\n" for i in sorted(val_ids)).encode()).hexdigest()
    assert record["checkpoint"] == {"path": str(run / "checkpoints" / "last.ckpt"),
                                    "sha256": file_sha256(run / "checkpoints" / "last.ckpt")}
    assert record["initialised_from"] == str(weights) and record["classifier"] == "fine-tuned"
    assert (record["views"]["windows"], record["views"]["crops"]) == (4, 1) and record["comparable_to_paper"] is False
    assert f"fine-tuning the video tower of {weights} (sha256 {file_sha256(weights)[:12]}): its " in out
    assert "none missing or unexpected" in out
    assert "No monitor" not in out and "not found in the returned metrics" not in out


def test_eval_without_a_dataset_root_names_the_layout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "vatt.eval", "task=linear_probe", "data=ucf101",
                           f"data.root={tmp_path / 'nowhere'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "ucfTrainTestlist" in proc.stderr


def test_demo_probe_callback_scores_every_label(demo_root):
    import vatt
    from vatt.lightning.callbacks import DemoProbe

    model = vatt.create_model("tiny").eval()
    metrics = DemoProbe(demo_root, labels=["colour", "shape"]).probe(model, ClipConfig(8, 10, 64, 16000))
    assert set(metrics) == {"probe/colour_top1", "probe/colour_chance", "probe/shape_top1", "probe/shape_chance"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_demo_probe_without_a_demo_folder_switches_itself_off(caplog):
    """experiment=demo with data.sources (several folders): no data.path, so the probe says it is off."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    from vatt.lightning.callbacks import DemoProbe

    probe = DemoProbe(None, every_n_validations=1)
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING))
    with caplog.at_level("INFO", logger="vatt.lightning.pretrain"):
        probe.on_validation_end(trainer, None)
        probe.on_validation_end(trainer, None)
    assert caplog.text.count("demo probe switched off: data.path names no demo folder") == 1


def _constant_classifier(path: Path, classes: list[str], pick: str):
    """A tiny video classifier that always answers ``pick`` (zero weights, a bias on that class)."""
    from vatt.models.vatt import build_tower_classifier
    from vatt.models.vatt import VATTConfig
    from vatt.pretrained import save_classifier

    model = build_tower_classifier(VATTConfig.from_preset("tiny"), "video", len(classes))
    with torch.no_grad():
        model.head.linear.weight.zero_()
        model.head.linear.bias.copy_(torch.tensor([5.0 if c == pick else 0.0 for c in classes]))
    return save_classifier(model, path, classes=classes)


@pytest.mark.slow
def test_a_fine_tuned_classifier_is_tested_on_every_view_by_make_eval(user_dir):
    from vatt.data.downstream import list_dataset

    listing = list_dataset("demo", user_dir / "data" / "demo", label="colour")
    labels = [listing.classes[i.label] for i in listing.splits[0].test]
    pick = max(set(labels), key=labels.count)
    # its classes in another order than the dataset's: matched by name
    path = _constant_classifier(user_dir / "colour.safetensors", listing.classes[::-1], pick)
    run_module("vatt.eval", ["task=classifier", "data=demo_labels", "data.generate_demo=false", f"pretrained={path}",
                             "data.num_windows=2", "data.num_crops=1"], user_dir)
    metrics = json.loads((only_run(user_dir, "eval") / "metrics.json").read_text())
    assert metrics["test/top1"] == pytest.approx(labels.count(pick) / len(labels))  # always `pick`, exactly
    assert metrics["num_test"] == len(labels) == 8 and metrics["num_skipped"] == 0


def test_fine_tuning_can_start_from_a_converted_classifier(tmp_path):
    from vatt.errors import UserError
    from vatt.lightning.finetune import VATTFinetuneModule

    path = _constant_classifier(tmp_path / "c.safetensors", ["a", "b", "c"], "b")
    module = VATTFinetuneModule(num_classes=3, pretrained=str(path), name="tiny",
                                input={"num_frames": 8, "fps": 10, "image_size": 64, "sample_rate": 16000})
    assert module.head.linear.bias.tolist() == [0.0, 5.0, 0.0]  # the head comes with the tower
    with pytest.raises(UserError, match="a video classifier with 3 classes; this data has 4 video classes"):
        VATTFinetuneModule(num_classes=4, pretrained=str(path), name="tiny")


# --------------------------------------------------------------------------- a dataset of one's own

TOY_LISTER = """
from pathlib import Path

from vatt.data.downstream import Item, Listing, Split, register


@register("toy")
def list_toy(root):
    rows = [line.split(",") for line in (Path(root) / "labels.csv").read_text().split()]
    items = [Item(Path(root) / name, label=int(label), id=name) for name, label in rows]
    return Listing("toy", ["dark", "bright"], [Split("test", train=items[:4], test=items[4:])])
"""
TOY_CONFIG = """
defaults:
  - _downstream
  - _self_
name: toy
lister: toy_lister
root: ???
"""


def test_a_dataset_of_ones_own_is_one_lister_module_and_one_config_file(tmp_path, monkeypatch):
    """README "How to extend": a lister outside the package registers itself; a config file names it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import vatt.data.downstream as downstream
    from vatt.data.downstream import registered
    from vatt.eval import CONFIG_DIR, CONFIG_ROOT, evaluate

    monkeypatch.setattr(downstream, "_LISTERS", dict(downstream._LISTERS))  # the toy set is forgotten afterwards

    code, configs, root = tmp_path / "code", tmp_path / "configs", tmp_path / "toy"
    for d in (code, configs / "data", root):
        d.mkdir(parents=True)
    (code / "toy_lister.py").write_text(TOY_LISTER)
    (configs / "data" / "toy.yaml").write_text(TOY_CONFIG)
    rows = []
    for i in range(8):
        level = 40 if i % 2 == 0 else 215
        write_av(root / f"v{i}.mp4", np.full((10, 32, 32, 3), level, np.uint8), fps=10)
        rows.append(f"v{i}.mp4,{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.syspath_prepend(str(code))
    assert "toy" not in registered()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("eval", overrides=[f"hydra.searchpath=[file://{CONFIG_ROOT},file://{configs}]", "data=toy",
                                          f"data.root={root}", "task=linear_probe", "pretrained=null", "probe.cache_dir=null",
                                          "data.num_windows=1", "num_workers=0", "logger=none"])
    try:
        metrics = evaluate(cfg, tmp_path)
        assert "toy" in registered()
    finally:
        sys.modules.pop("toy_lister", None)
    assert metrics["num_train"] == 4 and metrics["num_test"] == 4 and metrics["num_skipped"] == 0
    assert metrics["test/top1"] == 1.0  # dark vs bright frames: even random features separate them
    assert json.loads((tmp_path / "metrics.json").read_text())["num_test"] == 4


def test_an_unimportable_lister_module_is_named_with_the_fix(tmp_path):
    from vatt.data.downstream import DownstreamData

    with pytest.raises(ValueError, match=r"data.lister='no_such_module' cannot be imported.*@vatt.data.downstream.register"):
        DownstreamData("mine", str(tmp_path), lister="no_such_module").listing()


def test_old_names_of_the_test_views_name_the_new_key(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vatt.config import check_eval_config
    from vatt.errors import UserError
    from vatt.eval import CONFIG_DIR, SEARCHPATH

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("eval", overrides=[SEARCHPATH, "probe.num_windows=8"])
        demo = compose("eval", overrides=[SEARCHPATH, "data=demo"])
        shards = compose("eval", overrides=[SEARCHPATH, "data=shards"])
    with pytest.raises(UserError, match=r"probe.num_windows is now data.num_windows .*data.num_windows=8"):
        check_eval_config(cfg)
    # in make eval, data=demo is the demo's labelled view (configs/eval/data/demo.yaml -> demo_labels)
    assert demo.data.name == "demo" and demo.data.label == "colour" and demo.data.generate_demo
    check_eval_config(demo)
    with pytest.raises(UserError, match=r"make eval reads a labelled downstream set .*or data=demo\), not "
                                        r"vatt.data.shards"):
        check_eval_config(shards)
