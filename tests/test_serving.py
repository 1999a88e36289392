"""Towers exported for serving (vatt.serving, make export format=onnx|torch): ONNX Runtime and torch.export
programs reproduce the eager encode_video / encode_audio / encode_text."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vatt import serving
from vatt.models import create_model
from vatt.models.vatt import PRESETS, SIZES

pytest.importorskip("onnxruntime")

TOL = 1e-4


def tiny(**overrides):
    torch.manual_seed(0)
    return create_model("tiny", vocab_size=40, **overrides).eval()


@pytest.mark.parametrize("fmt", serving.FORMATS)
def test_every_tower_reproduces_the_eager_model_at_any_batch_size(tmp_path, fmt):
    model = tiny()
    written = serving.export_towers(model, tmp_path, fmt)
    assert {p.name for p in written.values()} == {f"{n}{serving.SUFFIX[fmt]}" for n in serving.TOWERS} | {"towers.json"}
    for batch in (1, 5):  # exported at batch 2: the batch is dynamic
        worst = serving.check_towers(model, tmp_path, batch=batch, seed=batch)
        assert set(worst) == {"video", "audio", "text"} and max(worst.values()) < TOL, worst
    # the outputs are what encode_* give, in order, with their shapes
    x = serving.example_inputs(model, 3, seed=7)
    got = serving.run_tower(written["audio"], x["audio"])
    assert [list(t.shape) for t in got] == [[3, 128], [3, 512], [3, 256]]
    torch.testing.assert_close(got[2], model.encode_audio(x["audio"], space="vt").detach(), atol=TOL, rtol=0)


def test_towers_json_states_inputs_outputs_geometry_and_tokenizer(tmp_path):
    model = tiny()
    model.vocab = ["[PAD]", "[UNK]", *[f"w{i}" for i in range(38)]]
    model.input = {"num_frames": 8, "fps": 10.0, "image_size": 64, "sample_rate": 16000, "max_words": 16}
    serving.export_towers(model, tmp_path, "onnx", source="x.ckpt", sha256="ab" * 32)
    meta = json.loads((tmp_path / "towers.json").read_text())
    assert meta["towers"]["video"]["input"] == {"name": "video", "shape": ["batch", 3, 8, 64, 64], "dtype": "float32"}
    assert meta["towers"]["text"]["input"] == {"name": "text", "shape": ["batch", 16], "dtype": "int64"}
    assert meta["towers"]["video"]["outputs"] == {"feature": ["batch", 128], "va": ["batch", 512], "vt": ["batch", 256]}
    assert meta["towers"]["text"]["outputs"] == {"feature": ["batch", 128], "vt": ["batch", 256]}
    assert meta["geometry"]["fps"] == 10.0 and meta["geometry"]["audio_samples"] == 12_800
    assert meta["text"]["vocab"] == "vocab.txt" and meta["text"]["padding_id"] == 0 and meta["normalized"] is False
    assert (tmp_path / "vocab.txt").read_text().splitlines()[:3] == ["[PAD]", "[UNK]", "w0"]
    assert meta["source"] == "x.ckpt" and meta["sha256"] == "ab" * 32


def test_droptoken_is_off_in_the_export_and_training_mode_is_refused(tmp_path):
    model = tiny(droptoken=0.5)
    with pytest.raises(ValueError, match="eval mode"):
        serving.export_towers(model.train(), tmp_path, "torch")
    model.eval()
    serving.export_towers(model, tmp_path, "torch")
    x = serving.example_inputs(model, 2, seed=3)
    keep_all = tiny(droptoken=0.0)
    keep_all.load_state_dict(model.state_dict())
    got = serving.run_tower(tmp_path / "video.pt2", x["video"])
    torch.testing.assert_close(got[0], keep_all.encode_video(x["video"]).detach(), atol=TOL, rtol=0)


def test_a_bbs_shaped_model_exports_at_reduced_depth(tmp_path):
    """The paper's BBS widths and heads (video/audio base, text small), one block each, at a small geometry."""
    sizes = {k: {**SIZES[PRESETS["bbs"][k]], "depth": 1} for k in ("video_size", "audio_size", "text_size")}
    torch.manual_seed(0)
    model = create_model("bbs", **sizes, vocab_size=50, num_frames=4, image_size=32, audio_samples=1280).eval()
    serving.export_towers(model, tmp_path, "onnx")
    worst = serving.check_towers(model, tmp_path, batch=2)
    assert max(worst.values()) < TOL, worst
    meta = json.loads((tmp_path / "towers.json").read_text())
    assert meta["towers"]["video"]["outputs"]["feature"] == ["batch", SIZES[PRESETS["bbs"]["video_size"]]["dim"]]


def test_make_exports_command_line_writes_and_checks_the_towers(tmp_path):
    import vatt

    weights = vatt.save_pretrained(tiny(), tmp_path / "tiny.safetensors")
    proc = subprocess.run([sys.executable, "-m", "vatt.export", "--ckpt", str(weights), "--out", str(tmp_path / "out"),
                           "--format", "onnx"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "largest difference from the eager model on a batch of 3 random inputs: video" in proc.stdout
    assert "Skipping constant folding" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["audio.onnx", "text.onnx", "towers.json",
                                                                   "video.onnx"]
    with pytest.raises(ValueError, match="format='tf'"):
        serving.export_towers(tiny(), tmp_path / "bad", "tf")
